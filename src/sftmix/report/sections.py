"""The report's sections, each drawn only when the study has the runs for it, with its figures (PNG + SVG under
figures/), its tables (CSV + Parquet under tables/) and its findings in sentences.

A section is {"id", "title", "note", "figures": [{"b64", "alt", "title"?, "anchor"?}], "tables": [{"caption",
"columns", "rows", "legend"?}], "findings": [sentences]}; html.py renders it, summary.md lists the findings.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..data.mixture import amount_label
from . import analysis, findings, plots, views
from .files import save_figure, slug, write_table
from .findings import cell, legend, significant

POINT_KEYS = ("mean", "lo", "hi", "items", "seeds")


def _point_row(p, **keys) -> dict:
    """A CSV row of one point: its keys, its estimate and its comparison (p after Holm)."""
    return {**keys, **{k: getattr(p.est, k) for k in POINT_KEYS},
            "diff": p.cmp.diff if p.cmp is not None else None, "p_holm": p.p,
            "significant": significant(p.p) if p.cmp is not None else None}


def _figure(out: Path, name: str, fig, alt: str, **kw) -> dict:
    return {"b64": save_figure(out, name, fig), "alt": alt, **kw}


def _basis(points) -> tuple[int, int]:
    """(items, seeds) behind a set of points: the most items any has, the fewest seeds."""
    return max(p.est.items for p in points), min(p.est.seeds for p in points)


def _along_table(lines: list, head: str, names: list[str], caption: str) -> dict:
    """A row per point of the lines (by label, in x order), a column per line (named with its items), the seeds
    behind each row; each cell the score with its interval and its difference from the line's first point."""
    at = {(i, p.label): p for i, ln in enumerate(lines) for p in ln.points}
    order = sorted({(p.x, p.label) for ln in lines for p in ln.points}, key=lambda xl: (xl[0], xl[1]))
    labels = list(dict.fromkeys(label for _, label in order))
    rows = []
    for label in labels:
        pts = [at[(i, label)] for i in range(len(lines)) if (i, label) in at]
        rows.append([label, *[cell(at[(i, label)].est, at[(i, label)].cmp, at[(i, label)].p) if (i, label) in at
                              else "–" for i in range(len(lines))], str(_basis(pts)[1])])
    n = sum(1 for p in at.values() if p.cmp is not None)
    return {"caption": caption, "rows": rows, "legend": legend(n),
            "columns": [head, *[f"{name} ({_basis(ln.points)[0]} items)" for name, ln in zip(names, lines)], "seeds"]}


# ------------------------------------------------------------------------------------------------------- RQ1


def scaling(out: Path, d: views.Data, fits: list[dict]) -> dict | None:
    view = views.rq1(d)
    if view is None:
        return None
    unit = next((views.cell_unit(c["row"]) for c in d.configs.values() if c["row"].get("cell")), "fraction")
    figures, csv_rows = [], []
    for ability, ts in sorted(d.tasks.items()):
        if any(ln.ability == ability for ln in view["lines"]) or any(a == ability for _, a in view["bases"]):
            figures.append(_figure(out, f"scaling_{slug(ability)}", plots.rq1_figure(view, ability, ts, unit),
                                   f"scaling curve for {ability}", title=ability, anchor=f"ability-{slug(ability)}"))
    xs = sorted({p.x for ln in view["lines"] for p in ln.points})
    rows = []
    for (model, ability), est in sorted(view["bases"].items()):
        csv_rows.append({"model": model, "recipe": "base", "ability": ability, "amount": 0.0, "label": "base",
                         **{k: getattr(est, k) for k in POINT_KEYS}, "diff": None, "p_holm": None, "significant": None})
    for ln in sorted(view["lines"], key=lambda ln: (ln.group, ln.ability, ln.name)):
        at = {p.x: p for p in ln.points}
        base = view["bases"].get((ln.group, ln.ability))
        rows.append([ln.group, ln.name, ln.ability, findings.pct(base).replace("%", "") if base else "–",
                     *[cell(at[x].est, at[x].cmp, at[x].p) if x in at else "" for x in xs],
                     *map(str, _basis(ln.points))])
        csv_rows += [_point_row(p, model=ln.group, recipe=ln.name, ability=ln.ability, amount=p.x, label=p.label)
                     for p in ln.points]
    write_table(out, "rq1_curves", csv_rows)
    tables = [{"caption": "Score % [95% interval] at each amount; (difference from the recipe's smallest amount)",
               "columns": ["model", "recipe", "ability", "base", *[amount_label(x, unit) for x in xs], "items",
                           "seeds"], "rows": rows,
               "legend": legend(view["family"])}] if rows else []
    return {"id": "scaling", "title": "Scaling curves (RQ1)", "figures": figures, "tables": tables,
            "findings": findings.rq1(view, fits),
            "note": "Score against the amount of each source (log scale), a line per model and recipe; bars and bands "
                    "are 95% bootstrap intervals over items (and seeds, when a configuration has several); dashed "
                    "lines are the base models. Abilities with several tasks show the mean of their tasks."}


