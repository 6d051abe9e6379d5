"""The study seen along its data design: the numbers behind the report's curves, maps and per-stage tables.

- `rq1`: score against amount per ability, a line per model and recipe, the base model beside them (grid designs);
- `ratio`: per-source designs (DMT RQ3): a map over two sources' amounts (combine: product), or a line per ability
  along the one axis that varies (zip, or one source varying beside fixed ones);
- `shares`: Zhang et al.: scores against one source's share of a fixed total: per ability, and for the reasoning
  suite overall, per domain and per task;
- `pool`: BELLE: each category's score against the pool's total;
- `forgetting`: each ability after every stage of the multi-stage runs.

Every point is an `Estimate` (mean, 95% bootstrap interval over items and seeds, and how many of each stand behind
it). Each point of a line after its first is compared with the first on the same items (`Point.cmp`); the p-values
of one view are Holm-corrected together (`Point.p`). Without item rows a point is the mean of the stored scores and
has no interval (items = 0).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field, replace

import numpy as np

from ..data.mixture import amount_label
from .analysis import _ability_items, _ability_tasks, _compare, _recipe, _runs_by_config, item_details, item_table
from .stats import Comparison, Estimate, bootstrap_ci, holm


@dataclass
class Point:
    x: object  # the amount, share or total; (a, b) on a ratio map; the stage index
    est: Estimate
    runs: list[str]
    label: str = ""  # how x reads: "1/16", "code 25%", "300 rows", "after stage 2"
    cmp: Comparison | None = None  # against the line's first point (forgetting: the peak against the end)
    p: float | None = None  # cmp's p-value after Holm over the view


@dataclass
class Line:
    name: str  # what it follows: a recipe (rq1), an ability, a domain, a task or a category
    points: list[Point]
    group: str = ""  # the model (rq1) or the model and recipe it belongs to
    ability: str = ""
    level: str = ""  # shares: ability | domain | task; pool: category | overall
    tasks: list[str] = field(default_factory=list)
    own: bool = True  # worth a sentence in the findings (a single-source recipe: its own ability only)
    peak: Point | None = None  # forgetting: the trained stage where the ability peaked before the last


def _finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def _cell(row: dict) -> dict:
    """A run's cell (source -> {amount, unit}), stored as JSON text or given as a dict."""
    cell = row.get("cell") or {}
    if isinstance(cell, str):
        cell = json.loads(cell) if cell.strip() else {}
    return cell


def cell_amounts(row: dict) -> dict[str, float]:
    return {s: float(v["amount"] if isinstance(v, dict) else v) for s, v in _cell(row).items()}


def cell_unit(row: dict) -> str:
    cell = _cell(row)
    units = [v.get("unit") for v in cell.values() if isinstance(v, dict) and v.get("unit")]
    return units[0] if units else "fraction"


def _uniform(row: dict) -> bool:
    return len(set(cell_amounts(row).values())) <= 1


def _group_key(row: dict) -> str:
    """A recipe: everything about a configuration but its place along the design axis and its seed."""
    return json.dumps([row.get("model"), row.get("strategy"), row.get("sources"), row.get("params")],
                      sort_keys=True, default=str)


def _display(name: str, model: str, cell_label: str | None = None) -> str:
    """A configuration's recipe as a legend reads it: its cell (`cell_label`, as the planner ends the run's label
    with it; else the last word, the amount) and the "model: " prefix of multi-model studies dropped (the model is
    shown on its own)."""
    if cell_label and name.endswith(" " + cell_label):
        name = name[: -len(cell_label) - 1]
    else:
        name = _recipe(name)
    return name[len(model) + 2:] if name.startswith(f"{model}: ") else name


