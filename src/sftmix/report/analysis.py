"""The papers' questions, answered from item-level results with how sure the study can be.

Input: the report's score rows (one per run and task) and item rows (one per run, task and item, with its score).
Each analysis returns a report section (tables the HTML renders and CSV files under tables/), drawn only when the
study has the runs for it:

- intervals: every (run, ability) score with a bootstrap interval over items (and seeds, when a configuration was
  trained with several);
- RQ1 fits: score against log(amount) and a saturating power law per ability, model and recipe, with the error of
  predicting the largest amount from the smaller ones;
- RQ2 mixed vs single: at each amount, the multi-task run against each single-source run on that source's own
  ability, paired on the same items, with the crossover amount where mixing turns from help to harm;
- RQ4 strategies: DMT's Table 1 layout (a row per strategy, a column per ability) with intervals, each strategy
  compared with multi-task on the same items.

Every p-value of one report is Holm-corrected together with the others of its table, and every claim says how many
items and seeds stand behind it.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict

import numpy as np

from .stats import ALPHA, bootstrap_ci, fit_log, fit_power, holdout, holm, paired_test

_SEED = re.compile(r" seed \d+$")


def _config_key(row: dict) -> str:
    """What a configuration is, seeds aside: the run's stored description where the store gives it (two strategy
    entries that differ only in params, or cells that share an x, stay apart), else its label without the seed."""
    if "params" in row or "cell" in row:
        return json.dumps([row.get("model"), row.get("strategy"), row.get("sources"), row.get("params"),
                           row.get("axis"), row.get("cell")], sort_keys=True, default=str)
    return _SEED.sub("", row["label"])


def item_details(item: dict) -> dict:
    """An item row's `details` (stored as JSON text) as a dict; {} when absent or unreadable."""
    d = item.get("details")
    if isinstance(d, str):
        try:
            d = json.loads(d)
        except ValueError:
            return {}
    return d if isinstance(d, dict) else {}


def _excluded(item: dict) -> bool:
    """A judged item with no parseable judgement: left out of the task's mean, so left out here too."""
    return bool(item_details(item).get("excluded"))


def item_table(items: list[dict]) -> dict[tuple[str, str], dict[str, float]]:
    """(run_id, task) -> {item_id: score}."""
    out: dict = defaultdict(dict)
    for it in items:
        s = it.get("score")
        if s is None or (isinstance(s, float) and math.isnan(s)) or _excluded(it):
            continue
        out[(it["run_id"], it["task"])][str(it["item_id"])] = float(s)
    return out


def _ability_tasks(scores: list[dict]) -> dict[str, list[str]]:
    out: dict = defaultdict(set)
    for r in scores:
        out[r["ability"]].add(r["task"])
    return {a: sorted(t) for a, t in out.items()}


def _ability_items(table, runs: list[str], tasks: list[str]) -> np.ndarray | None:
    """[len(runs), items] with the item scores scaled so that a row's mean is the mean of its per-task means."""
    blocks = []
    for t in tasks:
        common = None
        for r in runs:
            ids = set(table.get((r, t), {}))
            common = ids if common is None else common & ids
        if common:
            ids = sorted(common)
            blocks.append(np.array([[table[(r, t)][i] for i in ids] for r in runs], dtype=float))
    if not blocks:
        return None
    total = sum(b.shape[1] for b in blocks)
    # weight each task's items so that every task counts the same in the row mean
    return np.concatenate([b * (total / (len(blocks) * b.shape[1])) for b in blocks], axis=1)


def _fmt_ci(est) -> str:
    if est is None or math.isnan(est.mean):
        return "–"
    return f"{100 * est.mean:.1f} [{100 * est.lo:.1f}, {100 * est.hi:.1f}]"


def _runs_by_config(scores: list[dict]) -> dict[str, dict]:
    """configuration -> {"name": its label without the seed, "runs": [run_id...], "row": a representative row}."""
    out: dict = {}
    for r in scores:
        c = out.setdefault(_config_key(r), {"name": _SEED.sub("", r["label"]), "runs": [], "row": r})
        if r["run_id"] not in c["runs"]:
            c["runs"].append(r["run_id"])
    return out


def _recipe(name: str) -> str:
    """A run's label without its amount (labels end with the cell's amount: "single math 1/4" -> "single math")."""
    return name.rsplit(" ", 1)[0] if " " in name else name