# ------------------------------------------------------------------------------------------------------- RQ3


def ratio(out: Path, d: views.Data) -> dict | None:
    entries = views.ratio(d)
    if not entries:
        return None
    figures, tables, csv_rows = [], [], []
    sources = sorted({s for e in entries for s in e["sources"]})
    for e in entries:
        name = f"ratio_{slug(e['model'])}_{slug(e['recipe'])}"
        fixed = ", ".join(f"{s} {amount_label(v, e['unit'])}" for s, v in e["fixed"].items())
        if e["kind"] == "grid":
            figures.append(_figure(out, name, plots.heatmap_figure(e), f"ratio map of {e['recipe']}"))
            for ability, cells in sorted(e["cells"].items()):
                rows = [[amount_label(a, e["unit"]), *[cell(cells[(a, b)].est) if (a, b) in cells else "–"
                                                       for b in e["b_values"]]] for a in e["a_values"]]
                items, seeds = _basis(cells.values())
                tables.append({"caption": f"{e['recipe']}: {ability} score % [95% interval] over {e['a']} (rows) x "
                                          f"{e['b']} (columns)" + (f"; {fixed} fixed" if fixed else "")
                                          + f" ({findings.basis(items, seeds)} per cell)",
                               "columns": [f"{e['a']} \\ {e['b']}",
                                           *[amount_label(b, e["unit"]) for b in e["b_values"]]],
                               "rows": rows})
                csv_rows += [_point_row(p, model=e["model"], recipe=e["recipe"], kind="grid", ability=ability,
                                        mixture=p.label, **_amounts(p, d)) for p in cells.values()]
        else:
            xlabel = f"{e['axis']} amount (log scale)" + (f"; {fixed} fixed" if fixed else "")
            figures.append(_figure(out, name, plots.lines_figure([(e["recipe"], e["lines"])], xlabel, e["unit"]),
                                   f"score against {e['axis']} amount, {e['recipe']}"))
            tables.append(_along_table(e["lines"], "mixture", [ln.ability for ln in e["lines"]],
                                       f"{e['recipe']}: score % [95% interval] per mixture; (difference from the "
                                       f"first mixture)"))
            csv_rows += [_point_row(p, model=e["model"], recipe=e["recipe"], kind="line", ability=ln.ability,
                                    mixture=p.label, **_amounts(p, d)) for ln in e["lines"] for p in ln.points]
    fields = ["model", "recipe", "kind", "ability", "mixture", *[f"amount_{s}" for s in sources],
              *POINT_KEYS, "diff", "p_holm", "significant"]
    write_table(out, "ratio", csv_rows, fields)
    return {"id": "ratio", "title": "Data ratios (RQ3)", "figures": figures, "tables": tables,
            "findings": findings.ratio(entries),
            "note": "Per-source amounts: a map of each ability over two sources' amounts (cell text: score %), or "
                    "each ability along the one axis that varies. Intervals: bootstrap over items (and seeds)."}


def _amounts(point, d: views.Data) -> dict[str, float]:
    """The per-source amounts of a point's configuration (its first run's cell) as CSV columns."""
    row = next((r for r in d.scores if r["run_id"] == point.runs[0]), None)
    return {f"amount_{s}": v for s, v in (views.cell_amounts(row) if row else {}).items()}


# ----------------------------------------------------------------------------------------------- Zhang et al.


