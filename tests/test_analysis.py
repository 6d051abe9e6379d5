"""The report's analyses on item-level results: strategy table (RQ4), mixed vs single (RQ2), scaling fits (RQ1)."""

import re

import numpy as np

from sftmix.report import analysis, write_report


def _runs(spec, n_items=120, seed=0):
    """spec: [(label, strategy, sources, amount, {ability: p_correct})] -> score rows and item rows. Items are
    shared across runs (same ids), and a run with a higher p solves a superset of what a lower one solves."""
    rng = np.random.default_rng(seed)
    difficulty = {a: rng.random(n_items) for a in ("math", "code")}
    scores, items = [], []
    for k, (label, strategy, sources, amount, ps) in enumerate(spec):
        rid = f"r{k}"
        for ability, p in ps.items():
            sc = (difficulty[ability] < p).astype(float)
            scores.append({"run_id": rid, "label": label, "model": "m", "strategy": strategy, "sources": sources,
                           "amount": amount, "seed": 0, "task": ability, "ability": ability, "metric": "accuracy",
                           "value": float(sc.mean()), "n": n_items})
            items += [{"run_id": rid, "task": ability, "item_id": f"{ability}-{i}", "score": float(s),
                       "prompt": "q", "prediction": "a", "reference": "r"} for i, s in enumerate(sc)]
    return scores, items


def test_strategy_table_marks_significant_differences_from_multitask():
    scores, items = _runs([
        ("multitask 1", "multitask", "math+code", 1.0, {"math": 0.5, "code": 0.5}),
        ("sequential 1", "sequential", "math+code", 1.0, {"math": 0.52, "code": 0.2}),  # code forgotten
        ("dmt k=1/4 1", "dmt", "math+code", 1.0, {"math": 0.5, "code": 0.48}),
    ])
    t = analysis.strategy_table(scores, items)
    rows = {r[0]: r for r in t["rows"]}
    assert t["columns"][1:3] == ["code (n=120)", "math (n=120)"]
    assert re.search(r"\(-\d+\.\d \*\)$", rows["sequential 1"][1])  # code: a real drop, significant after correction
    assert "*" not in rows["sequential 1"][2] and "*" not in rows["dmt k=1/4 1"][1]
    assert "(" not in rows["multitask 1"][1]  # the reference is not compared with itself
    assert "4 comparisons" in t["caption"]


def test_mixed_vs_single_finds_the_crossover():
    spec = []
    for amount, mixed, single in ((0.25, 0.4, 0.3), (0.5, 0.5, 0.45), (1.0, 0.5, 0.7)):
        spec.append((f"multitask {amount}", "multitask", "", amount, {"math": mixed}))
        spec.append((f"single math {amount}", "single", "math", amount, {"math": single}))
    scores, items = _runs(spec)
    mv = analysis.mixed_vs_single(scores, items)
    diffs = [round(r["cmp"].diff, 2) for r in mv["rows"]]
    assert [r["amount"] for r in mv["rows"]] == [0.25, 0.5, 1.0]
    assert diffs[0] > 0 > diffs[2]
    assert mv["crossover"][("m", "math")] == 1.0
    assert mv["rows"][2]["p_holm"] < 0.05


def test_fits_and_report_sections(tmp_path):
    spec = [(f"single math {a}", "single", "math", a, {"math": 0.2 + 0.08 * np.log2(a * 16)})
            for a in (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1)]
    spec += [(f"multitask {a}", "multitask", "", a, {"math": 0.25}) for a in (1 / 16, 1)]
    scores, items = _runs(spec, n_items=400)
    fits = analysis.scaling_fits(scores, items)
    f = next(x for x in fits if x["recipe"] == "single math")
    assert f["amounts"] == 5 and f["log"].params[1] > 0.05 and abs(f["log_holdout"]["error"]) < 0.05
    path = write_report(tmp_path, scores, items, {"name": "t"})
    html = path.read_text()
    assert "Mixed vs single source (RQ2)" in html and "Scaling fits (RQ1)" in html
    for name in ("intervals.csv", "mixed_vs_single.csv", "fits.csv"):
        assert (tmp_path / "tables" / name).read_text().count("\n") > 1


def test_unjudged_items_are_left_out_and_configs_differing_in_params_stay_apart():
    scores, items = _runs([
        ("multitask 1", "multitask", "math+code", 1.0, {"math": 0.5}),
        ("dmt 1", "dmt", "math+code", 1.0, {"math": 0.5}),
        ("dmt 1", "dmt", "math+code", 1.0, {"math": 0.5}),
    ])
    for r in scores:
        r.update(params={"k": {"r1": 0.25, "r2": 0.5}.get(r["run_id"])}, axis="amount", cell={})
    for it in items:
        if it["run_id"] == "r0" and int(it["item_id"].split("-")[1]) < 20:
            it["score"] = 0.0
            it["details"] = '{"excluded": true}'  # a judge gave no parseable verdict: not a zero
    ivs = analysis.intervals(scores, items)
    assert len([r for r in ivs if r["config"] == "dmt 1"]) == 2  # two configurations, not two seeds of one
    assert all(r["seeds"] == 1 for r in ivs)
    assert next(r for r in ivs if r["config"] == "multitask 1")["items"] == 100