class Data:
    """Score rows and item rows, indexed once, with every estimate and comparison cached (a report asks for the same
    configuration from several views)."""

    def __init__(self, scores: list[dict], items: list[dict], ivs: list[dict] | None = None):
        self.scores = scores
        self.table = item_table(items)
        self.tasks = _ability_tasks(scores)
        self.values = {(r["run_id"], r["task"]): r["value"] for r in scores}
        self.configs = _runs_by_config(scores)
        self._cache: dict = {}
        for r in ivs or []:  # intervals() already bootstrapped these
            key = (tuple(r["runs"]), tuple(self.tasks.get(r["ability"], [])), id(self.table))
            self._cache[key] = Estimate(r["mean"], r["lo"], r["hi"], r["items"], r["seeds"])

    def estimate(self, runs: list[str], tasks: list[str], table=None, values=None) -> Estimate | None:
        table = self.table if table is None else table
        key = (tuple(runs), tuple(tasks), id(table))
        if key not in self._cache:
            m = _ability_items(table, runs, tasks)
            if m is not None:
                self._cache[key] = bootstrap_ci(m)
            else:
                vals = self.values if values is None else values
                per_run = [np.mean(v) for r in runs if (v := _finite(vals.get((r, t)) for t in tasks))]
                self._cache[key] = (Estimate(float(np.mean(per_run)), math.nan, math.nan, 0, len(per_run))
                                    if per_run else None)
        return self._cache[key]

    def compare(self, a_runs: list[str], b_runs: list[str], tasks: list[str], table=None) -> Comparison | None:
        """Paired test of two sets of runs on the items all of them have (seeds averaged within each side)."""
        return _compare(self.table if table is None else table, tasks, a_runs, b_runs)

    def line(self, name: str, pts: list[tuple], tasks: list[str], table=None, values=None, compare: bool = True,
             **kw) -> Line | None:
        """pts: [(x, runs, label)] in order; each point after the first is compared with the first (`compare`)."""
        points = []
        for x, runs, label in pts:
            est = self.estimate(runs, tasks, table, values)
            if est is not None and not math.isnan(est.mean):
                points.append(Point(x, est, runs, label))
        for p in points[1:] if compare else []:
            p.cmp = self.compare(p.runs, points[0].runs, tasks, table)
        return Line(name, points, tasks=tasks, **kw) if points else None


def selected(cmp: Comparison | None, pairs: int) -> Comparison | None:
    """A comparison of a pair picked after looking (the best and the worst of k cells, a peak among stages) is one
    of `pairs` comparisons that could have been picked: Bonferroni over all of them, so picking the extreme pair
    cannot manufacture significance."""
    if cmp is None or pairs <= 1:
        return cmp
    return replace(cmp, p=min(1.0, cmp.p * pairs))


def correct(points: list[Point]) -> int:
    """Holm over the compared points given (one view's family); returns the family's size."""
    compared = [p for p in points if p.cmp is not None]
    for p, adj in zip(compared, holm([p.cmp.p for p in compared])):
        p.p = adj
    return len(compared)


def _design(row: dict, ratio_groups: set[str]) -> str:
    axis = row.get("axis") or "amount"
    if row["strategy"] == "base":
        return "base"
    if axis.endswith(" share"):
        return "share"
    if axis == "total":
        return "pool"
    if _group_key(row) in ratio_groups or axis != "amount":
        return "ratio"
    return "amount"


def _ratio_groups(scores: list[dict]) -> set[str]:
    """Recipes trained on per-source amounts: some cell of theirs gives its sources different amounts (a product of
    per-source lists puts such cells on the "amount" axis too, beside its all-equal ones)."""
    return {_group_key(r) for r in scores if len(cell_amounts(r)) > 1 and not _uniform(r)
            and not (r.get("axis") or "amount").endswith(" share") and r.get("axis") != "total"}


def _by_design(d: Data, design: str) -> dict[str, list[dict]]:
    """Configurations of one design, grouped by recipe (model, strategy, sources, params)."""
    ratio_groups = _ratio_groups(d.scores)
    out: dict = defaultdict(list)
    for c in d.configs.values():
        if _design(c["row"], ratio_groups) == design:
            out[_group_key(c["row"])].append(c)
    return out


# ------------------------------------------------------------------------------------------------------- RQ1


