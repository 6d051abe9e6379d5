import pytest

from sftmix.data import design
from sftmix.data.example import chat
from sftmix.data.mixture import build_mixture, nested_take, permutation, take
from sftmix.errors import DataError
from sftmix.train.strategies import STRATEGIES, Part, StrategyError, check_params, expand_sweeps, stage_specs


def rows(name, n):
    return [chat(f"{name} question {i}", f"answer {i}", id=f"{name}-{i}") for i in range(n)]


def ids(examples):
    return [e.id for e in examples]


def test_nested_amounts_are_prefixes_of_one_permutation():
    src = rows("m", 200)
    small = nested_take(src, 1 / 16, "fraction", 0, "m")
    mid = nested_take(src, 1 / 4, "fraction", 0, "m")
    full = nested_take(src, 1.0, "fraction", 0, "m")
    assert len(small) == 12 and len(mid) == 50 and len(full) == 200
    assert mid[: len(small)] == small and full[: len(mid)] == mid
    assert sorted(ids(full)) == sorted(ids(src))
    assert ids(full) != ids(src)  # shuffled


def test_seed_and_source_name_change_the_permutation():
    src = rows("m", 100)
    a = ids(nested_take(src, 0.5, "fraction", 0, "m"))
    assert a == ids(nested_take(src, 0.5, "fraction", 0, "m"))
    assert a != ids(nested_take(src, 0.5, "fraction", 1, "m"))
    assert a != ids(nested_take(src, 0.5, "fraction", 0, "other"))


def test_upsampling_repeats_whole_passes_and_is_counted():
    sources = {"m": rows("m", 10)}
    mix = build_mixture([Part("m", 2.5)], sources, 0, upsample={"m"})
    info = mix.manifest["sources"]["m"]
    assert info["rows"] == 25 and info["unique_rows"] == 10 and info["repeated_rows"] == 15
    counts = {i: mix.manifest["row_ids"].count(i) for i in set(mix.manifest["row_ids"])}
    assert sorted(counts.values()) == [2] * 5 + [3] * 5


def test_upsampling_passes_never_share_a_shuffle_across_seeds():
    # Defect: pass 1 under data_seed 0 used to be seeded like pass 0 under data_seed 1.
    for seed in range(4):
        for npass in range(1, 4):
            assert permutation(50, seed, "m", npass) != permutation(50, seed + npass, "m", 0)
            assert permutation(50, seed, "m", npass) != permutation(50, seed + 1, "m", npass - 1 if npass > 1 else 0)


def test_count_above_the_source_needs_upsample():
    src = rows("m", 10)
    with pytest.raises(DataError, match="source 'm'.*more than the source's 10 rows.*upsample"):
        take(src, Part("m", 11, "count"), 0)
    assert len(take(src, Part("m", 11, "count"), 0, upsample=True)) == 11


def test_fraction_that_rounds_to_zero_rows_is_an_error():
    with pytest.raises(DataError, match="source 'm'.*1/256 of 100 rows rounds to 0 rows"):
        take(rows("m", 100), Part("m", 1 / 256), 0)


def test_token_budget_takes_a_prefix_within_the_budget():
    src = rows("m", 40)

    def count(e):
        return len(e.messages[0]["content"].split()) + len(e.messages[1]["content"].split())

    small = take(src, Part("m", 25, "tokens"), 0, count_tokens=count)
    big = take(src, Part("m", 60, "tokens"), 0, count_tokens=count)
    assert sum(map(count, small)) <= 25 and sum(map(count, big)) <= 60
    assert big[: len(small)] == small
    with pytest.raises(DataError, match="more than the source holds"):
        take(src, Part("m", 10_000, "tokens"), 0, count_tokens=count)


def test_count_unit_and_hash_determinism():
    sources = {"m": rows("m", 50), "c": rows("c", 50)}
    a = build_mixture([Part("m", 10, "count"), Part("c", 5, "count")], sources, 0)
    b = build_mixture([Part("m", 10, "count"), Part("c", 5, "count")], sources, 0)
    assert len(a) == 15 and a.hash == b.hash and a.manifest == b.manifest
    assert build_mixture([Part("m", 10, "count"), Part("c", 6, "count")], sources, 0).hash != a.hash


def _sizes(sources):
    return {n: len(r) for n, r in sources.items()}


def _check_nested(cells, sources, seed=0):
    """For every source, the rows any two cells take are prefixes of one order: the smaller of each pair."""
    taken: dict[str, list[list[str]]] = {}
    for c in cells:
        for name, part in c.parts.items():
            taken.setdefault(name, []).append(ids(take(sources[name], part, seed, upsample=True)))
    checked = 0
    for name, lists in taken.items():
        lists.sort(key=len)
        for small, big in zip(lists, lists[1:]):
            assert big[: len(small)] == small, name
            checked += 1
    return checked


DMT_FRACTIONS = [1, 1 / 4, 1 / 16, 1 / 64, 1 / 256]


