"""The study's embedded SQLite store (`OUTPUT_DIR/sftmix.db`): runs, stages, per-task scores and every item's result.

Each evaluation of a (run, task) is written in one transaction together with its summary score, so a killed study
has either all of a task's items or none, and resumes by skipping what is there.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stages (
    stage_id TEXT PRIMARY KEY, parent_id TEXT, model TEXT NOT NULL, mixture_hash TEXT NOT NULL,
    manifest TEXT NOT NULL, hparams TEXT NOT NULL, status TEXT NOT NULL, path TEXT NOT NULL,
    train_tokens INTEGER, seconds REAL, info TEXT, finished REAL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, label TEXT NOT NULL, model TEXT NOT NULL, strategy TEXT NOT NULL, sources TEXT NOT NULL,
    amount REAL NOT NULL, seed INTEGER NOT NULL, stages TEXT NOT NULL, status TEXT NOT NULL, finished REAL
);
CREATE TABLE IF NOT EXISTS scores (
    run_id TEXT NOT NULL, task TEXT NOT NULL, ability TEXT NOT NULL, metric TEXT NOT NULL, value REAL NOT NULL,
    n INTEGER NOT NULL, seconds REAL, PRIMARY KEY (run_id, task)
);
CREATE TABLE IF NOT EXISTS items (
    run_id TEXT NOT NULL, task TEXT NOT NULL, item_id TEXT NOT NULL, score REAL NOT NULL, prompt TEXT NOT NULL,
    prediction TEXT NOT NULL, reference TEXT NOT NULL, details TEXT NOT NULL, PRIMARY KEY (run_id, task, item_id)
);
"""


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def tx(self):
        with self.db:  # commits on success, rolls back on error
            yield self.db

    def set_meta(self, key: str, value) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def meta(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row["value"]) if row else default

    # ------------------------------------------------------------------------------------------------ stages
    def add_stage(self, stage_id, parent_id, model, mixture_hash, manifest: dict, hparams: dict, path: str) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO stages (stage_id, parent_id, model, mixture_hash, manifest, hparams, status, path)"
                " VALUES (?, ?, ?, ?, ?, ?, 'planned', ?)",
                (stage_id, parent_id, model, mixture_hash, json.dumps(manifest), json.dumps(hparams), path),
            )

    def finish_stage(self, stage_id: str, info: dict) -> None:
        with self.tx() as db:
            db.execute(
                "UPDATE stages SET status='done', train_tokens=?, seconds=?, info=?, finished=? WHERE stage_id=?",
                (info.get("train_tokens"), info.get("seconds"), json.dumps(info), time.time(), stage_id),
            )

    def stage(self, stage_id: str) -> dict | None:
        row = self.db.execute("SELECT * FROM stages WHERE stage_id = ?", (stage_id,)).fetchone()
        return dict(row) if row else None

    # -------------------------------------------------------------------------------------------------- runs
    def add_run(self, run_id, label, model, strategy, sources, amount, seed, stages: list[str]) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'planned', NULL)",
                (run_id, label, model, strategy, sources, amount, seed, json.dumps(stages)),
            )

    def finish_run(self, run_id: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE runs SET status='done', finished=? WHERE run_id=?", (time.time(), run_id))

    def runs(self) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM runs ORDER BY rowid")]

    # --------------------------------------------------------------------------------------------- results
    def has_score(self, run_id: str, task: str) -> bool:
        q = "SELECT 1 FROM scores WHERE run_id = ? AND task = ?"
        return self.db.execute(q, (run_id, task)).fetchone() is not None

    def add_results(self, run_id: str, task: str, ability: str, metric: str, rows: list[dict], seconds: float) -> float:
        """rows: {item_id, score, prompt, prediction, reference, details}. Returns the task score (mean)."""
        value = sum(r["score"] for r in rows) / len(rows) if rows else 0.0
        with self.tx() as db:
            db.execute("DELETE FROM items WHERE run_id = ? AND task = ?", (run_id, task))
            db.executemany(
                "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (run_id, task, r["item_id"], r["score"], r["prompt"], r["prediction"], r["reference"],
                     json.dumps(r.get("details", {}), default=str))
                    for r in rows
                ],
            )
            db.execute(
                "INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, task, ability, metric, value, len(rows), seconds),
            )
        return value

    def scores(self, run_ids: list[str] | None = None) -> list[dict]:
        """One row per (run, task) joined with the run's description and its training tokens; only `run_ids` if given."""
        q = """
        SELECT s.run_id, r.label, r.model, r.strategy, r.sources, r.amount, r.seed, s.task, s.ability, s.metric,
               s.value, s.n, r.stages
        FROM scores s JOIN runs r USING (run_id) ORDER BY r.rowid, s.task
        """
        out = []
        keep = set(run_ids) if run_ids is not None else None
        stage_tokens = dict(self.db.execute("SELECT stage_id, COALESCE(train_tokens, 0) FROM stages"))
        for row in self.db.execute(q):
            d = dict(row)
            if keep is not None and d["run_id"] not in keep:
                continue
            stage_ids = json.loads(d.pop("stages"))
            d["train_tokens"] = sum(stage_tokens.get(s, 0) for s in stage_ids)
            out.append(d)
        return out

    def items(self, run_id: str | None = None, task: str | None = None) -> list[dict]:
        q, args = "SELECT * FROM items WHERE 1=1", []
        if run_id:
            q, args = q + " AND run_id = ?", args + [run_id]
        if task:
            q, args = q + " AND task = ?", args + [task]
        return [dict(r) for r in self.db.execute(q + " ORDER BY rowid", args)]