def _on_amount_axis(row: dict) -> bool:
    """On the grid of amounts: every source of the cell at the same amount (a product of per-source lists puts its
    cells on the "amount" axis too, but those are ratio points, not amounts)."""
    cell = row.get("cell") or {}
    if isinstance(cell, str):
        cell = json.loads(cell) if cell.strip() else {}
    amounts = {float(v["amount"]) if isinstance(v, dict) else float(v) for v in cell.values()}
    return row.get("axis", "amount") in ("amount", None, "") and len(amounts) <= 1


def intervals(scores: list[dict], items: list[dict]) -> list[dict]:
    """One row per (configuration, ability): mean with a 95% interval, items and seeds behind it."""
    table = item_table(items)
    tasks = _ability_tasks(scores)
    out = []
    for key, c in _runs_by_config(scores).items():
        for ability, ts in tasks.items():
            m = _ability_items(table, c["runs"], ts)
            if m is None:
                continue
            est = bootstrap_ci(m)
            out.append({"config": c["name"], "key": key, "on_amount_axis": _on_amount_axis(c["row"]),
                        "params": json.dumps(c["row"].get("params"), sort_keys=True, default=str), "model": c["row"]["model"], "strategy": c["row"]["strategy"],
                        "sources": c["row"]["sources"], "amount": c["row"]["amount"], "ability": ability,
                        "mean": est.mean, "lo": est.lo, "hi": est.hi, "items": est.items, "seeds": est.seeds,
                        "runs": c["runs"]})
    return out


def _compare(table, tasks, a_runs, b_runs):
    """Paired test of two configurations on the items both have (seeds averaged within each side)."""
    both = _ability_items(table, a_runs + b_runs, tasks)
    if both is None:
        return None
    return paired_test(both[: len(a_runs)], both[len(a_runs):])


def strategy_table(scores: list[dict], items: list[dict], reference: str = "multitask") -> dict | None:
    """RQ4 (DMT Table 1): a row per strategy run at the study's largest amount, a column per ability; each cell the
    score with its interval and, for strategies other than the reference, the paired difference from it. Single-source
    runs train a different model per source, not one model a strategy produces: they are RQ2's, not this table's."""
    rows = [r for r in scores if r["strategy"] not in ("base", "", "single")]
    if len({r["strategy"] for r in rows}) < 2:
        return None
    table = item_table(items)
    tasks = _ability_tasks(scores)
    configs = _runs_by_config(rows)
    by_model: dict = defaultdict(list)
    for c in configs.values():
        by_model[c["row"]["model"]].append((c["name"], c))
    body, comparisons = [], []
    for model, cs in sorted(by_model.items()):
        top = max(c["row"]["amount"] for _, c in cs)
        cs = [(n, c) for n, c in cs if c["row"]["amount"] == top]
        ref = next(((n, c) for n, c in cs if c["row"]["strategy"] == reference), None)
        for name, c in sorted(cs, key=lambda x: (x[1]["row"]["strategy"] != reference, x[0])):
            cells = []
            for ability, ts in sorted(tasks.items()):
                m = _ability_items(table, c["runs"], ts)
                est = bootstrap_ci(m) if m is not None else None
                cell = {"text": _fmt_ci(est), "p": None, "est": est}
                if ref is not None and name != ref[0] and m is not None:
                    cmp_ = _compare(table, ts, c["runs"], ref[1]["runs"])
                    if cmp_ is not None:
                        ref_m = _ability_items(table, ref[1]["runs"], ts)
                        cell.update(cmp=cmp_, run=name, ref=ref[0], ability=ability, ref_est=bootstrap_ci(ref_m),
                                    seeds=min(len(c["runs"]), len(ref[1]["runs"])))
                        comparisons.append(cell)
                cells.append(cell)
            body.append({"name": name, "cells": cells, "seeds": len(c["runs"])})
    adjusted = holm([c["cmp"].p for c in comparisons])
    for cell, p in zip(comparisons, adjusted):
        d = cell["cmp"]
        cell["p"] = p
        mark = " *" if p < ALPHA else ""
        cell["text"] += f" ({100 * d.diff:+.1f}{mark})"
    abilities = sorted(tasks)
    n_items = {a: _n_items(table, ts) for a, ts in tasks.items()}
    return {
        "caption": f"Strategies (RQ4): score % [95% interval]; (difference from {reference}, paired on the same "
                   f"items; * significant after Holm's correction over {len(comparisons)} comparisons)",
        "columns": ["run", *[f"{a} (n={n_items[a]})" for a in abilities], "seeds"],
        "rows": [[b["name"], *[c["text"] for c in b["cells"]], str(b["seeds"])] for b in body],
        "csv": [{"run": b["name"], "ability": a, "cell": c["text"],
                 **{k: getattr(c["est"], k, None) for k in ("mean", "lo", "hi", "items")}, "seeds": b["seeds"],
                 "diff": c["cmp"].diff if "cmp" in c else None, "p_holm": c["p"],
                 "significant": c["p"] is not None and c["p"] < ALPHA}
                for b in body for a, c in zip(abilities, b["cells"])],
        # each comparison with the reference: run, ref, ability, est, ref_est, cmp, p (Holm), seeds
        "compared": comparisons,
        "legend": f"* significant at the 5% level after Holm's correction over the {len(comparisons)} comparisons "
                  f"of this table; differences are paired on the same items (points).",
    }


