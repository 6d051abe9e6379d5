"""`sftmix recommend` on item-level results: the split follows the fits and the weights, strategies carry their
paired difference from multi-task, every prediction has an interval, and bad requests are clear errors."""

import numpy as np
import pytest

from sftmix.errors import SftmixError
from sftmix.report.recommend import parse_weights, recommend, render, to_json

SOURCES = ("math", "code", "general")
N_ITEMS = 200


def _study(curves, extra=(), fixed=None, seeds=(0,)):
    """curves: ability -> f(rows of its own source) for multitask runs at 8, 32 and 128 rows per source; extra:
    [(label, strategy, n_stages, rows per source, {ability: score})]. Items are shared; a higher score solves a
    superset of the items a lower one solves, as a stronger model does."""
    rng = np.random.default_rng(0)
    difficulty = {a: rng.random(N_ITEMS) for a in SOURCES}
    runs, scores, items, manifests = [], [], [], {}

    def add(rid, label, strategy, stages, rows, ps, seed=0):
        sids = [f"{rid}-s{i}" for i in range(stages)]
        per = {s: (fixed or {}).get(s, rows) for s in SOURCES}
        for sid in sids:
            manifests[sid] = {"sources": {s: {"rows": n, "unique_rows": n, "tokens": 90 * n,
                                              "source_rows": 128} for s, n in per.items()}} if rows else {}
        runs.append({"run_id": rid, "label": label, "model": "m", "strategy": strategy, "stages": sids if rows else [],
                     "seed": seed, "amount": rows / 128, "sources": ""})
        for a, p in ps.items():
            # another seed is another draw around the same solve rate
            sc = (difficulty[a] < p).astype(float) if seed == 0 else (rng.random(N_ITEMS) < p).astype(float)
            scores.append({"run_id": rid, "label": label, "model": "m", "strategy": strategy, "sources": "",
                           "amount": rows / 128, "seed": seed, "task": a, "ability": a, "value": sc.mean()})
            items.extend({"run_id": rid, "task": a, "item_id": f"{a}{i}", "score": float(s)} for i, s in enumerate(sc))

    add("base", "base m", "base", 0, 0, {a: 0.05 for a in SOURCES})
    for seed in seeds:
        for rows in (8, 32, 128):
            add(f"mt{rows}-{seed}", f"multitask {rows}" + (f" seed {seed}" if len(seeds) > 1 else ""), "multitask", 1,
                rows, {a: f((fixed or {}).get(a, rows)) for a, f in curves.items()}, seed)
        for k, (label, strategy, stages, rows, ps) in enumerate(extra):
            add(f"x{k}-{seed}", label + (f" seed {seed}" if len(seeds) > 1 else ""), strategy, stages, rows, ps, seed)
    return scores, items, runs, manifests


def _log(a, b):
    return lambda n: a + b * np.log(n)


CURVES = {"math": _log(0.0, 0.15), "code": _log(-0.1, 0.15), "general": _log(0.1, 0.05)}


def test_the_split_follows_the_weights_and_every_prediction_has_an_interval():
    scores, items, runs, manifests = _study(CURVES)
    abilities = {"math": "math", "code": "code", "general": "general"}
    only_code = recommend(scores, items, runs, manifests, abilities, 150, {"math": 0, "code": 1, "general": 0})
    top = only_code["candidates"][0]
    assert top.strategy == "multitask" and top.allocation["code"] == 128  # all it has
    assert sum(top.allocation.values()) == 150  # the rest is spent too: a zero weight is a tie, not a loss
    balanced = recommend(scores, items, runs, manifests, abilities, 150)
    alloc = balanced["candidates"][0].allocation
    # equal log slopes for math and code, a flat one for general: general gets the least
    assert alloc["general"] < alloc["math"] and alloc["general"] < alloc["code"]
    for c in balanced["candidates"]:
        for point, lo, hi in [*c.predicted.values(), c.total]:
            assert 0 <= lo <= point <= hi <= 1 and hi - lo > 0.01
    # the prediction is the log fit of the measured scores, at the allocation
    measured = [(r["value"], 8 * 4 ** k) for k, r in enumerate(r for r in scores if r["strategy"] == "multitask"
                                                               and r["ability"] == "math")]
    b, a = np.polyfit(np.log([x for _, x in measured]), [y for y, _ in measured], 1)
    assert balanced["candidates"][0].predicted["math"][0] == pytest.approx(a + b * np.log(alloc["math"]), abs=1e-6)
    assert balanced["items"] == {"math": N_ITEMS, "code": N_ITEMS, "general": N_ITEMS}


