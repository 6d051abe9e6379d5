"""Study report: report.html (self-contained), figures/, tables/scores.csv and summary.md."""

from __future__ import annotations

import base64
import csv
import io
import re
from datetime import datetime
from pathlib import Path

from ..atomic import atomic_write
from . import html as _html
from .plots import ability_scores, forgetting_png, loss_curves_png, scaling_png

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


def _slug(text: str) -> str:
    # abilities come from the study file; keep them from steering a path out of figures/
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "ability"


def _csv(rows: list[dict], fields=None) -> str:
    """CSV text of `rows`; `fields` (default: the first row's keys) are the columns, other keys are left out."""
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(fields or rows[0]), extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def _category_tables(scores: list[dict]) -> list[dict]:
    """Judged tasks (MT-Bench, BELLE) and others that report per-category scores: one table per task, a row per run,
    a column per category, with the judge named."""
    tables = []
    for task in sorted({r["task"] for r in scores}):
        rows = [r for r in scores if r["task"] == task and any(k.startswith("category:") for k in r.get("summary") or {})]
        if not rows:
            continue
        cats = sorted({k.split(":", 1)[1] for r in rows for k in r["summary"] if k.startswith("category:")})
        body = []
        for r in rows:
            summ = r["summary"]
            cells = [_fmt(summ.get(f"category:{c}")) for c in cats]
            unjudged = summ.get("unjudged_items")
            body.append([r["label"], *cells, _fmt(r["value"]), "" if unjudged is None else str(int(unjudged))])
        judge = next((r["summary"].get("judge") for r in rows if r["summary"].get("judge")), "")
        tables.append({"caption": f"{task}: score per category" + (f" (judge: {judge})" if judge else ""),
                       "columns": ["run", *cats, "overall", "unjudged items"], "rows": body})
    return tables


def _fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and v != v) else f"{100 * float(v):.1f}"


def _sections(out: Path, stages: list[dict], stage_scores: list[dict], scores: list[dict] | None = None) -> list[dict]:
    """Figures beyond the scaling curves: per-category scores of judged tasks, training loss of every stage, and
    forgetting across stages."""
    sections = []
    tables = _category_tables(scores or [])
    if tables:
        sections.append({"id": "categories", "title": "Scores per category (%)", "figures": [], "tables": tables,
                         "note": "Judged and categorised tasks; an item with no parseable judgement is left out of "
                                 "the mean and counted as unjudged."})
    trained = [s for s in stages if (s.get("info") or {}).get("loss")]
    if trained:
        png = loss_curves_png(trained)
        atomic_write(out / "figures" / "loss_curves.png", png)
        sections.append({"id": "loss", "title": "Training loss", "note": "Loss per optimizer step of every trained "
                         "stage (moving average over a tenth of its steps).",
                         "figures": [{"b64": base64.b64encode(png).decode(), "alt": "training loss curves"}],
                         "tables": []})
    multi = [r for r in stage_scores if r.get("stages", 1) > 1]
    if multi:
        figs = []
        for ability in sorted({r["ability"] for r in multi}):
            rows = [r for r in multi if r["ability"] == ability]
            png = forgetting_png(rows, ability)
            atomic_write(out / "figures" / f"forgetting_{_slug(ability)}.png", png)
            figs.append({"b64": base64.b64encode(png).decode(), "alt": f"{ability} after each stage"})
        sections.append({"id": "forgetting", "title": "Forgetting across stages", "note": "Each ability's score "
                         "before SFT and after every stage of the multi-stage runs.", "figures": figs, "tables": []})
    return sections


