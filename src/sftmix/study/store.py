"""The study's embedded SQLite store (`OUTPUT_DIR/sftmix.db`): runs, stages, evaluations and every item's result.

Evaluations belong to checkpoints (a trained stage, or a base model), keyed by the checkpoint and everything about
the task that changes its result (its parameters, items, generation settings, scorer settings): change any of them
and the old scores are simply not the ones asked for. An evaluation is written in one transaction with all its
items, so a killed study has either all of it or none. WAL mode lets several workers write; each write is its own
short transaction. The schema version is `PRAGMA user_version`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import SftmixError
from ..faults import crash_point

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stages (
    stage_id TEXT PRIMARY KEY, parent_id TEXT, model TEXT NOT NULL, name TEXT NOT NULL, mixture_hash TEXT NOT NULL,
    manifest TEXT NOT NULL, hparams TEXT NOT NULL, path TEXT NOT NULL, status TEXT NOT NULL,
    train_tokens INTEGER, seconds REAL, info TEXT, started REAL, finished REAL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, label TEXT NOT NULL, model TEXT NOT NULL, strategy TEXT NOT NULL, sources TEXT NOT NULL,
    amount REAL NOT NULL, axis TEXT NOT NULL, cell TEXT NOT NULL, params TEXT NOT NULL, seed INTEGER NOT NULL,
    stages TEXT NOT NULL, base_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS evals (
    eval_id TEXT PRIMARY KEY, checkpoint TEXT NOT NULL, task TEXT NOT NULL, task_key TEXT NOT NULL,
    ability TEXT NOT NULL, domain TEXT NOT NULL, metric TEXT NOT NULL, value REAL NOT NULL, summary TEXT NOT NULL,
    n INTEGER NOT NULL, seconds REAL, finished REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    eval_id TEXT NOT NULL, item_id TEXT NOT NULL, score REAL NOT NULL, prompt TEXT NOT NULL,
    prediction TEXT NOT NULL, reference TEXT NOT NULL, details TEXT NOT NULL, PRIMARY KEY (eval_id, item_id)
);
CREATE INDEX IF NOT EXISTS evals_by_checkpoint ON evals (checkpoint, task);
"""


