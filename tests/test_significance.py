"""What the report marks significant: runs that differ by chance only (the same data, another seed) are not, runs
that truly differ are. Seeds are simulated the way they act on a benchmark: each item has its own chance of being
solved by a model of that recipe, and each trained seed is one independent draw of every item."""

import numpy as np

from sftmix.report import analysis

N_ITEMS = 200


def _study(rng, p_item, recipes):
    """recipes: [(label, strategy, shift)]: every seed of a recipe solves item i with p_item[i] + shift."""
    scores, items = [], []
    for label, strategy, shift, seed in recipes:
        rid = f"{label}-{seed}"
        solved = (rng.random(N_ITEMS) < np.clip(p_item + shift, 0, 1)).astype(float)
        scores.append({"run_id": rid, "label": f"{label} seed {seed}", "model": "m", "strategy": strategy,
                       "sources": "math+code", "amount": 1.0, "seed": seed, "task": "math", "ability": "math",
                       "metric": "accuracy", "value": float(solved.mean()), "n": N_ITEMS})
        items += [{"run_id": rid, "task": "math", "item_id": f"m{i}", "score": float(s)} for i, s in enumerate(solved)]
    return scores, items


def _marked(table: dict) -> dict[str, bool]:
    return {row[0]: row[1].endswith("*)") for row in table["rows"]}


def test_a_difference_by_chance_is_not_marked_and_a_real_one_is():
    rng = np.random.default_rng(7)
    chance_marked = real_marked = 0
    trials = 60
    for _ in range(trials):
        p_item = rng.beta(0.8, 0.8, N_ITEMS)  # items from easy to hard, as on a real benchmark
        scores, items = _study(rng, p_item, [
            ("multitask 1", "multitask", 0.0, 0),
            ("sequential 1", "sequential", 0.0, 1),   # same data and recipe quality, another seed: chance only
            ("dmt k=1/4 1", "dmt", 0.2, 2),           # truly better on every item
        ])
        marked = _marked(analysis.strategy_table(scores, items))
        chance_marked += marked["sequential 1"]
        real_marked += marked["dmt k=1/4 1"]
    # at a 5% level, Holm-corrected over the two comparisons: a chance difference is marked rarely, a real one nearly
    # always (200 items, 20 points)
    print(f"marked: by chance {chance_marked}/{trials}, real {real_marked}/{trials}")
    assert chance_marked <= 0.1 * trials, chance_marked
    assert real_marked >= 0.9 * trials, real_marked


def test_seeds_averaged_on_each_side_still_keep_chance_unmarked():
    rng = np.random.default_rng(11)
    p_item = rng.beta(0.8, 0.8, N_ITEMS)
    recipes = [(name, strat, shift, seed) for name, strat, shift in (("multitask 1", "multitask", 0.0),
                                                                   ("sequential 1", "sequential", 0.0),
                                                                   ("dmt k=1/4 1", "dmt", 0.2))
               for seed in (0, 1, 2)]
    scores, items = _study(rng, p_item, recipes)
    t = analysis.strategy_table(scores, items)
    marked = _marked(t)
    assert not marked["sequential 1"] and marked["dmt k=1/4 1"]
    assert {row[0]: row[-1] for row in t["rows"]} == {"multitask 1": "3", "sequential 1": "3", "dmt k=1/4 1": "3"}


def test_single_source_runs_are_not_rows_of_the_strategy_table():
    rng = np.random.default_rng(3)
    p_item = rng.beta(0.8, 0.8, N_ITEMS)
    scores, items = _study(rng, p_item, [("multitask 1", "multitask", 0.0, 0), ("single math 1", "single", 0.3, 0),
                                         ("dmt k=1/4 1", "dmt", 0.0, 0)])
    t = analysis.strategy_table(scores, items)
    assert [row[0] for row in t["rows"]] == ["multitask 1", "dmt k=1/4 1"] and "1 comparisons" in t["caption"]
