"""Run a planned study: train every stage that is not on disk yet, evaluate every run on every task it lacks, store
item-level results, write the report. Rerunning a killed study redoes only what did not finish.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..atomic import atomic_write
from ..config import StudyFile, output_dir
from ..evaluate.tasks import Task, make_task
from ..train.trainer import StageJob, stage_done, train_stage
from .plan import Plan, Run, make_plan
from .store import Store


def esc(text: str) -> str:
    from rich.markup import escape

    return escape(str(text))


def log(msg: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False).print(msg)


def build_tasks(sf: StudyFile) -> list[Task]:
    s = sf.study
    tasks = []
    for t in s.evaluation.tasks:
        params = dict(t.params)
        # A built-in task evaluates at the difficulty its built-in source was trained at, unless told otherwise.
        for src in s.sources.values():
            if src.builtin == t.name:
                params.setdefault("difficulty", src.difficulty)
        if t.name in ("code", "humaneval"):
            params.setdefault("timeout", s.evaluation.code_timeout)
        if "path" in params:
            from ..config import resolve_path

            params["path"] = str(resolve_path(sf, params["path"]))
        tasks.append(make_task(t.name, limit=t.limit or s.evaluation.limit, max_new_tokens=t.max_new_tokens, **params))
    return tasks


def evaluate_model(model, tok, tasks: list[Task], store: Store, run_id: str, batch_size: int, progress: bool = True) -> dict:
    """Generate and score every task `run_id` has no score for yet; returns {task: score}."""
    from ..evaluate.generate import generate

    out = {}
    for task in tasks:
        if store.has_score(run_id, task.name):
            continue
        t0 = time.time()
        convs = [e.prompt_messages for e in task.items]
        completions = generate(model, tok, convs, task.max_new_tokens, batch_size, progress, desc=f"eval {task.name}")
        scored = task.score(task.items, completions)
        rows = [
            {
                "item_id": e.id, "score": r["score"], "prompt": e.prompt_messages[-1]["content"], "prediction": c,
                "reference": str(e.meta.get("answer") or e.response or e.meta.get("canonical_solution", "")),
                "details": {k: v for k, v in r.items() if k != "score"},
            }
            for e, c, r in zip(task.items, completions, scored)
        ]
        out[task.name] = store.add_results(run_id, task.name, task.ability, task.metric, rows, time.time() - t0)
    return out


def stage_dir(out: Path, stage_id: str) -> Path:
    return out / "stages" / stage_id


def ensure_stage(plan: Plan, stage, out: Path, store: Store, progress: bool) -> None:
    d = stage_dir(out, stage.stage_id)
    info = stage_done(d)
    if info is None:
        parent = str(stage_dir(out, stage.parent_id)) if stage.parent_id else None
        job = StageJob(stage.stage_id, stage.model, stage.mixture.examples, stage.training, stage.seed, parent, str(d))
        log(f"[bold]train[/] stage {stage.stage_id[:8]} ({esc(stage.name)}, {len(stage.mixture)} rows) on {esc(stage.model.name)}")
        info = train_stage(job, progress=progress)
        log(f"  {info['train_tokens']} tokens in {info['seconds']:.0f}s, loss {info['loss_first']:.3f} -> {info['loss_last']:.3f}")
    store.finish_stage(stage.stage_id, info)


def load_run_model(run: Run, out: Path):
    from ..models import load_model, load_tokenizer

    m = run.model
    tok = load_tokenizer(m.name, m.chat_template)
    ck = run.checkpoint
    if ck is None:
        return load_model(m.name, m.dtype), tok
    d = stage_dir(out, ck.stage_id)
    if m.finetune == "full":
        return load_model(m.name, m.dtype, weights=d / "model"), tok
    return load_model(m.name, m.dtype, adapter=d / "adapter"), tok


def _write_json(path: Path, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=1, default=str))


def effective_yaml(sf: StudyFile) -> str:
    """The study as run (overrides applied, file paths absolute): `sftmix run OUT/study.yaml` runs it again."""
    import yaml

    from ..config import resolve_path

    data = sf.study.model_dump(mode="json")
    for name, src in sf.study.sources.items():
        if src.path:
            data["sources"][name]["path"] = str(resolve_path(sf, src.path).resolve())
    for t, cfg in zip(data["evaluation"]["tasks"], sf.study.evaluation.tasks):
        if "path" in cfg.params:
            t["params"]["path"] = str(resolve_path(sf, cfg.params["path"]).resolve())
    return yaml.safe_dump(data, sort_keys=False)


def write_store_report(out: Path, store: Store) -> Path:
    from ..errors import SftmixError
    from ..report import write_report

    run_ids = store.meta("run_ids")
    scores = store.scores(run_ids)
    if not scores:
        raise SftmixError(f"{store.path}: the store has no scores yet")
    study_yaml = out / "study.yaml"
    study = store.meta("study") or {}
    return write_report(out, scores, store.items(), {
        "name": store.meta("name", out.name), "description": study.get("description", ""), "output_dir": str(out),
        "config_yaml": study_yaml.read_text() if study_yaml.exists() else "",
    })


def run_study(sf: StudyFile, out: Path | None = None, progress: bool = True) -> Path:
    out = Path(out or output_dir(sf))
    out.mkdir(parents=True, exist_ok=True)
    plan = make_plan(sf)
    store = Store(out / "sftmix.db")
    try:
        store.set_meta("study", sf.study.model_dump())
        store.set_meta("name", sf.study.name)
        # The report shows this plan's runs only, even if an earlier study wrote into the same directory.
        store.set_meta("run_ids", [r.run_id for r in plan.runs])
        atomic_write(out / "study.yaml", effective_yaml(sf))
        for st in plan.stages.values():
            store.add_stage(st.stage_id, st.parent_id, st.model.name, st.mixture.hash,
                            {k: v for k, v in st.mixture.manifest.items() if k != "row_ids"}, st.hparams,
                            str(stage_dir(out, st.stage_id)))
            _write_json(out / "mixtures" / f"{st.mixture.hash}.json", st.mixture.manifest)
        for r in plan.runs:
            store.add_run(r.run_id, r.label, r.model.name, r.strategy, "+".join(r.sources), r.amount, r.seed,
                          [s.stage_id for s in r.stages])
        tasks = build_tasks(sf)
        log(f"[bold]{esc(sf.study.name)}[/]: {len(plan.runs)} runs, {len(plan.stages)} stages to train, "
            f"{len(tasks)} tasks ({', '.join(f'{t.name}:{len(t.items)}' for t in tasks)}) -> {out}")
        from .executors import get_executor

        get_executor(sf.study.executor.kind)(plan, tasks, out, store, sf.study.evaluation.batch_size, progress)
        return write_store_report(out, store)
    finally:
        store.close()


def run_local(plan: Plan, tasks: list[Task], out: Path, store: Store, batch_size: int, progress: bool) -> None:
    """In-process executor: stages wave by wave (parents first), then each run's evaluation."""
    import gc

    for wave in plan.waves():
        for stage in wave:
            ensure_stage(plan, stage, out, store, progress)
    for run in plan.runs:
        if all(store.has_score(run.run_id, t.name) for t in tasks):
            store.finish_run(run.run_id)
            continue
        log(f"[bold]eval[/] {esc(run.label)}")
        model, tok = load_run_model(run, out)
        scores = evaluate_model(model, tok, tasks, store, run.run_id, batch_size, progress)
        log("  " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in scores.items()))
        store.finish_run(run.run_id)
        del model
        gc.collect()