def code_proportion(out: Path, d: views.Data) -> dict | None:
    entries = views.shares(d)
    if not entries:
        return None
    figures, tables, csv_rows = [], [], []
    for e in entries:
        by = {lvl: [ln for ln in e["lines"] if ln.level == lvl] for lvl in ("ability", "domain", "task")}
        if e["reasoning"]:
            # the suite's overall score drawn as the "overall" line (black, dashed) beside its domains
            overall = [replace(ln, level="overall") for ln in by["ability"] if ln.name == "reasoning"]
            panels = [("reasoning overall and per domain", overall + by["domain"]), ("per task", by["task"])]
            others = [ln for ln in by["ability"] if ln.name != "reasoning"]
            panels += [("other abilities", others)] if others else []
        else:
            panels = [("per ability", by["ability"])]
        panels = [(t, lns) for t, lns in panels if lns]
        figures.append(_figure(out, f"code_proportion_{slug(e['model'])}_{slug(e['recipe'])}",
                               plots.lines_figure(panels, f"{e['source']} share of the mixture",
                                                  title=f"{e['recipe']}: score against {e['source']} proportion"),
                               f"score against {e['source']} proportion"))
        names = [f"{ln.name} ({ln.level})" for ln in e["lines"]]
        tables.append(_along_table(e["lines"], f"{e['source']} share", names,
                                   f"{e['recipe']}: score % [95% interval] per {e['source']} share; (difference "
                                   f"from the lowest share)"))
        csv_rows += [_point_row(p, model=e["model"], recipe=e["recipe"], source=e["source"], share=p.x,
                                level=ln.level, name=ln.name) for ln in e["lines"] for p in ln.points]
    write_table(out, "code_proportion", csv_rows)
    return {"id": "code-proportion", "title": "Score against code proportion (Zhang et al.)", "figures": figures,
            "tables": tables, "findings": findings.shares(entries),
            "note": "A fixed total with one source's share varied. With the reasoning suite: overall (the mean of its "
                    "tasks), per domain (symbolic, logical, arithmetic) and per task. Intervals: bootstrap over items "
                    "(and seeds); differences are paired with the lowest share."}


# ------------------------------------------------------------------------------------------------------ BELLE


def belle(out: Path, d: views.Data, items: list[dict]) -> dict | None:
    entries = views.pool(d, items)
    if not entries:
        return None
    figures, tables, csv_rows = [], [], []
    for e in entries:
        words = plots.UNIT_WORDS.get(e["unit"], "amount").replace(" of each source", "")
        figures.append(_figure(out, f"belle_{slug(e['task'])}_{slug(e['model'])}_{slug(e['recipe'])}",
                               plots.lines_figure([(f"{e['task']} per category", e["lines"])],
                                                  f"total {words} (log scale)", e["unit"],
                                                  title=f"{e['recipe']}: {e['task']} against total amount"),
                               f"{e['task']} per category against total amount"))
        tables.append(_along_table(e["lines"], "total", [ln.name for ln in e["lines"]],
                                   f"{e['recipe']}: {e['task']} score % [95% interval] per category and total; "
                                   f"(difference from the smallest total)"))
        csv_rows += [_point_row(p, model=e["model"], recipe=e["recipe"], task=e["task"], total=p.x, category=ln.name)
                     for ln in e["lines"] for p in ln.points]
    write_table(out, "belle_categories", csv_rows)
    return {"id": "belle", "title": "Per-category score against total amount (BELLE)", "figures": figures,
            "tables": tables, "findings": findings.pool(entries),
            "note": "The pool of sources scaled as a whole. Category intervals come from the items of each category "
                    "(bootstrap over items and seeds); without item rows the stored category means are shown bare."}


# ------------------------------------------------------------------------------------------------- forgetting


