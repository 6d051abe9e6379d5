"""Run a planned study: record the plan in the store, hand the work to the executor, write the report. Rerunning a
killed study redoes only what did not finish.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..atomic import atomic_write
from ..config import StudyFile, output_dir
from ..evaluate.tasks import Task
from .plan import Plan, build_tasks, make_plan  # noqa: F401  (build_tasks: used by `sftmix eval` and tests)
from .steps import esc, eval_id, log, score_rows, stage_dir, task_key, wanted_evals
from .store import Store


def evaluate_model(model, tok, tasks: list[Task], store: Store, run_id: str, batch_size: int,
                   progress: bool = True, backend: str = "engine") -> dict:
    """`sftmix eval`: evaluate one loaded model (or for backend "openai" an `Endpoint`) as checkpoint `run_id` on
    every task it lacks; {task: value}."""
    from .steps import generate_for

    out = {}
    wanted = store.meta("evals", {})
    for task in tasks:
        eid = eval_id(run_id, task, backend)
        wanted.setdefault(run_id, {})[task.name] = {0: eid}
        if store.has_eval(eid):
            continue
        t0 = time.time()
        rows, summary = score_rows(task, generate_for(model, tok, task, batch_size, progress, backend))
        out[task.name] = store.add_eval(eid, run_id, task, task_key(task), rows, summary, time.time() - t0)
    store.set_meta("evals", wanted)
    return out


def effective_yaml(sf: StudyFile) -> str:
    """The study as run (overrides applied, paths absolute): `sftmix run OUT/study.yaml` runs it again."""
    import yaml

    return yaml.safe_dump(sf.study.model_dump(mode="json"), sort_keys=False)


def load_results(store: Store) -> tuple[list[dict], list[dict], list[dict], list[dict]]:
    """What the report and `sftmix recommend` read: the plan's runs, all their scores (every stage), the final scores,
    and the final scores' item rows."""
    from ..errors import SftmixError

    run_ids = store.meta("run_ids")
    all_scores = store.scores(run_ids)
    runs = store.runs(run_ids)
    scores = [s for s in all_scores if s["final"]]
    if not scores:
        raise SftmixError(f"{store.path}: the store has no scores yet")
    items = [{**it, "run_id": s["run_id"], "task": s["task"]} for s in scores for it in store.items(s["eval_id"])]
    return runs, all_scores, scores, items


def write_store_report(out: Path, store: Store) -> Path:
    from ..report import write_report

    runs, all_scores, scores, items = load_results(store)
    study_yaml = out / "study.yaml"
    study = store.meta("study") or {}
    return write_report(out, scores, items, {
        "name": store.meta("name", out.name), "description": study.get("description", ""), "output_dir": str(out),
        "config_yaml": study_yaml.read_text() if study_yaml.exists() else "",
    }, stages=_stage_rows(store, runs), stage_scores=_stage_scores(all_scores, runs),
        # earlier stages' item rows (with their eval_id), so the forgetting table carries intervals
        stage_items=[it for e in sorted({s["eval_id"] for s in all_scores if not s["final"]}) for it in store.items(e)])


def _stage_rows(store: Store, runs: list[dict]) -> list[dict]:
    used = {sid for r in runs for sid in r["stages"]}
    out = []
    for st in store.stages():
        if st["stage_id"] in used and st["info"]:
            out.append({**st, "info": json.loads(st["info"])})
    return out


def _stage_scores(scores: list[dict], runs: list[dict]) -> list[dict]:
    """Per-stage scores of multi-stage runs (forgetting), with the base model's as stage 0."""
    n_stages = {r["run_id"]: len(r["stages"]) for r in runs}
    return [{**s, "stages": n_stages[s["run_id"]]} for s in scores if n_stages.get(s["run_id"], 0) > 1]