def test_dmt_rq3_grid_is_nested_for_every_source_and_amount():
    sources = {"math": rows("math", 1024), "code": rows("code", 512), "general": rows("general", 900)}
    names = list(sources)
    # (a) all general + math/code at fractions, zipped; (b) the reverse; (c) general fixed at 1/64.
    a = design.per_source(names, {"math": DMT_FRACTIONS, "code": DMT_FRACTIONS, "general": [1]}, "fraction", "zip")
    b = design.per_source(names, {"math": [1], "code": [1], "general": DMT_FRACTIONS}, "fraction", "zip")
    c = design.per_source(names, {"math": DMT_FRACTIONS, "code": DMT_FRACTIONS, "general": [1 / 64]}, "fraction", "product")
    assert len(a) == 5 and len(b) == 5 and len(c) == 25
    assert a[1].parts["math"].amount == 1 / 4 and a[1].parts["general"].amount == 1
    assert _check_nested(a + b + c, sources) > 0
    for cell in a + b + c:
        for name, part in cell.parts.items():
            first = ids(take(sources[name], part, 0))
            assert first == ids(take(sources[name], part, 0))  # same cell twice: same rows


def test_fixed_total_design_shares_and_nesting():
    sources = {"math": rows("math", 3000), "code": rows("code", 3000), "general": rows("general", 3000)}
    cells = design.shares(list(sources), _sizes(sources), 2000, {"code": [0, 0.25, 0.5, 0.75, 1]}, "equal", "count")
    rows_per = [{n: p.amount for n, p in c.parts.items()} for c in cells]
    assert rows_per[0] == {"math": 1000, "general": 1000}
    assert rows_per[1] == {"math": 750, "code": 500, "general": 750}
    assert rows_per[4] == {"code": 2000}
    assert all(sum(r.values()) == 2000 for r in rows_per)
    assert [c.label for c in cells][:2] == ["code 0%", "code 25%"]
    assert _check_nested(cells, sources) > 0


def test_pool_design_keeps_composition():
    sources = {"a": rows("a", 600), "b": rows("b", 300)}
    cells = design.pool(list(sources), _sizes(sources), [90, 300, 900], "count")
    assert [(c.parts["a"].amount, c.parts["b"].amount) for c in cells] == [(60, 30), (200, 100), (600, 300)]
    assert _check_nested(cells, sources) > 0


def cell(*names, amount=1.0):
    return {n: Part(n, amount) for n in names}


def test_strategies_return_stage_lists():
    assert set(STRATEGIES) >= {"single", "multitask", "sequential", "mixed_sequential", "dmt", "stages"}
    (stage,) = stage_specs("multitask", cell("math", "code", amount=0.25))
    assert stage.parts == (Part("math", 0.25), Part("code", 0.25))
    (stage,) = stage_specs("single", cell("math"))
    assert stage.parts == (Part("math", 1.0),)


def test_sequential_mixed_sequential_and_dmt():
    c = cell("math", "code", "general", amount=0.5)
    seq = stage_specs("sequential", c, {"order": ["code", "math", "general"]})
    assert [s.parts for s in seq] == [(Part("code", 0.5),), (Part("math", 0.5),), (Part("general", 0.5),)]
    mixed = stage_specs("mixed_sequential", c)
    assert mixed[0].parts == (Part("math", 0.5), Part("code", 0.5)) and mixed[1].parts == (Part("general", 0.5),)
    d = stage_specs("dmt", c, {"k": 1 / 4})
    assert d[0] == mixed[0]
    assert d[1].parts == (Part("general", 0.5), Part("math", 0.125), Part("code", 0.125))
    assert stage_specs("dmt", c, {"k": 0})[1].parts == mixed[1].parts  # k = 0 is mixed sequential
    with pytest.raises(StrategyError, match="k must be a number in"):
        stage_specs("dmt", c, {"k": 2})
    with pytest.raises(StrategyError, match="order"):
        stage_specs("sequential", c, {"order": ["code", "math"]})


def test_custom_stages_and_params_checks():
    c = cell("math", "code", "general")
    specs = stage_specs("stages", c, {"stages": [{"parts": ["code"], "training": {"epochs": 1}},
                                                {"parts": {"general": 1, "math": 0.5}}]})
    assert specs[0].overrides == {"epochs": 1}
    assert specs[1].parts == (Part("general", 1.0), Part("math", 0.5))
    with pytest.raises(StrategyError, match="takes no parameter 'k'"):
        check_params("multitask", {"k": 1})
    assert expand_sweeps("dmt", {"k": [0, 0.25], "general": "general"}) == [
        {"k": 0, "general": "general"}, {"k": 0.25, "general": "general"}]


def test_amount_labels():
    from sftmix.data.mixture import amount_label

    assert [amount_label(a) for a in (1 / 16, 1 / 3, 0.75, 1.0, 2.5, 0.3)] == ["1/16", "1/3", "3/4", "1", "2.5", "0.3"]
    assert amount_label(100, "count") == "100 rows"