def forgetting(out: Path, stage_scores: list[dict], items: list[dict]) -> dict | None:
    view = views.forgetting(stage_scores, items)
    if view is None or not view["lines"]:
        return None
    figures, csv_rows, rows = [], [], []
    stages = sorted({p.x for ln in view["lines"] for p in ln.points})
    labels = {p.x: p.label for ln in view["lines"] for p in ln.points}
    for ability in sorted({ln.ability for ln in view["lines"]}):
        lines = [ln for ln in view["lines"] if ln.ability == ability]
        figures.append(_figure(out, f"forgetting_{slug(ability)}",
                               plots.lines_figure([(f"{ability} after each stage", lines)], "stage", ticks=labels),
                               f"{ability} after each stage"))
    for ln in sorted(view["lines"], key=lambda ln: (ln.name, ln.ability)):
        at = {p.x: p for p in ln.points}
        end = ln.points[-1]
        change = cell(end.est, end.cmp, end.p).split(" (", 1)[1].rstrip(")") if end.cmp is not None else "–"
        rows.append([ln.name, ln.ability, *[cell(at[s].est) if s in at else "" for s in stages],
                     f"{change} (from {ln.peak.label})" if end.cmp is not None else "–",
                     *map(str, _basis(ln.points))])
        csv_rows += [{**_point_row(p, run=ln.name, ability=ln.ability, stage=p.x, label=p.label),
                      "peak_stage": ln.peak.x if ln.peak is not None and p is end else None}
                     for p in ln.points]
    write_table(out, "forgetting", csv_rows)
    table = {"caption": "Score % [95% interval] after each stage; last column: the end minus the stage where the "
                        "ability peaked before it (points)",
             "columns": ["run", "ability", *[labels[s] for s in stages], "end − peak", "items", "seeds"],
             "rows": rows,
             "legend": legend(view["family"])}
    return {"id": "forgetting", "title": "Forgetting across stages (RQ4)", "figures": figures, "tables": [table],
            "findings": findings.forgetting(view),
            "note": "Each ability before SFT (when the base model was evaluated) and after every stage of the "
                    "multi-stage runs. Intervals: bootstrap over items (and seeds)."}


# -------------------------------------------------------------------------------------- RQ2, RQ4 tables, fits