def rq1(d: Data) -> dict | None:
    """Lines of score against amount (grid designs), one per (model, recipe) and ability; the base models'
    estimates per (model, ability)."""
    groups = _by_design(d, "amount")
    bases = {}
    for c in _by_design(d, "base").values():
        for cfg in c:
            for ability, ts in d.tasks.items():
                est = d.estimate(cfg["runs"], ts)
                if est is not None:
                    bases[(cfg["row"]["model"], ability)] = est
    lines = []
    for cs in groups.values():
        cs = sorted((c for c in cs if c["row"]["amount"] > 0), key=lambda c: c["row"]["amount"])
        if not cs:
            continue
        row = cs[0]["row"]
        model, sources = row["model"], row["sources"]
        unit = cell_unit(row)
        for ability, ts in sorted(d.tasks.items()):
            line = d.line(_display(cs[0]["name"], model),
                          [(c["row"]["amount"], c["runs"], amount_label(c["row"]["amount"], unit)) for c in cs], ts,
                          group=model, ability=ability)
            if line:
                # a single-source recipe speaks for its own ability; a mixture for all of them
                line.own = "+" in sources or sources not in d.tasks or sources == ability
                lines.append(line)
    trained = any(c["row"]["strategy"] != "base" for c in d.configs.values())
    if not lines and (not bases or trained):  # base lines alone only when the study has nothing else to show
        return None
    lines.sort(key=lambda ln: (ln.ability, ln.group, ln.name))
    family = correct([p for ln in lines for p in ln.points])
    return {"lines": lines, "bases": bases, "family": family}


# ------------------------------------------------------------------------------------------------------- RQ3


