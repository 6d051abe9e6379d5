"""Score completions produced elsewhere (another harness, an API): a JSONL of {"id" or "task_id", "completion"}."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..errors import DataError


def read_samples(path: Path) -> dict[str, str]:
    if not path.exists():
        raise DataError(f"{path}: samples file not found")
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} line {n}: invalid JSON ({e.msg})") from None
        key = row.get("id", row.get("task_id")) if isinstance(row, dict) else None
        if key is None or not isinstance(row.get("completion"), str):
            raise DataError(f"{path} line {n}: expected an object with \"id\" (or \"task_id\") and a string \"completion\"")
        out[str(key)] = row["completion"]
    return out


def score_samples(path: Path, tasks, store, run_label: str) -> dict:
    samples = read_samples(path)
    run_id = f"samples-{path.stem}"
    store.add_run(run_id, run_label, "external", "samples", "", 0.0, 0, [])
    out = {}
    for task in tasks:
        items = [e for e in task.items if e.id in samples or e.meta.get("task_id") in samples]
        if not items:
            continue
        t0 = time.time()
        comps = [samples.get(e.id, samples.get(e.meta.get("task_id"))) for e in items]
        scored = task.score(items, comps)
        rows = [{"item_id": e.id, "score": r["score"], "prompt": e.prompt_messages[-1]["content"], "prediction": c,
                 "reference": str(e.meta.get("answer") or e.response), "details": {k: v for k, v in r.items() if k != "score"}}
                for e, c, r in zip(items, comps, scored)]
        out[task.name] = store.add_results(run_id, task.name, task.ability, task.metric, rows, time.time() - t0)
    if not out:
        raise DataError(f"{path}: no sample id matches an item of the tasks {', '.join(t.name for t in tasks)}")
    store.finish_run(run_id)
    return out