def analyses(out: Path, scores: list[dict], items: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """Intervals, strategies (RQ4), mixed vs single (RQ2) and fits (RQ1): (sections, interval rows, fits)."""
    sections = []
    ivs = analysis.intervals(scores, items)
    if ivs:
        write_table(out, "intervals", [{k: (";".join(v) if isinstance(v, list) else v) for k, v in r.items()}
                                       for r in ivs])
    st = analysis.strategy_table(scores, items)
    if st:
        write_table(out, "strategies", st.pop("csv"))
        compared = st.pop("compared")
        sections.append({"id": "strategies", "title": "Strategies (RQ4)", "figures": [], "tables": [st],
                         "findings": findings.strategies(compared),
                         "note": "Runs at the study's largest amount. Intervals: bootstrap over items (and seeds). "
                                 "Paired tests are over items; with several seeds, each side is the mean of its "
                                 "seeds."})
    mv = analysis.mixed_vs_single(scores, items)
    if mv:
        sections.append(_mixed(out, mv))
    fits = analysis.scaling_fits_of(ivs)
    if fits:
        sections.append(_fits(out, fits))
    return sections, ivs, fits


def _mixed(out: Path, mv: dict) -> dict:
    n = len(mv["rows"])
    rows = [[r["model"], r["ability"], r["mixed"], amount_label(r["amount"]),
             f"{100 * r['cmp'].diff:+.1f}" + (" *" if significant(r["p_holm"]) else ""),
             f"[{100 * r['cmp'].lo:+.1f}, {100 * r['cmp'].hi:+.1f}]", f"{r['p_holm']:.3g}",
             "yes" if significant(r["p_holm"]) else "no", str(r["cmp"].items), str(r["seeds"])] for r in mv["rows"]]
    write_table(out, "mixed_vs_single", [
        {"model": r["model"], "ability": r["ability"], "mixed": r["mixed"], "amount": r["amount"],
         "diff": r["cmp"].diff,
         "lo": r["cmp"].lo, "hi": r["cmp"].hi, "p": r["cmp"].p, "p_holm": r["p_holm"],
         "significant": significant(r["p_holm"]), "items": r["cmp"].items, "seeds": r["seeds"]} for r in mv["rows"]])
    cross = "; ".join(f"{a} ({m}): {'none' if x is None else amount_label(x)}"
                      for (m, a), x in sorted(mv["crossover"].items()))
    cross = cross or "not drawn (several mixed recipes per ability)"
    return {"id": "mixed", "title": "Mixed vs single source (RQ2)", "figures": [], "findings": findings.rq2(mv),
            "tables": [{"caption": "Multi-task minus single-source score on the source's own ability, paired on the "
                                   "same items (points; p Holm-corrected over the table)",
                        "columns": ["model", "ability", "mixed run", "amount", "difference", "95% interval",
                                    "p (Holm)", "significant", "items", "seeds"], "rows": rows, "legend": legend(n)}],
            "note": f"Crossover amount, where mixing's effect changes sign: {cross}."}


def _fits(out: Path, fits: list[dict]) -> dict:
    rows, csv_rows = [], []
    for f in fits:
        cells = []
        for kind in ("log", "power"):
            fit, h = f[kind], f[f"{kind}_holdout"]
            cells += [fit.formula() if fit else "–", f"{100 * h['error']:+.1f}" if h else "–"]
            csv_rows.append({"model": f["model"], "recipe": f["recipe"], "ability": f["ability"], "fit": kind,
                             "params": ";".join(f"{p:.6g}" for p in fit.params) if fit else "",
                             "rmse": fit.rmse if fit else None, "holdout_amount": h["amount"] if h else None,
                             "holdout_error": h["error"] if h else None})
        rows.append([f["model"], f["recipe"], f["ability"], str(f["amounts"]), *cells])
    write_table(out, "fits", csv_rows)
    return {"id": "fits", "title": "Scaling fits (RQ1)", "figures": [], "findings": [], "tables": [{
        "caption": "Score against amount x: log fit and saturating power law; error (points) of each predicting the "
                   "largest amount when fitted to the smaller ones",
        "columns": ["model", "recipe", "ability", "amounts", "log fit", "log: error at largest", "power fit",
                    "power: error at largest"], "rows": rows}],
        "note": "A power law needs three amounts below the largest to be checked this way."}


# ------------------------------------------------------------------------------------------ categories, loss


def categories(scores: list[dict]) -> dict | None:
    """Judged tasks (MT-Bench, BELLE) and others that report per-category scores: one table per task, a row per run,
    a column per category, with the judge named."""
    tables = []
    for task in sorted({r["task"] for r in scores}):
        rows = [r for r in scores
                if r["task"] == task and any(k.startswith("category:") for k in r.get("summary") or {})]
        if not rows:
            continue
        cats = sorted({k.split(":", 1)[1] for r in rows for k in r["summary"] if k.startswith("category:")})
        body = []
        for r in rows:
            summ = r["summary"]
            unjudged = summ.get("unjudged_items")
            body.append([r["label"], *[_fmt(summ.get(f"category:{c}")) for c in cats], _fmt(r["value"]),
                         "" if unjudged is None else str(int(unjudged))])
        judge = next((r["summary"].get("judge") for r in rows if r["summary"].get("judge")), "")
        tables.append({"caption": f"{task}: score per category" + (f" (judge: {judge})" if judge else ""),
                       "columns": ["run", *cats, "overall", "unjudged items"], "rows": body})
    if not tables:
        return None
    return {"id": "categories", "title": "Scores per category (%)", "figures": [], "tables": tables, "findings": [],
            "note": "Judged and categorised tasks; an item with no parseable judgement is left out of the mean and "
                    "counted as unjudged."}


def _fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and v != v) else f"{100 * float(v):.1f}"


def loss(out: Path, stages: list[dict]) -> dict | None:
    trained = [s for s in stages if (s.get("info") or {}).get("loss")]
    if not trained:
        return None
    return {"id": "loss", "title": "Training loss", "tables": [], "findings": [],
            "figures": [_figure(out, "loss_curves", plots.loss_curves(trained), "training loss curves")],
            "note": "Loss per optimizer step of every trained stage (moving average over a tenth of its steps)."}


def all_sections(out: Path, scores: list[dict], items: list[dict], stages: list[dict], stage_scores: list[dict],
                 stage_items: list[dict]) -> list[dict]:
    """Every section the study has the runs for, in the report's order."""
    parts, ivs, fits = analyses(out, scores, items)
    by_id = {s["id"]: s for s in parts}
    d = views.Data(scores, items, ivs)
    found = [scaling(out, d, fits), by_id.get("fits"), by_id.get("mixed"), ratio(out, d), by_id.get("strategies"),
             forgetting(out, stage_scores, items + stage_items), code_proportion(out, d), belle(out, d, items),
             categories(scores), loss(out, stages)]
    return [s for s in found if s is not None]
