"""The two units of work of a study, which every executor runs: train one stage, evaluate one checkpoint on tasks.

Each unit is idempotent and writes only through its artifacts (a stage directory moved into place whole) and the
store (one transaction per evaluation), so a unit that is killed leaves nothing that looks finished, and running it
again does only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from ..evaluate.tasks import Task
from ..train.trainer import StageJob, stage_done, train_stage
from .plan import Plan, Run, Stage
from .store import Store


def esc(text: str) -> str:
    from rich.markup import escape

    return escape(str(text))


def log(msg: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False).print(msg)


def stage_dir(out: Path, stage_id: str) -> Path:
    return Path(out) / "stages" / stage_id


def task_key(task: Task) -> dict:
    if hasattr(task, "key"):
        return task.key()
    return {"name": task.name, "params": getattr(task, "params", {}), "items": [e.id for e in task.items],
            "max_new_tokens": getattr(task, "max_new_tokens", None)}


def eval_id(checkpoint: str, task: Task, backend: str = "engine") -> str:
    # The engine's keys stay as they were; another backend samples differently (and vLLM's kernels differ), so it
    # is another evaluation.
    key = [checkpoint, task_key(task)] + ([] if backend == "engine" else [backend])
    blob = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@contextmanager
def stage_lock(out: Path, stage_id: str):
    """One trainer per stage across processes (workers, or two `sftmix run` on one directory): the second waits,
    then finds the stage done. The lock dies with its process, so a killed trainer never blocks a resume."""
    import fcntl

    path = Path(out) / "locks" / f"{stage_id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_stage(stage: Stage, out: Path, store: Store, progress: bool = True) -> dict:
    d = stage_dir(out, stage.stage_id)
    with stage_lock(out, stage.stage_id):
        info = stage_done(d)
        if info is None:
            # Under the lock, any temporary directory of this stage was left by a trainer that was killed.
            for leftover in d.parent.glob(f".{d.name}.*"):
                shutil.rmtree(leftover, ignore_errors=True)
            parent = str(stage_dir(out, stage.parent_id)) if stage.parent_id else None
            job = StageJob(stage.stage_id, stage.model, stage.mixture.examples, stage.training, stage.seed, parent,
                           str(d))
            store.start_stage(stage.stage_id)
            log(f"[bold]train[/] stage {stage.stage_id[:8]} ({esc(stage.name)}, {len(stage.mixture)} rows) on "
                f"{esc(stage.model.name)}")
            info = train_stage(job, progress=progress)
            log(f"  {info['train_tokens']} tokens in {info['seconds']:.0f}s, loss {info['loss_first']:.3f} -> "
                f"{info['loss_last']:.3f}")
    store.finish_stage(stage.stage_id, info)
    return info


def load_checkpoint(run: Run, checkpoint: str, out: Path):
    """Model and tokenizer at `checkpoint` (a stage id, or the run's base id)."""
    from ..models import load_model, load_tokenizer

    m = run.model
    tok = load_tokenizer(m.name, m.chat_template)
    if checkpoint == run.base_id:
        return load_model(m.name, m.dtype), tok
    d = stage_dir(out, checkpoint)
    if m.finetune == "full":
        return load_model(m.name, m.dtype, weights=d / "model"), tok
    return load_model(m.name, m.dtype, adapter=d / "adapter"), tok


def _generate(model, tok, convs, settings, batch_size: int, progress: bool, desc: str,
              backend: str) -> list[list[str]]:
    from ..evaluate.generate import generate

    return generate(model, tok, convs, settings, batch_size=batch_size, progress=progress, desc=desc, backend=backend)


def generate_for(model, tok, task: Task, batch_size: int, progress: bool, backend: str = "engine") -> list[list[str]]:
    """`model` is a loaded model, or for backend "openai" an `Endpoint` (`tok` then unused)."""
    convs = [e.prompt_messages for e in task.items]
    desc = f"eval {task.name}"
    if getattr(task, "respond", None) is not None:  # multi-turn tasks drive generation themselves
        return task.respond(lambda c, s: _generate(model, tok, c, s, batch_size, progress, desc, backend), task.items)
    return _generate(model, tok, convs, task.gen, batch_size, progress, desc, backend)


def score_rows(task: Task, completions: list[list[str]]) -> tuple[list[dict], dict]:
    scored = task.score(task.items, completions)
    rows = []
    for e, comps, r in zip(task.items, completions, scored):
        rows.append({
            "item_id": e.id, "score": r["score"], "prompt": e.prompt_messages[-1]["content"],
            "prediction": comps[0] if len(comps) == 1 else json.dumps(comps),
            "reference": str(e.meta.get("answer") or e.response or e.meta.get("canonical_solution", "")),
            "details": {k: v for k, v in r.items() if k != "score"},
        })
    # the contract: summary() reads the scorer's rows (pass@k, maj@k, strict... at top level), not the store's
    summary = task.summary(scored) if hasattr(task, "summary") else {task.metric: sum(r["score"] for r in rows) / max(len(rows), 1)}
    return rows, summary


def evaluate_checkpoint(run: Run, checkpoint: str, tasks: list[Task], out: Path, store: Store, batch_size: int,
                        progress: bool = True, model=None, tok=None, backend: str = "engine") -> dict[str, float]:
    """Evaluate `checkpoint` on every task it has no evaluation for yet; returns {task: headline value}."""
    todo = [t for t in tasks if not store.has_eval(eval_id(checkpoint, t, backend))]
    if not todo:
        return {}
    if model is None:
        model, tok = load_checkpoint(run, checkpoint, out)
    out_scores = {}
    # Greedy tasks that generate once (not multi-turn or sampled ones) share one generation pass: it keeps the
    # batch full. Their time is split by items; sampled and multi-turn tasks are timed on their own.
    plain = [t for t in todo if getattr(t, "respond", None) is None and t.gen.n == 1 and not t.gen.do_sample]
    shared: dict[int, list[list[str]]] = {}
    gen_seconds = 0.0
    if len(plain) > 1:
        from ..evaluate.generate import generate_many

        t0 = time.time()
        outs = generate_many(model, tok, [([e.prompt_messages for e in t.items], t.gen) for t in plain], batch_size,
                             progress, desc=f"eval {'+'.join(t.name for t in plain)}", backend=backend)
        gen_seconds = time.time() - t0
        shared = {id(t): o for t, o in zip(plain, outs)}
    total_items = sum(len(t.items) for t in plain) or 1
    for task in todo:
        t0 = time.time()
        if id(task) in shared:
            completions = shared[id(task)]
            t0 -= gen_seconds * len(task.items) / total_items  # its share of the shared pass, by items
        else:
            completions = generate_for(model, tok, task, batch_size, progress, backend)
        rows, summary = score_rows(task, completions)
        out_scores[task.name] = store.add_eval(eval_id(checkpoint, task, backend), checkpoint, task, task_key(task), rows,
                                               summary, time.time() - t0)
    return out_scores


def wanted_evals(plan: Plan) -> dict:
    """run_id -> {task: {stage_index: eval_id}}: the evaluations the plan asks for (the report reads exactly these)."""
    out: dict = {}
    for r in plan.runs:
        per_task: dict = {}
        for t in plan.tasks:
            idx = {len(r.stages): eval_id(r.checkpoint_id, t, plan.backend)}
            if plan.after_each_stage:
                idx[0] = eval_id(r.base_id, t, plan.backend)
                for i, st in enumerate(r.stages[:-1], start=1):
                    idx[i] = eval_id(st.stage_id, t, plan.backend)
            per_task[t.name] = idx
        out[r.run_id] = per_task
    return out


def eval_units(plan: Plan) -> list[tuple[str, Run]]:
    """Every checkpoint to evaluate, with a run that reaches it (for loading)."""
    units = dict(plan.checkpoints())
    if plan.after_each_stage:
        for r in plan.runs:
            units.setdefault(r.base_id, r)
    return list(units.items())


# ----------------------------------------------------------------------------------------------- worker side

_PLANS: dict[str, tuple] = {}


def worker_plan(out: str | Path):
    """(study, plan) in a worker process: rebuilt once per process from the effective OUT/study.yaml, which plans
    to exactly the parent's runs and stages (planning is deterministic); no model or data crosses processes."""
    from ..config import load_study
    from .plan import make_plan

    key = str(out)
    if key not in _PLANS:
        sf = load_study(Path(out) / "study.yaml")
        _PLANS[key] = (sf.study, make_plan(sf))
    return _PLANS[key]


def run_unit(out: str, kind: str, unit_id: str, threads: int | None = None, progress: bool = False) -> dict:
    """One unit of work in whatever process an executor put it: train stage `unit_id`, or evaluate checkpoint
    `unit_id` on every task. Writes only through the stage directory and the store."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    study, plan = worker_plan(out)
    store = Store(Path(out) / "sftmix.db")
    try:
        if kind == "train":
            info = ensure_stage(plan.stages[unit_id], Path(out), store, progress)
            return {"kind": kind, "id": unit_id, "what": f"{info.get('train_tokens', 0):,} tokens, loss "
                                                          f"{info.get('loss_first', 0):.3f} -> {info.get('loss_last', 0):.3f}"}
        run = dict(eval_units(plan))[unit_id]
        scores = evaluate_checkpoint(run, unit_id, plan.tasks, Path(out), store, study.evaluation.batch_size, progress,
                                     backend=plan.backend)
        return {"kind": kind, "id": unit_id, "what": ", ".join(f"{k} {100 * v:.1f}%" for k, v in scores.items())
                or "already evaluated"}
    finally:
        store.close()
