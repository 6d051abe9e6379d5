"""`report_to`: log each run's trained stages and evaluation scores to MLflow and TensorBoard.

Everything is read from the store once the executor is done, so it is the same whichever process (local worker, Ray
task, Slurm job) trained or evaluated. Only the store's contents are logged (config values, losses, scores): never
the environment, so no API key can reach a tracking backend. A rerun logs again without duplicating: an MLflow run
is found by its `sftmix.run_id` tag and gets only what it lacks; a TensorBoard directory is rewritten only when what
it would hold has changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import defaultdict
from pathlib import Path

from ..atomic import atomic_write
from ..errors import SftmixError, redact
from .store import Store

BACKENDS = ("mlflow", "tensorboard")


def backends(report_to) -> list[str]:
    """The backends named in a study's report_to (a list or one string, "none" meaning none)."""
    if not report_to:
        return []
    names = report_to.split(",") if isinstance(report_to, str) else report_to
    return [b.strip() for b in names if b.strip() in BACKENDS]


def collect(store: Store) -> list[dict]:
    """The plan's runs, each with its finished stages (mixture, hyperparameters, training info) and its scores."""
    run_ids = store.meta("run_ids")
    stages = {s["stage_id"]: s for s in store.stages()}
    scores = store.scores(run_ids)
    out = []
    for r in store.runs(run_ids):
        chain = []
        for sid in r["stages"]:
            st = stages.get(sid)
            if not st or st["status"] != "done" or not st["info"]:
                break  # a later stage cannot be done without this one
            chain.append({**st, **{k: json.loads(st[k]) for k in ("manifest", "hparams", "info")}})
        out.append({"run": r, "stages": chain, "scores": [s for s in scores if s["run_id"] == r["run_id"]]})
    return out


def _key(name: str) -> str:
    # MLflow takes letters, digits, _ - . / : and space in names; "pass@1" becomes "pass_1".
    return re.sub(r"[^\w.\-/: ]", "_", str(name))


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def run_params(entry: dict) -> dict[str, str]:
    """Config values only: the run, its strategy's parameters, each stage's mixture and hyperparameters (the first
    stage's in full, later stages' where they differ)."""
    r = entry["run"]
    p = {"sftmix.run_id": r["run_id"], "label": r["label"], "model": r["model"], "strategy": r["strategy"],
         "sources": r["sources"], "amount": r["amount"], "axis": r["axis"], "seed": r["seed"], "base_id": r["base_id"],
         "stages": len(r["stages"]), **_flat(r["params"], "strategy.")}
    first: dict = {}
    for i, st in enumerate(entry["stages"], 1):
        m, pre = st["manifest"], f"stage{i}."
        p.update({pre + "id": st["stage_id"], pre + "name": st["name"], pre + "mixture_hash": st["mixture_hash"],
                  pre + "rows": m.get("rows"), pre + "mixture_tokens": m.get("tokens")})
        p.update({f"{pre}rows.{src}": info.get("rows") for src, info in m.get("sources", {}).items()})
        hp = _flat({"training": st["hparams"].get("training", {}), "model": st["hparams"].get("model", {})})
        hp["training.learning_rate_used"] = st["info"].get("learning_rate")
        if i == 1:
            first = hp
            p.update(hp)
        else:
            p.update({pre + k: v for k, v in hp.items() if first.get(k) != v})
    # MLflow keeps 500 characters of a value in older servers; nothing sftmix logs needs more.
    return {_key(k): str(v)[:500] for k, v in p.items() if v is not None}


def run_metrics(entry: dict) -> list[tuple[str, float, int]]:
    """(name, value, step): the loss at every optimizer step of the run's chain of stages (steps counted across
    stages), each stage's final loss, tokens and seconds at its last step; each score at its checkpoint's stage
    index (0: the base model), with its item count, its summary's other figures and the mean per ability."""
    out: list[tuple[str, float, int]] = []
    step = 0
    tokens = seconds = 0.0
    for i, st in enumerate(entry["stages"], 1):
        info = st["info"]
        for loss in info.get("loss") or []:
            step += 1
            out.append(("train/loss", loss, step))
        tokens += info.get("train_tokens") or 0
        seconds += info.get("seconds") or 0
        for name, v in (("loss_final", info.get("loss_last")), ("train_tokens", info.get("train_tokens")),
                        ("seconds", info.get("seconds")), ("steps", info.get("steps"))):
            if v is not None:
                out.append((f"stage{i}/{name}", v, step))
    if entry["stages"]:
        out += [("train/tokens", tokens, step), ("train/seconds", seconds, step)]
        if entry["stages"][-1]["info"].get("loss_last") is not None:
            out.append(("train/loss_final", entry["stages"][-1]["info"]["loss_last"], step))
    by_ability: dict = defaultdict(list)
    for s in entry["scores"]:
        idx, task = s["stage_index"], _key(s["task"])
        # No name may be another's prefix up to a "/": MLflow's file store makes "eval/x" a file, "eval/x/n" a folder.
        out += [(f"eval/{task}", s["value"], idx), (f"eval_n/{task}", s["n"], idx)]
        for k, v in s["summary"].items():
            if k != s["metric"] and isinstance(v, (int, float)) and not isinstance(v, bool):
                out.append((f"eval/{task}.{_key(k)}", v, idx))
        by_ability[(idx, s["ability"])].append(s["value"])
    for (idx, ability), vals in sorted(by_ability.items()):
        out.append((f"ability/{_key(ability)}", sum(vals) / len(vals), idx))
    return [(k, float(v), int(s)) for k, v, s in out]