def _n_items(table, tasks) -> int:
    per = defaultdict(set)
    for (run, task), d in table.items():
        if task in tasks:
            per[task] |= set(d)
    return sum(len(v) for v in per.values())


def mixed_vs_single(scores: list[dict], items: list[dict]) -> dict | None:
    """RQ2: at each amount, the multi-task run against the single-source run of each source, on that source's
    ability (a source's ability is the one its single run's tasks are named for; here: the source name when it is
    an ability). Returns the table and, per ability, the crossover amount."""
    table = item_table(items)
    tasks = _ability_tasks(scores)
    configs = _runs_by_config(scores)
    on_axis = [c for c in configs.values() if _on_amount_axis(c["row"])]
    mixed = [c for c in on_axis if c["row"]["strategy"] == "multitask"]
    single = [c for c in on_axis if c["row"]["strategy"] == "single"]
    rows, comps = [], []
    for c in single:
        model, amount, source = c["row"]["model"], c["row"]["amount"], c["row"]["sources"]
        if source not in tasks:
            continue
        for m in mixed:
            r = m["row"]
            # the mixed run at the same amount whose mixture contains this source (a study may mix several subsets)
            if r["model"] != model or r["amount"] != amount or (r["sources"] and source not in r["sources"].split("+")):
                continue
            cmp_ = _compare(table, tasks[source], m["runs"], c["runs"])
            if cmp_ is None:
                continue
            rows.append({"model": model, "ability": source, "amount": amount, "mixed": _recipe(m["name"]), "cmp": cmp_,
                         "seeds": min(len(m["runs"]), len(c["runs"]))})
            comps.append(cmp_.p)
    if not rows:
        return None
    for r, p in zip(rows, holm(comps)):
        r["p_holm"] = p
    rows.sort(key=lambda r: (r["model"], r["ability"], r["mixed"], r["amount"]))
    crossover = {}
    for key in {(r["model"], r["ability"]) for r in rows}:
        seq = [r for r in rows if (r["model"], r["ability"]) == key]
        if len({r["mixed"] for r in seq}) == 1:  # one mixed recipe per ability: one curve, one crossover
            crossover[key] = _crossover(seq)
    return {"rows": rows, "crossover": crossover}


def _crossover(seq: list[dict]):
    """The first amount (ascending) where mixing's effect changes sign relative to the smallest amount; None if it
    never does."""
    signs = [np.sign(r["cmp"].diff) for r in seq]
    first = next((s for s in signs if s != 0), 0)
    for r, s in zip(seq, signs):
        if s != 0 and s != first:
            return r["amount"]
    return None


def scaling_fits(scores: list[dict], items: list[dict]) -> list[dict]:
    """RQ1: per (model, recipe, ability), both fits over the amounts and their error on the largest amount."""
    return scaling_fits_of(intervals(scores, items))


def scaling_fits_of(rows: list[dict]) -> list[dict]:
    """`scaling_fits` from `intervals` rows: one curve per recipe (model, strategy, sources, params) along amount."""
    groups: dict = defaultdict(list)
    for r in rows:
        if r["strategy"] in ("base", "") or r["amount"] <= 0 or not r["on_amount_axis"]:
            continue
        groups[(r["model"], r["strategy"], r["sources"], r["params"], r["ability"])].append(r)
    out = []
    for (model, strategy, sources, _params, ability), rs in sorted(groups.items()):
        x = np.array([r["amount"] for r in rs])
        y = np.array([r["mean"] for r in rs])
        if len(np.unique(x)) < 2:
            continue
        entry = {"model": model, "recipe": _recipe(rs[0]["config"]) or strategy, "ability": ability,
                 "amounts": len(np.unique(x))}
        for kind, fit in (("log", fit_log(x, y)), ("power", fit_power(x, y))):
            entry[kind] = fit
            entry[f"{kind}_holdout"] = holdout(x, y, kind)
        out.append(entry)
    return out
