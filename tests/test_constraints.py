"""Verifiable-instruction checkers: each kind accepts what it should and rejects what it should not."""

from __future__ import annotations

import pytest

from sftmix.evaluate.constraints import KINDS, check, check_all, count_words, describe

# (constraint, responses that obey it, responses that do not)
CASES = [
    ({"kind": "lowercase"}, ["all small letters here.", "  ok 123  "], ["Not all small.", "123", ""]),
    ({"kind": "uppercase"}, ["ALL CAPS HERE!", "\nOK 42\n"], ["ALL CAPS bUT ONE", "42", ""]),
    (
        {"kind": "end_with", "phrase": "Is there anything else?"},
        ["Done. Is there anything else?", "done. is there anything else?  \n"],
        ["Is there anything else? Yes.", "Is there anything else"],
    ),
    (
        {"kind": "start_with", "phrase": "Sure."},
        ["Sure. Here it is.", "  SURE. here", "Sure.\n- a"],
        ["Of course. Sure.", "Sure here"],
    ),
    (
        {"kind": "max_words", "n": 3},
        ["one two three", "- one, two!"],
        ["one two three four", "it's a well-known fact"],
    ),
    ({"kind": "min_words", "n": 3}, ["one two three", "don't stop me now"], ["one two", "<<a>> -- * ..."]),
    (
        {"kind": "bullets", "n": 2},
        ["- one\n- two", "Intro\n* one\n  - two\nBye"],
        ["- one", "- one\n- two\n- three", "-one\n-two", "--- rule\n- one"],
    ),
    (
        {"kind": "json"},
        ['{"a": [1, 2]}', '```json\n{"a": 1}\n```', "```\n[1, 2]\n```", "  [true]  "],
        ["{'a': 1}", 'Here: {"a": 1}', '```json\n{"a": 1}\n``` extra', "plain text"],
    ),
    (
        {"kind": "keywords", "words": ["ocean", "Salt"]},
        ["The OCEAN is full of salt.", "salt; ocean"],
        ["The ocean is salty.", "oceans of salt", "salt only"],
    ),
    (
        {"kind": "forbidden", "words": ["cat", "dog"]},
        ["A category of hotdogs.", "Birds fly."],
        ["My Cat sleeps.", "a dog-friendly park"],
    ),
    ({"kind": "no_commas"}, ["No commas here.", "Semi; colons: fine"], ["One, two", ",", "a,b"]),
    (
        {"kind": "title"},
        ["<<My Title>>\nText", "Text with <<a title>> inside"],
        ["<<>>", "<< >> text", "<My Title>", "<<broken\ntitle>>", "no title"],
    ),
    ({"kind": "quoted"}, ['"All quoted."', ' "x" \n'], ['"Half quoted.', "'single'", '"', "plain"]),
]


@pytest.mark.parametrize("constraint, good, bad", CASES, ids=[c[0]["kind"] for c in CASES])
def test_each_kind(constraint, good, bad):
    for text in good:
        assert check(constraint, text), text
    for text in bad:
        assert not check(constraint, text), text


def test_every_kind_is_tested_and_described():
    assert {c[0]["kind"] for c in CASES} == set(KINDS)
    for constraint, _, _ in CASES:
        sentence = describe(constraint)
        assert sentence.endswith((".", "?", '"')) and len(sentence) > 20
        for value in constraint.values():
            if isinstance(value, (int, str)) and value != constraint["kind"]:
                assert str(value) in sentence
            if isinstance(value, list):
                assert all(f'"{w}"' in sentence for w in value)


def test_describe_wording():
    assert describe({"kind": "max_words", "n": 40}) == "Answer with at most 40 words."
    assert describe({"kind": "keywords", "words": ["sun"]}) == 'Include the keyword "sun" in the response.'
    assert describe({"kind": "forbidden", "words": ["a", "b", "c"]}) == (
        'Do not include the words "a", "b" or "c" in the response.'
    )


def test_check_all_keeps_order():
    cs = [{"kind": "lowercase"}, {"kind": "max_words", "n": 2}, {"kind": "no_commas"}]
    assert check_all(cs, "three small words") == [True, False, True]
    assert check_all([], "anything") == []


def test_count_words_ignores_punctuation():
    assert count_words("- Hello, world! <<Title here>> don't re-use 42") == 7
    assert count_words("  ... --- ***  ") == 0


def test_unknown_kind_lists_known_kinds():
    with pytest.raises(ValueError, match="unknown constraint kind 'shouting'.*lowercase.*quoted"):
        check({"kind": "shouting"}, "x")
    with pytest.raises(ValueError, match="'kind'"):
        describe({"n": 3})


@pytest.mark.parametrize(
    "constraint, param",
    [
        ({"kind": "max_words"}, "'n'"),
        ({"kind": "bullets"}, "'n'"),
        ({"kind": "end_with"}, "'phrase'"),
        ({"kind": "keywords"}, "'words'"),
        ({"kind": "forbidden", "wordz": ["x"]}, "'words'"),
    ],
)
def test_missing_parameter_is_named(constraint, param):
    with pytest.raises(ValueError, match=rf"{constraint['kind']}.*{param}.*known kinds"):
        check(constraint, "some text")
    with pytest.raises(ValueError, match=param):
        describe(constraint)


@pytest.mark.parametrize(
    "constraint",
    [{"kind": "min_words", "n": "3"}, {"kind": "min_words", "n": -1}, {"kind": "start_with", "phrase": " "},
     {"kind": "keywords", "words": []}, {"kind": "keywords", "words": ["ok", 3]}],
)
def test_bad_parameter_values(constraint):
    with pytest.raises(ValueError):
        check(constraint, "some text")


# --- the built-in general data against the scorer ------------------------------------------------------------------


def test_instructions_do_not_obey_themselves():
    """An instruction sentence copied back must not satisfy its own constraint (the echo defect: the title
    instruction once held an example title). Keywords are named in their instruction by necessity; an echo of them
    is caught by the scorer's echo guard (tests/test_ifeval.py)."""
    from sftmix.data.builtin.general import POSITIVE

    samples = {"start_with": {"phrase": "Sure."}, "end_with": {"phrase": "That is all."}, "bullets": {"n": 2},
               "min_words": {"n": 15}, "keywords": {"words": ["ocean"]}}
    for kind in POSITIVE:
        c = {"kind": kind, **samples.get(kind, {})}
        assert check(c, describe(c)) == (kind == "keywords"), kind


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_general_reference_answers_pass_the_task_scorer(difficulty):
    """The generator drops a candidate whose reply fails check_all. Show that this filter rarely fires (so rows are
    built to satisfy their constraints, not sieved), and that the rows it keeps also pass the task's full scorer,
    strict and loose, with no reply taken for an echo or a loop."""
    import random

    from sftmix.data.builtin import general
    from sftmix.evaluate.tasks import make_task

    rng = random.Random(difficulty)
    built = sum(general.draw(rng, difficulty) is not None for _ in range(1000))
    assert built >= 900, built

    task = make_task("general", limit=150, difficulty=difficulty)
    assert len(task.items) == 150
    rows = task.score(task.items, [[e.response] for e in task.items])
    assert not [r for r in rows if "degenerate" in r]
    assert task.summary(rows) == {"prompt_strict": 1.0, "prompt_loose": 1.0, "instruction_strict": 1.0,
                                  "instruction_loose": 1.0}
    # and a reply for another item (right format, wrong instructions) does not pass everything
    shifted = task.score(task.items, [[e.response] for e in task.items[1:] + task.items[:1]])
    assert task.summary(shifted)["prompt_strict"] < 0.5