def record_plan(plan: Plan, sf: StudyFile, out: Path, store: Store) -> None:
    store.set_meta("study", sf.study.model_dump(mode="json"))
    store.set_meta("name", sf.study.name)
    # The report shows this plan's runs and evaluations only, even if an earlier study wrote into the same directory.
    store.set_meta("run_ids", [r.run_id for r in plan.runs])
    store.set_meta("evals", wanted_evals(plan))
    atomic_write(out / "study.yaml", effective_yaml(sf))
    for st in plan.stages.values():
        manifest = {k: v for k, v in st.mixture.manifest.items() if k != "row_ids"}
        store.add_stage(st.stage_id, st.parent_id, st.model.name, st.name, st.mixture.hash, manifest, st.hparams,
                        str(stage_dir(out, st.stage_id)))
        path = out / "mixtures" / f"{st.mixture.hash}.json"
        if not path.exists():
            atomic_write(path, json.dumps(st.mixture.manifest, indent=1, default=str))
    for r in plan.runs:
        store.add_run(r.run_id, r.label, r.model.name, r.strategy, "+".join(r.sources), r.amount, r.seed,
                      [s.stage_id for s in r.stages], r.axis, r.cell, r.params, r.base_id)


def apply_force(plan: Plan, out: Path, store: Store, force: list[str]) -> None:
    """Forget finished work so it is recomputed: all of it ([] or ["all"]), `stage=PREFIX` (and what follows from
    it), `task=NAME`."""
    import shutil

    from ..errors import SftmixError

    stages: set[str] = set()
    tasks: set[str] = set()
    for spec in force or ["all"]:
        kind, _, value = spec.partition("=")
        if spec == "all":
            stages |= set(plan.stages)
            tasks |= {t.name for t in plan.tasks}
        elif kind == "stage" and value:
            hit = {sid for sid in plan.stages if sid.startswith(value)}
            if not hit:
                raise SftmixError(f"--force {spec}: no stage of this plan starts with {value!r}")
            stages |= hit
        elif kind == "task" and value:
            if value not in {t.name for t in plan.tasks}:
                raise SftmixError(f"--force {spec}: the study has no task {value!r}")
            tasks.add(value)
        else:
            raise SftmixError(f"--force {spec!r}: expected all, stage=ID_PREFIX or task=NAME")
    changed = True
    while changed:  # a retrained stage makes its descendants stale too
        more = {sid for sid, st in plan.stages.items() if st.parent_id in stages} - stages
        stages |= more
        changed = bool(more)
    for sid in stages:
        d = stage_dir(out, sid)
        if d.exists():
            # Renamed first, so no reader ever sees a half-deleted stage that still has its stage.json.
            trash = d.with_name(f".{d.name}.forced")
            shutil.rmtree(trash, ignore_errors=True)
            d.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
    checkpoints = {r.base_id for r in plan.runs} | set(plan.stages)
    with store.tx() as db:
        for sid in stages:
            db.execute("UPDATE stages SET status='planned' WHERE stage_id = ?", (sid,))
        for cp in checkpoints:
            for t in plan.tasks:
                if cp in stages or t.name in tasks:
                    eid = eval_id(cp, t, plan.backend)
                    db.execute("DELETE FROM items WHERE eval_id = ?", (eid,))
                    db.execute("DELETE FROM evals WHERE eval_id = ?", (eid,))


def run_study(sf: StudyFile, out: Path | None = None, progress: bool = True, force: list[str] | None = None) -> Path:
    out = Path(out or output_dir(sf))
    out.mkdir(parents=True, exist_ok=True)
    plan = make_plan(sf)
    store = Store(out / "sftmix.db")
    try:
        record_plan(plan, sf, out, store)
        if force is not None:
            apply_force(plan, out, store, force)
        log(f"[bold]{esc(sf.study.name)}[/]: {len(plan.runs)} runs, {len(plan.stages)} stages to train, "
            f"{len(plan.tasks)} tasks ({', '.join(f'{t.name}:{len(t.items)}' for t in plan.tasks)}) -> {out}")
        from .executors import get_executor

        get_executor(sf.study.executor.kind)(plan, out, store, sf.study.executor, progress)
        report = write_store_report(out, store)
        if sf.study.report_to:
            from .tracking import log_study

            # From the store, after the executor: the same for work done in this process, Ray tasks or Slurm jobs.
            logged = log_study(out, store, sf.study.report_to)
            if logged:
                log("report_to: " + ", ".join(f"{b} ({n} runs logged or updated)" for b, n in logged.items()))
        return report
    finally:
        store.close()
