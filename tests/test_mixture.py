from sftmix.data.example import chat
from sftmix.data.mixture import build_mixture, nested_take
from sftmix.train.strategies import STRATEGIES, Part, stage_specs


def rows(name, n):
    return [chat(f"{name} question {i}", f"answer {i}", id=f"{name}-{i}") for i in range(n)]


def test_nested_amounts_are_prefixes_of_one_permutation():
    src = rows("m", 200)
    small = nested_take(src, 1 / 16, "fraction", 0, "m")
    mid = nested_take(src, 1 / 4, "fraction", 0, "m")
    full = nested_take(src, 1.0, "fraction", 0, "m")
    assert len(small) == 12 and len(mid) == 50 and len(full) == 200
    assert mid[: len(small)] == small and full[: len(mid)] == mid
    assert sorted(e.id for e in full) == sorted(e.id for e in src)
    assert [e.id for e in full] != [e.id for e in src]  # shuffled


def test_seed_and_source_name_change_the_permutation():
    src = rows("m", 100)
    a = [e.id for e in nested_take(src, 0.5, "fraction", 0, "m")]
    assert a == [e.id for e in nested_take(src, 0.5, "fraction", 0, "m")]
    assert a != [e.id for e in nested_take(src, 0.5, "fraction", 1, "m")]
    assert a != [e.id for e in nested_take(src, 0.5, "fraction", 0, "other")]


def test_upsampling_repeats_whole_passes_and_is_counted():
    sources = {"m": rows("m", 10)}
    mix = build_mixture([Part("m", 2.5)], sources, "fraction", 0)
    info = mix.manifest["sources"]["m"]
    assert info["rows"] == 25 and info["unique_rows"] == 10 and info["repeated_rows"] == 15
    counts = {i: mix.manifest["row_ids"].count(i) for i in set(mix.manifest["row_ids"])}
    assert sorted(counts.values()) == [2] * 5 + [3] * 5


def test_count_unit_and_hash_determinism():
    sources = {"m": rows("m", 50), "c": rows("c", 50)}
    a = build_mixture([Part("m", 10), Part("c", 5)], sources, "count", 0)
    b = build_mixture([Part("m", 10), Part("c", 5)], sources, "count", 0)
    assert len(a) == 15 and a.hash == b.hash
    assert build_mixture([Part("m", 10), Part("c", 6)], sources, "count", 0).hash != a.hash


def test_strategies_return_stage_lists():
    assert set(STRATEGIES) >= {"single", "multitask"}
    (stage,) = stage_specs("multitask", ["math", "code"], 0.25)
    assert stage.parts == (Part("math", 0.25), Part("code", 0.25))
    (stage,) = stage_specs("single", ["math"], 1.0)
    assert stage.parts == (Part("math", 1.0),)


def test_amount_labels():
    from sftmix.data.mixture import amount_label

    assert [amount_label(a) for a in (1 / 16, 1 / 3, 0.75, 1.0, 2.5, 0.3)] == ["1/16", "1/3", "3/4", "1", "2.5", "0.3"]
    assert amount_label(100, "count") == "100 rows"
