"""Study report: report.html (self-contained: figures embedded, no network), figures/ (PNG and SVG), tables/ (CSV
and Parquet) and summary.md (the findings in sentences, then the scores)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from ..atomic import atomic_write
from . import html as _html
from .files import write_table
from .plots import ability_scores
from .sections import all_sections

__all__ = ["write_report"]

SCORE_KEYS = ("run_id", "label", "model", "strategy", "sources", "amount", "seed", "task", "ability",
              "metric", "value")
CSV_KEYS = SCORE_KEYS + ("n", "train_tokens")


def _normalise(scores: list[dict]) -> list[dict]:
    if not scores:
        raise ValueError("write_report: `scores` is empty, there is nothing to report "
                         "(has any run of this study been evaluated?)")
    out = []
    for i, row in enumerate(scores):
        missing = [k for k in SCORE_KEYS if k not in row]
        if missing:
            raise ValueError(f"write_report: scores[{i}] lacks key(s) {', '.join(missing)}")
        value = row["value"]
        # n and train_tokens are informative only: absent or None is allowed
        out.append({**row, "amount": float(row["amount"]), "seed": int(row["seed"]),
                    "value": float("nan") if value is None else float(value),
                    **{k: None if row.get(k) is None else int(row[k]) for k in ("n", "train_tokens")},
                    **{k: str(row[k] or "") for k in ("run_id", "label", "model", "strategy",
                                                      "sources", "task", "ability", "metric")}})
    return out


def write_report(out_dir: str | Path, scores: list[dict], items: list[dict], study: dict,
                 stages: list[dict] | None = None, stage_scores: list[dict] | None = None,
                 stage_items: list[dict] | None = None) -> Path:
    """Write the study report under `out_dir` and return the path of report.html. `stages` (store rows, `info`
    parsed) draw the loss curves; `stage_scores` (scores with `stage_index` and `stages`, the run's stage count)
    draw forgetting, with intervals from `stage_items` (item rows with their `eval_id`) where given."""
    scores = _normalise(scores)
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)

    columns, rows = _html.results_table(scores)
    best = _html.best_per_ability(ability_scores(scores))
    models = sorted({r["model"] for r in scores})
    header = {"date": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
              "runs": len({r["run_id"] for r in scores}), "models": len(models), "model_names": models,
              "tasks": len({r["task"] for r in scores})}
    write_table(out, "scores", scores, CSV_KEYS)
    sections = all_sections(out, scores, items or [], stages or [], stage_scores or [], stage_items or [])
    found = [{"title": s["title"], "id": s["id"], "sentences": s["findings"]} for s in sections if s["findings"]]
    atomic_write(out / "summary.md", _html.render_markdown(study, header, columns, rows, best, found))
    page = _html.render_html(
        name=str(study.get("name") or "sftmix study"), description=study.get("description") or "",
        output_dir=str(study.get("output_dir") or ""), config_yaml=study.get("config_yaml") or "",
        header=header, findings=found, columns=columns, rows=rows, best=best,
        samples=_html.pick_samples(scores, items or []), sections=sections)
    # written last: a report.html on disk means every other file of this report is in place
    path = out / "report.html"
    atomic_write(path, page)
    return path