def _analysis_sections(out: Path, scores: list[dict], items: list[dict]) -> list[dict]:
    """The papers' questions with their statistics (report/analysis.py), each also a CSV under tables/."""
    from . import analysis

    sections = []
    ivs = analysis.intervals(scores, items)
    if ivs:
        atomic_write(out / "tables" / "intervals.csv", _csv([
            {k: (";".join(v) if isinstance(v, list) else v) for k, v in r.items()} for r in ivs]))
    st = analysis.strategy_table(scores, items)
    if st:
        atomic_write(out / "tables" / "strategies.csv", _csv(st.pop("csv")))
        sections.append({"id": "strategies", "title": "Strategies (RQ4)", "figures": [], "tables": [st],
                         "note": "Runs at the study's largest amount. Intervals: bootstrap over items (and seeds). Paired tests "
                                 "are over items; with several seeds, each side is the mean of its seeds."})
    mv = analysis.mixed_vs_single(scores, items)
    if mv:
        rows = [[r["model"], r["ability"], r["mixed"], f"{r['amount']:g}", f"{100 * r['cmp'].diff:+.1f}",
                 f"[{100 * r['cmp'].lo:+.1f}, {100 * r['cmp'].hi:+.1f}]", f"{r['p_holm']:.3g}",
                 "yes" if r["p_holm"] < 0.05 else "no", str(r["cmp"].items), str(r["seeds"])] for r in mv["rows"]]
        atomic_write(out / "tables" / "mixed_vs_single.csv", _csv([
            {"model": r["model"], "ability": r["ability"], "mixed": r["mixed"], "amount": r["amount"],
             "diff": r["cmp"].diff,
             "lo": r["cmp"].lo, "hi": r["cmp"].hi, "p": r["cmp"].p, "p_holm": r["p_holm"], "items": r["cmp"].items,
             "seeds": r["seeds"]} for r in mv["rows"]]))
        cross = "; ".join(f"{a} ({m}): {'none' if x is None else f'{x:g}'}" for (m, a), x in sorted(mv["crossover"].items()))
        cross = cross or "not drawn (several mixed recipes per ability)"
        sections.append({"id": "mixed", "title": "Mixed vs single source (RQ2)", "figures": [], "tables": [{
            "caption": "Multi-task minus single-source score on the source's own ability, paired on the same items "
                       "(points; p Holm-corrected over the table)",
            "columns": ["model", "ability", "mixed run", "amount", "difference", "95% interval", "p (Holm)", "significant",
                        "items", "seeds"], "rows": rows}],
            "note": f"Crossover amount, where mixing's effect changes sign: {cross}."})
    fits = analysis.scaling_fits_of(ivs)
    if fits:
        rows, csv_rows = [], []
        for f in fits:
            cells = []
            for kind in ("log", "power"):
                fit, h = f[kind], f[f"{kind}_holdout"]
                cells += [fit.formula() if fit else "–",
                          f"{100 * h['error']:+.1f}" if h else "–"]
                csv_rows.append({"model": f["model"], "recipe": f["recipe"], "ability": f["ability"], "fit": kind,
                                 "params": ";".join(f"{p:.6g}" for p in fit.params) if fit else "",
                                 "rmse": fit.rmse if fit else "", "holdout_amount": h["amount"] if h else "",
                                 "holdout_error": h["error"] if h else ""})
            rows.append([f["model"], f["recipe"], f["ability"], str(f["amounts"]), *cells])
        atomic_write(out / "tables" / "fits.csv", _csv(csv_rows))
        sections.append({"id": "fits", "title": "Scaling fits (RQ1)", "figures": [], "tables": [{
            "caption": "Score against amount x: log fit and saturating power law; error (points) of each predicting "
                       "the largest amount when fitted to the smaller ones",
            "columns": ["model", "recipe", "ability", "amounts", "log fit", "log: error at largest",
                        "power fit", "power: error at largest"], "rows": rows}],
            "note": "A power law needs three amounts below the largest to be checked this way."})
    return sections


def write_report(out_dir: str | Path, scores: list[dict], items: list[dict], study: dict,
                 stages: list[dict] | None = None, stage_scores: list[dict] | None = None) -> Path:
    """Write the study report under `out_dir` and return the path of report.html. `stages` (store rows, `info`
    parsed) draw the loss curves; `stage_scores` (scores with `stage_index` and `stages`, the run's stage count)
    draw forgetting."""
    scores = _normalise(scores)
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)

    per_ability = ability_scores(scores)
    figures = []
    for ability in sorted({r["ability"] for r in scores}):
        png = scaling_png([r for r in per_ability if r["ability"] == ability], ability)
        atomic_write(out / "figures" / f"scaling_{_slug(ability)}.png", png)
        figures.append({"ability": ability, "slug": _slug(ability), "b64": base64.b64encode(png).decode()})

    columns, rows = _html.results_table(scores)
    best = _html.best_per_ability(per_ability)
    models = sorted({r["model"] for r in scores})
    header = {"date": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
              "runs": len({r["run_id"] for r in scores}), "models": len(models), "model_names": models,
              "tasks": len({r["task"] for r in scores})}
    atomic_write(out / "tables" / "scores.csv", _csv(scores, CSV_KEYS))
    atomic_write(out / "summary.md", _html.render_markdown(study, header, columns, rows, best))
    page = _html.render_html(
        name=str(study.get("name") or "sftmix study"), description=study.get("description") or "",
        output_dir=str(study.get("output_dir") or ""), config_yaml=study.get("config_yaml") or "",
        header=header, figures=figures, columns=columns, rows=rows, best=best,
        samples=_html.pick_samples(scores, items or []),
        sections=_analysis_sections(out, scores, items or []) + _sections(out, stages or [], stage_scores or [], scores))
    # written last: a report.html on disk means every other file of this report is in place
    path = out / "report.html"
    atomic_write(path, page)
    return path
