"""`sftmix status DIR`: what a study has done, what is running and what is left, read from its store alone (so it
works while the study runs: SQLite's WAL lets readers in beside the writers)."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import SftmixError
from .store import Store


def study_status(out: str | Path) -> dict:
    out = Path(out)
    db = out / "sftmix.db"
    if not db.exists():
        raise SftmixError(f"{db}: no study store here; run `sftmix run STUDY out_dir={out}` first")
    store = Store(db)
    try:
        stages = store.stages()
        wanted = store.meta("evals", {})
        eval_ids = {eid for per_task in wanted.values() for by_stage in per_task.values() for eid in by_stage.values()}
        evals = {e["eval_id"]: e for e in store.evals(list(eval_ids))}
        name = store.meta("name", out.name)
    finally:
        store.close()
    now = time.time()
    st_done = [s for s in stages if s["status"] == "done"]
    st_running = [s for s in stages if s["status"] == "running"]
    st_left = [s for s in stages if s["status"] != "done"]
    train_s = sum(s["seconds"] or 0 for s in st_done)
    eval_s = sum(e["seconds"] or 0 for e in evals.values())
    # Time left: the mean time of each kind of unit so far, times how many of that kind are left. Rough, but honest
    # about what it rests on (nothing until one unit of a kind has finished).
    left_s = None
    if (st_done or not st_left) and (evals or not eval_ids):
        left_s = (train_s / len(st_done) * len(st_left) if st_done else 0.0) + \
                 (eval_s / len(evals) * (len(eval_ids) - len(evals)) if evals else 0.0)
    return {
        "name": name, "dir": str(out),
        "stages": {"done": len(st_done), "running": len(st_running), "left": len(st_left), "total": len(stages)},
        "evaluations": {"done": len(evals), "left": len(eval_ids) - len(evals), "total": len(eval_ids)},
        "running": [{"stage": s["stage_id"][:12], "name": s["name"], "for_s": now - (s["started"] or now)}
                    for s in st_running],
        "seconds": {"train": train_s, "eval": eval_s}, "estimate_left_s": left_s,
        "finished": not st_left and len(evals) == len(eval_ids) and (out / "report.html").exists(),
    }


def _dur(s: float | None) -> str:
    if s is None:
        return "unknown (no unit of each kind has finished yet)"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def format_status(st: dict) -> str:
    lines = [f"{st['name']} ({st['dir']}): " + ("finished" if st["finished"] else "not finished"),
             f"  stages:      {st['stages']['done']}/{st['stages']['total']} trained, {st['stages']['running']} running, "
             f"{st['stages']['left']} left ({_dur(st['seconds']['train'])} spent)",
             f"  evaluations: {st['evaluations']['done']}/{st['evaluations']['total']} done, {st['evaluations']['left']} left "
             f"({_dur(st['seconds']['eval'])} spent)"]
    for r in st["running"]:
        lines.append(f"  running: stage {r['stage']} ({r['name']}) for {_dur(r['for_s'])}")
    if not st["finished"]:
        lines.append(f"  estimated time left: {_dur(st['estimate_left_s'])}")
    return "\n".join(lines)