def ratio(d: Data) -> list[dict]:
    """Per-source designs, one entry per recipe: {"kind": "grid", "a", "b", "a_values", "b_values", "cells":
    {ability: {(a, b): Point}}, "best_worst": {ability: [best, worst (its cmp: worst minus best)]}} for two sources
    varying over their product; else (zip, one source varying, or more than two over a product) {"kind": "line",
    "lines": [a Line per ability along the cells' axis value]}."""
    out = []
    for cs in _by_design(d, "ratio").values():
        cs = [c for c in cs if len(cell_amounts(c["row"])) > 1]
        if len(cs) < 2:
            continue
        row = cs[0]["row"]
        model, unit = row["model"], cell_unit(row)
        amts = [cell_amounts(c["row"]) for c in cs]
        sources = list(amts[0])
        varying = [s for s in sources if len({a.get(s) for a in amts}) > 1]
        fixed = {s: amts[0][s] for s in sources if s not in varying}
        entry = {"model": model, "recipe": _display(cs[0]["name"], model, _cell_label(amts[0], unit)),
                 "varying": varying, "fixed": fixed,
                 "unit": unit, "sources": sources}
        values = {s: sorted({a[s] for a in amts if s in a}) for s in varying}
        combos = {tuple(a.get(s) for s in varying) for a in amts}
        if len(varying) == 2 and len(combos) == len(values[varying[0]]) * len(values[varying[1]]) == len(cs):
            a, b = varying
            entry.update(kind="grid", a=a, b=b, a_values=values[a], b_values=values[b], cells={}, best_worst={})
            for ability, ts in sorted(d.tasks.items()):
                cells = {}
                for c, am in zip(cs, amts):
                    est = d.estimate(c["runs"], ts)
                    if est is not None and not math.isnan(est.mean):
                        cells[(am[a], am[b])] = Point((am[a], am[b]), est, c["runs"], _cell_label(am, unit))
                if len(cells) < 2:
                    continue
                entry["cells"][ability] = cells
                best = max(cells.values(), key=lambda p: p.est.mean)
                worst = min(cells.values(), key=lambda p: p.est.mean)
                n = len(cells)
                entry["best_worst"][ability] = [best, Point(worst.x, worst.est, worst.runs, worst.label,
                                                            selected(d.compare(worst.runs, best.runs, ts),
                                                                     n * (n - 1) // 2))]
            correct([bw[1] for bw in entry["best_worst"].values()])
            if entry["cells"]:
                out.append(entry)
        else:
            order = sorted(zip(cs, amts), key=lambda ca: (ca[0]["row"]["amount"], _cell_label(ca[1], unit)))
            lines = [d.line(ability, [(c["row"]["amount"], c["runs"], _cell_label(am, unit)) for c, am in order], ts,
                            group=entry["recipe"], ability=ability) for ability, ts in sorted(d.tasks.items())]
            lines = [ln for ln in lines if ln and len(ln.points) > 1]
            if lines:
                correct([p for ln in lines for p in ln.points])
                out.append({**entry, "kind": "line", "lines": lines, "axis": row.get("axis") or "+".join(varying)})
    return out


def _cell_label(amounts: dict[str, float], unit: str) -> str:
    return " + ".join(f"{s} {amount_label(a, unit)}" for s, a in amounts.items())


# ----------------------------------------------------------------------------------------------- Zhang et al.


def _domain_of(scores: list[dict]) -> dict[str, str]:
    """task -> reasoning domain, from the stored rows or the suite's own table."""
    from ..evaluate.reasoning import DOMAIN_OF

    out = {}
    for r in scores:
        dom = r.get("domain") or DOMAIN_OF.get(r["task"], "")
        if dom and (r["task"] in DOMAIN_OF or r["ability"] == "reasoning"):
            out[r["task"]] = dom
    return out


def shares(d: Data) -> list[dict]:
    """Mix designs (a source's share of a fixed total), one entry per recipe: lines per ability and, with the
    reasoning suite, per domain and per task, against the share."""
    domains = _domain_of(d.scores)
    out = []
    for cs in _by_design(d, "share").values():
        cs = sorted(cs, key=lambda c: c["row"]["amount"])
        if len({c["row"]["amount"] for c in cs}) < 2:
            continue
        row = cs[0]["row"]
        source = (row.get("axis") or " share")[: -len(" share")]
        pts = [(c["row"]["amount"], c["runs"], f"{source} {100 * c['row']['amount']:g}%") for c in cs]
        entry = {"model": row["model"], "recipe": _display(cs[0]["name"], row["model"], pts[0][2]), "source": source,
                 "lines": [], "reasoning": bool(domains)}
        series = [("ability", a, ts) for a, ts in sorted(d.tasks.items())]
        by_domain = defaultdict(list)
        for t, dom in domains.items():
            by_domain[dom].append(t)
        series += [("domain", dom, sorted(ts)) for dom, ts in sorted(by_domain.items())]
        series += [("task", t, [t]) for t in sorted(domains, key=lambda t: (domains[t], t))]
        for level, name, ts in series:
            line = d.line(name, pts, ts, group=entry["recipe"], level=level,
                          ability=name if level == "ability" else "reasoning")
            if line:
                # with the suite, the findings speak of reasoning overall and its domains; else of every ability
                line.own = level == "domain" or (level == "ability" and (not domains or name == "reasoning"))
                entry["lines"].append(line)
        if entry["lines"]:
            correct([p for ln in entry["lines"] for p in ln.points])
            out.append(entry)
    return out


# ------------------------------------------------------------------------------------------------------ BELLE


def pool(d: Data, items: list[dict]) -> list[dict]:
    """Pool designs (the union scaled as a whole): for each recipe and each task that scores per category, a line
    per category (and the task overall) against the total."""
    cats: dict = defaultdict(lambda: defaultdict(dict))  # task -> category -> {(run, task): {item: score}}
    for it in items:
        det = item_details(it)
        c, s = det.get("category"), it.get("score")
        if c is None or s is None or det.get("excluded"):
            continue
        cats[it["task"]][str(c)].setdefault((it["run_id"], it["task"]), {})[str(it["item_id"])] = float(s)
    out = []
    for cs in _by_design(d, "pool").values():
        cs = sorted(cs, key=lambda c: c["row"]["amount"])
        if len({c["row"]["amount"] for c in cs}) < 2:
            continue
        row = cs[0]["row"]
        unit = cell_unit(row)
        pts = [(c["row"]["amount"], c["runs"], amount_label(c["row"]["amount"], unit)) for c in cs]
        run_ids = {r for c in cs for r in c["runs"]}
        for task in sorted({r["task"] for r in d.scores}):
            rows = [r for r in d.scores if r["task"] == task and r["run_id"] in run_ids]
            names = sorted({k.split(":", 1)[1] for r in rows for k in (r.get("summary") or {})
                            if k.startswith("category:")})
            if not names:
                continue
            recipe = _display(cs[0]["name"], row["model"], f"{pts[0][2]} pooled")
            entry = {"model": row["model"], "recipe": recipe, "task": task,
                     "unit": unit, "lines": []}
            for name in names:
                values = {(r["run_id"], task): (r.get("summary") or {}).get(f"category:{name}") for r in rows}
                line = d.line(name, pts, [task], cats[task].get(name, {}), values, group=entry["recipe"],
                              level="category", ability=rows[0]["ability"])
                if line:
                    entry["lines"].append(line)
            overall = d.line("overall", pts, [task], group=entry["recipe"], level="overall",
                             ability=rows[0]["ability"])
            if overall:
                entry["lines"].append(overall)
            if entry["lines"]:
                correct([p for ln in entry["lines"] for p in ln.points])
                out.append(entry)
    return out


# ------------------------------------------------------------------------------------------------- forgetting


def forgetting(stage_scores: list[dict], items: list[dict]) -> dict | None:
    """Multi-stage runs: a line per (configuration, ability) over stage 0 (before SFT, when evaluated) to the last;
    the last point is compared with the stage where the ability peaked (`Point.cmp`: end minus peak). And per
    ability, at the end, the best configuration against the worst (`finals`)."""
    rows = [r for r in stage_scores if r.get("stages", 1) > 1]
    if not rows:
        return None
    by_eval, by_run = defaultdict(list), defaultdict(list)
    for it in items:
        if it.get("eval_id"):
            by_eval[it["eval_id"]].append(it)
        by_run[(it.get("run_id"), it.get("task"))].append(it)
    stage_items, values = [], {}
    for r in rows:
        key = f"{r['run_id']}@{int(r['stage_index'])}"
        # a final stage's items may come without their eval_id (the report's own item rows): by run and task
        its = by_eval.get(r.get("eval_id")) or (by_run.get((r["run_id"], r["task"]), []) if r.get("final") else [])
        stage_items += [{**it, "run_id": key, "task": r["task"]} for it in its]
        values[(key, r["task"])] = r["value"]
    d = Data(rows, stage_items)
    d.values = values  # the stored score of each stage, where a stage has no item rows
    lines, finals = [], {}
    configs = _runs_by_config(rows)
    for ability, ts in sorted(d.tasks.items()):
        ends = []
        for c in configs.values():
            stages = sorted({int(r["stage_index"]) for r in rows if r["run_id"] in c["runs"]})
            pts = [(i, [f"{rid}@{i}" for rid in c["runs"]], "base" if i == 0 else f"after stage {i}") for i in stages]
            line = d.line(c["name"], pts, ts, compare=False, group=c["name"], ability=ability)
            if not line or len(line.points) < 2:
                continue
            trained = [p for p in line.points if p.x != 0]
            if not trained:
                continue
            end = trained[-1]
            line.peak = max(trained[:-1] or trained, key=lambda p: p.est.mean)
            if line.peak is not end:
                end.cmp = selected(d.compare(end.runs, line.peak.runs, ts), len(trained) - 1)
            lines.append(line)
            ends.append((line.name, end))
        if len(ends) > 1:
            best = max(ends, key=lambda e: e[1].est.mean)
            worst = min(ends, key=lambda e: e[1].est.mean)
            w = worst[1]
            n = len(ends)
            finals[ability] = {"best": best, "worst": (worst[0], Point(w.x, w.est, w.runs, w.label,
                                                                       selected(d.compare(w.runs, best[1].runs, ts),
                                                                                n * (n - 1) // 2)))}
    family = correct([p for ln in lines for p in ln.points])
    correct([f["worst"][1] for f in finals.values()])
    return {"lines": lines, "finals": finals, "family": family}