def test_a_strategy_carries_its_paired_difference_from_multitask():
    at_full = {a: CURVES[a](128) for a in SOURCES}
    dmt = {**at_full, "code": at_full["code"] + 0.12, "general": at_full["general"] - 0.02}
    scores, items, runs, manifests = _study(CURVES, [("dmt k=1/4 128", "dmt", 2, 128, dmt)])
    rec = recommend(scores, items, runs, manifests, {s: s for s in SOURCES}, 300, {"math": 1, "code": 1, "general": 0})
    by = {c.strategy: c for c in rec["candidates"]}
    assert set(by) == {"multitask", "dmt k=1/4"}
    assert by["dmt k=1/4"].allocation == by["multitask"].allocation
    diff = by["dmt k=1/4"].predicted["code"][0] - by["multitask"].predicted["code"][0]
    assert diff == pytest.approx(0.12, abs=0.02)
    assert rec["candidates"][0].strategy == "dmt k=1/4"
    assert any("dmt k=1/4 128 vs multitask 128 (paired)" in r for r in by["dmt k=1/4"].rests_on)
    text = render(rec)
    assert text.splitlines()[1].startswith("Recommended: dmt k=1/4 with")
    assert "Items behind each ability" in text and "Rests on: multitask 8" in text
    js = to_json(rec)
    assert js["candidates"][0]["weighted"]["lo"] <= js["candidates"][0]["weighted"]["score"]


def test_beyond_the_largest_amount_is_called_an_extrapolation():
    scores, items, runs, manifests = _study(CURVES)
    for m in manifests.values():
        for info in m.get("sources", {}).values():
            info["source_rows"] = 10_000
    rec = recommend(scores, items, runs, manifests, {s: s for s in SOURCES}, 3000)
    assert rec["candidates"][0].extrapolated
    assert "extrapolation" in render(rec)


def test_bad_requests_are_clear_errors():
    scores, items, runs, manifests = _study(CURVES)
    with pytest.raises(SftmixError, match="no ability 'mth'"):
        parse_weights("mth=1", ["code", "general", "math"])
    with pytest.raises(SftmixError, match="not a number"):
        parse_weights("math=x", ["math"])
    with pytest.raises(SftmixError, match="above 0"):
        parse_weights("math=0", ["math"])
    with pytest.raises(SftmixError, match="positive"):
        recommend(scores, items, runs, manifests, {}, 0)
    one = [r for r in runs if r["run_id"] in ("base", "mt128-0")]
    with pytest.raises(SftmixError, match="needs two amounts"):
        recommend(scores, items, one, manifests, {}, 100)
    with pytest.raises(SftmixError, match="no model 'x'"):
        recommend(scores, items, runs, manifests, {}, 100, model="x")


def test_weights_not_named_stay_at_one():
    assert parse_weights("math=2", ["code", "general", "math"]) == {"code": 1.0, "general": 1.0, "math": 2.0}


def test_a_source_held_fixed_is_predicted_flat_and_seeds_are_all_paired():
    at_full = {a: CURVES[a](128) for a in SOURCES}
    dmt = {**at_full, "code": at_full["code"] + 0.1}
    scores, items, runs, manifests = _study(CURVES, [("dmt k=1/4 128", "dmt", 2, 128, dmt)], fixed={"general": 128},
                                            seeds=(0, 1))
    rec = recommend(scores, items, runs, manifests, {s: s for s in SOURCES}, 300, unit="tokens")
    assert "flat" in rec["fits"]["general"] and "ln(x)" in rec["fits"]["math"]
    by = {c.strategy: c for c in rec["candidates"]}
    assert sum(by["multitask"].allocation.values()) == 300
    assert len([r for r in by["dmt k=1/4"].rests_on if r.endswith("(paired)")]) == 2  # both seeds
    assert by["dmt k=1/4"].predicted["code"][0] - by["multitask"].predicted["code"][0] == pytest.approx(0.1, abs=0.05)