def _insert(db, table: str, row: dict, verb: str = "INSERT") -> None:
    cols = ", ".join(row)
    marks = ", ".join(f":{k}" for k in row)
    db.execute(f"{verb} INTO {table} ({cols}) VALUES ({marks})", row)


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existed = self.path.exists() and self.path.stat().st_size > 0
        # A generous busy timeout: workers of one study write to the same file and wait for each other's commits.
        self.db = sqlite3.connect(self.path, timeout=60)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if existed and version != SCHEMA_VERSION:
            has_tables = self.db.execute("SELECT COUNT(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
            if has_tables:
                self.db.close()
                raise SftmixError(
                    f"{self.path}: written by an incompatible sftmix version (store schema {version}, this sftmix "
                    f"reads {SCHEMA_VERSION}); use a new output_dir, or move this one aside to keep it"
                )
        with self.db:
            self.db.executescript(SCHEMA)
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def tx(self):
        with self.db:  # commits on success, rolls back on error
            yield self.db

    def set_meta(self, key: str, value) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value, default=str)))

    def meta(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row["value"]) if row else default

    # ------------------------------------------------------------------------------------------------ stages
    def add_stage(self, stage_id, parent_id, model, name, mixture_hash, manifest: dict, hparams: dict, path: str) -> None:
        with self.tx() as db:
            _insert(db, "stages", {
                "stage_id": stage_id, "parent_id": parent_id, "model": model, "name": name,
                "mixture_hash": mixture_hash, "manifest": json.dumps(manifest, default=str),
                "hparams": json.dumps(hparams, default=str), "path": path, "status": "planned",
            }, "INSERT OR IGNORE")

    def start_stage(self, stage_id: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE stages SET status='running', started=? WHERE stage_id=? AND status != 'done'",
                       (time.time(), stage_id))

    def finish_stage(self, stage_id: str, info: dict) -> None:
        with self.tx() as db:
            db.execute(
                "UPDATE stages SET status='done', train_tokens=?, seconds=?, info=?, finished=? WHERE stage_id=?",
                (info.get("train_tokens"), info.get("seconds"), json.dumps(info, default=str), time.time(), stage_id),
            )

    def stage(self, stage_id: str) -> dict | None:
        row = self.db.execute("SELECT * FROM stages WHERE stage_id = ?", (stage_id,)).fetchone()
        return dict(row) if row else None

    def stages(self) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM stages ORDER BY rowid")]

    # -------------------------------------------------------------------------------------------------- runs
    def add_run(self, run_id, label, model, strategy, sources, amount, seed, stages: list[str], axis: str = "amount",
                cell: dict | None = None, params: dict | None = None, base_id: str = "") -> None:
        with self.tx() as db:
            _insert(db, "runs", {
                "run_id": run_id, "label": label, "model": model, "strategy": strategy, "sources": sources,
                "amount": amount, "axis": axis, "cell": json.dumps(cell or {}), "params": json.dumps(params or {},
                default=str), "seed": seed, "stages": json.dumps(stages), "base_id": base_id,
            }, "INSERT OR REPLACE")

    def runs(self, run_ids: list[str] | None = None) -> list[dict]:
        rows = [dict(r) for r in self.db.execute("SELECT * FROM runs ORDER BY rowid")]
        if run_ids is not None:
            keep = set(run_ids)
            rows = [r for r in rows if r["run_id"] in keep]
        for r in rows:
            for k in ("cell", "params", "stages"):
                r[k] = json.loads(r[k])
        return rows

    # ------------------------------------------------------------------------------------------- evaluations
    def has_eval(self, eval_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM evals WHERE eval_id = ?", (eval_id,)).fetchone() is not None

    def add_eval(self, eval_id: str, checkpoint: str, task, task_key: dict, rows: list[dict], summary: dict,
                 seconds: float) -> float:
        """rows: {item_id, score, prompt, prediction, reference, details}. Returns the headline value."""
        value = float(summary.get(task.metric, sum(r["score"] for r in rows) / len(rows) if rows else 0.0))
        with self.tx() as db:
            db.execute("DELETE FROM items WHERE eval_id = ?", (eval_id,))
            db.executemany(
                "INSERT INTO items (eval_id, item_id, score, prompt, prediction, reference, details)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(eval_id, r["item_id"], r["score"], r["prompt"], r["prediction"], r["reference"],
                  json.dumps(r.get("details", {}), default=str)) for r in rows],
            )
            crash_point("store_write")  # items written, summary not yet: the transaction must not survive a kill
            _insert(db, "evals", {
                "eval_id": eval_id, "checkpoint": checkpoint, "task": task.name,
                "task_key": json.dumps(task_key, sort_keys=True, default=str), "ability": task.ability,
                "domain": getattr(task, "domain", "") or "", "metric": task.metric, "value": value,
                "summary": json.dumps(summary, default=str), "n": len(rows), "seconds": seconds,
                "finished": time.time(),
            }, "INSERT OR REPLACE")
        return value

    def evals(self, eval_ids: list[str] | None = None) -> list[dict]:
        rows = [dict(r) for r in self.db.execute("SELECT * FROM evals ORDER BY rowid")]
        if eval_ids is not None:
            keep = set(eval_ids)
            rows = [r for r in rows if r["eval_id"] in keep]
        for r in rows:
            r["summary"] = json.loads(r["summary"])
        return rows

    def scores(self, run_ids: list[str] | None = None, wanted: dict | None = None) -> list[dict]:
        """One row per (run, task): the run's description joined with its final checkpoint's evaluation, and with
        `stage_index` = number of stages. `wanted` (meta "evals": run_id -> {task: eval_id} for every checkpoint of
        the plan) picks exactly the evaluations the current plan asks for."""
        wanted = wanted if wanted is not None else self.meta("evals", {})
        runs = self.runs(run_ids)
        stage_tokens = dict(self.db.execute("SELECT stage_id, COALESCE(train_tokens, 0) FROM stages"))
        evals = {e["eval_id"]: e for e in self.evals()}
        out = []
        for r in runs:
            for task, by_stage in wanted.get(r["run_id"], {}).items():
                for idx, eval_id in by_stage.items():
                    e = evals.get(eval_id)
                    if e is None:
                        continue
                    idx = int(idx)
                    out.append({
                        "run_id": r["run_id"], "label": r["label"], "model": r["model"], "strategy": r["strategy"],
                        "sources": r["sources"], "amount": r["amount"], "axis": r["axis"], "cell": r["cell"],
                        "params": r["params"], "seed": r["seed"], "task": task, "ability": e["ability"],
                        "domain": e["domain"], "metric": e["metric"], "value": e["value"], "summary": e["summary"],
                        "n": e["n"], "eval_id": eval_id, "stage_index": idx, "final": idx == len(r["stages"]),
                        "train_tokens": sum(stage_tokens.get(s, 0) for s in r["stages"][:idx]),
                    })
        return out

    def items(self, eval_id: str | None = None) -> list[dict]:
        q, args = "SELECT * FROM items", []
        if eval_id:
            q, args = q + " WHERE eval_id = ?", [eval_id]
        return [dict(r) for r in self.db.execute(q + " ORDER BY rowid", args)]