def run_tags(entry: dict, study: str) -> dict[str, str]:
    r = entry["run"]
    return {"sftmix.run_id": r["run_id"], "sftmix.study": study, "sftmix.strategy": r["strategy"],
            "sftmix.model": r["model"], "sftmix.amount": f"{r['amount']:g}", "sftmix.sources": r["sources"]}


# ------------------------------------------------------------------------------------------------------- MLflow

def mlflow_uri(out: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or (Path(out).resolve() / "mlruns").as_uri()


def _chunks(xs: list, n: int):
    for i in range(0, len(xs), n):
        yield xs[i:i + n]


def log_mlflow(out: Path, study: str, entries: list[dict]) -> int:
    """One MLflow run per sftmix run in experiment `study`; returns how many runs got something new."""
    import time

    uri = mlflow_uri(out)
    if uri.startswith("file:") or "://" not in uri:
        # MLflow 3 refuses its file store unless this is set; a local file store is what report_to asks for here.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(study)
        if exp is None:
            eid = client.create_experiment(study)
        else:
            eid = exp.experiment_id
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(eid)
        found, token = {}, None
        while True:
            page = client.search_runs([eid], max_results=1000, page_token=token)
            found.update({r.data.tags.get("sftmix.run_id"): r for r in page})
            token = page.token
            if not token:
                break
        changed = 0
        for e in entries:
            params, metrics, tags = run_params(e), run_metrics(e), run_tags(e, study)
            old = found.get(e["run"]["run_id"])
            if old is None:
                rid = client.create_run(eid, run_name=e["run"]["label"], tags=tags).info.run_id
            else:
                rid = old.info.run_id
                params = {k: v for k, v in params.items() if k not in old.data.params}  # params never change
                have = {k: {(m.step, m.value) for m in client.get_metric_history(rid, k)}
                        for k in {m[0] for m in metrics}}
                metrics = [m for m in metrics if (m[2], m[1]) not in have[m[0]]]
                if not params and not metrics:
                    continue
            now = int(time.time() * 1000)
            for part in _chunks([Param(k, v) for k, v in params.items()], 100):
                client.log_batch(rid, params=part)
            for part in _chunks([Metric(k, v, now, s) for k, v, s in metrics], 1000):
                client.log_batch(rid, metrics=part)
            client.log_batch(rid, tags=[RunTag(k, v) for k, v in tags.items()])
            client.set_terminated(rid, "FINISHED")
            changed += 1
        return changed
    except (MlflowException, OSError) as exc:
        safe = redact(uri)
        detail = str(getattr(exc, "message", exc)).replace(uri, safe)
        raise SftmixError(f"report_to mlflow: logging to {safe} failed: {redact(detail)}") from None


# -------------------------------------------------------------------------------------------------- TensorBoard

def slugs(entries: list[dict]) -> list[str]:
    """A directory name per run from its label; the run id is appended where two labels would collide."""
    base = [re.sub(r"[^\w.\-]+", "-", e["run"]["label"]).strip("-.") or e["run"]["run_id"][:8] for e in entries]
    return [b if base.count(b) == 1 else f"{b}-{e['run']['run_id'][:8]}" for b, e in zip(base, entries)]


def log_tensorboard(out: Path, entries: list[dict]) -> int:
    """Scalars under OUT/tensorboard/<run label>; returns how many runs were (re)written."""
    from torch.utils.tensorboard import SummaryWriter

    changed = 0
    for e, slug in zip(entries, slugs(entries)):
        d = Path(out) / "tensorboard" / slug
        params, metrics = run_params(e), run_metrics(e)
        digest = hashlib.sha256(json.dumps([params, metrics]).encode()).hexdigest()
        marker = d / "sftmix.json"
        try:
            seen = json.loads(marker.read_text()).get("digest") if marker.exists() else None
        except ValueError:
            seen = None  # an unreadable marker: write the run again
        if seen == digest:
            continue
        for f in d.glob("events.out.tfevents.*"):  # event files only append: a changed run is written anew
            f.unlink()
        w = SummaryWriter(str(d))
        try:
            for k, v, s in metrics:
                w.add_scalar(k, v, s)
            rows = "\n".join(f"| {k} | {v.replace('|', '/')} |" for k, v in params.items())
            w.add_text("params", f"| param | value |\n|---|---|\n{rows}")
        finally:
            w.close()
        atomic_write(marker, json.dumps({"run_id": e["run"]["run_id"], "digest": digest}))
        changed += 1
    return changed


def log_study(out: Path, store: Store, report_to) -> dict[str, int]:
    """Log the study in `out` to every backend of `report_to`; {backend: runs logged or updated}."""
    names = backends(report_to)
    if not names:
        return {}
    entries = collect(store)
    study = store.meta("name", Path(out).name)
    done = {}
    if "mlflow" in names:
        done["mlflow"] = log_mlflow(out, study, entries)
    if "tensorboard" in names:
        try:
            done["tensorboard"] = log_tensorboard(out, entries)
        except OSError as exc:
            raise SftmixError(f"report_to tensorboard: writing under {Path(out) / 'tensorboard'} failed: {exc}") from None
    return done
