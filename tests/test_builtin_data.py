"""The built-in offline sources: determinism, split hygiene, and that every row's reference is right."""

from __future__ import annotations

import re
import types
from collections import defaultdict
from functools import lru_cache

import pytest

import sftmix.data.builtin as builtin
from sftmix.data.builtin import BUILTIN_SOURCES, code, generate
from sftmix.evaluate import constraints as C

# Difficulty 1 is asked for the capacity the brief promises (3000 train / 500 eval); the other levels for the
# 2000 / 300 that the disjointness check needs.
TRAIN_N = {1: 3000, 2: 2000, 3: 2000}
EVAL_N = {1: 500, 2: 300, 3: 300}


@lru_cache(maxsize=None)
def rows(name: str, split: str, difficulty: int, n: int | None = None) -> tuple:
    n = n if n is not None else (TRAIN_N if split == "train" else EVAL_N)[difficulty]
    return tuple(generate(name, split, n, seed=0, difficulty=difficulty))


def user_prompt(ex) -> str:
    return ex.prompt_messages[-1]["content"]


def run_check(prompt: str, body: str, test: str, entry_point: str) -> None:
    """Raises (AssertionError or anything else) when `body` fails the test; trusted code, run in-process."""
    exec(prompt + body + "\n" + test + f"\ncheck({entry_point})\n", {})


# --- shared properties ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN_SOURCES)
@pytest.mark.parametrize("split", ["train", "eval"])
def test_deterministic_and_prefix_stable(name, split):
    a = generate(name, split, 50, seed=7, difficulty=2)
    b = generate(name, split, 50, seed=7, difficulty=2)
    assert [e.to_dict() for e in a] == [e.to_dict() for e in b]
    head = generate(name, split, 10, seed=7, difficulty=2)
    assert [e.to_dict() for e in head] == [e.to_dict() for e in a[:10]]
    other_seed = generate(name, split, 50, seed=8, difficulty=2)
    assert [e.to_dict() for e in other_seed] != [e.to_dict() for e in a]


@pytest.mark.parametrize("name", BUILTIN_SOURCES)
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_train_and_eval_prompts_are_disjoint(name, difficulty):
    train = {user_prompt(e) for e in rows(name, "train", difficulty)}
    evals = {user_prompt(e) for e in rows(name, "eval", difficulty)}
    # Distinct prompts within a split, as many as asked for.
    assert len(train) == TRAIN_N[difficulty] and len(evals) == EVAL_N[difficulty]
    assert not train & evals


@pytest.mark.parametrize("name", BUILTIN_SOURCES)
def test_meta_fields(name):
    for split in ("train", "eval"):
        exs = rows(name, split, 2)
        assert len({e.id for e in exs}) == len(exs)
        for i, e in enumerate(exs[:200]):
            m = e.meta
            assert m["id"] == f"{name}-{split}-2-0-{i}"
            assert (m["source"], m["ability"], m["split"], m["difficulty"]) == (name, name, split, 2)
            assert [msg["role"] for msg in e.messages] == ["user", "assistant"]
            assert e.response.strip()


def test_ids_differ_between_seeds():
    a = generate("math", "train", 5, seed=0)
    b = generate("math", "train", 5, seed=1)
    assert not {e.id for e in a} & {e.id for e in b}


# --- math -------------------------------------------------------------------------------------------------------

EXPR = re.compile(r"(\d+) ([-+*]) (\d+) = (\d+)\.$")


@pytest.mark.parametrize("difficulty", [1, 2, 3, 4, 5])
def test_math_solutions_are_correct(difficulty):
    exs = list(rows("math", "train", difficulty, 300)) + list(rows("math", "eval", difficulty, 100))
    for e in exs:
        lines = e.response.split("\n")
        answer = e.meta["answer"]
        assert lines[-1] == f"#### {answer}"
        assert e.meta["question"] == user_prompt(e)
        assert int(answer) >= 0
        results = []
        for line in lines[:-1]:
            m = EXPR.search(line)
            assert m, f"no arithmetic in line {line!r}"
            a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
            assert {"+": a + b, "-": a - b, "*": a * b}[op] == c, line
            assert c >= 0
            if results:  # every step after the first continues from the previous result
                assert a == results[-1], line
            results.append(c)
        assert len(results) == difficulty  # one operation per difficulty level
        assert results[-1] == int(answer)


def test_math_difficulty_one_is_easy():
    for e in rows("math", "train", 1, 300):
        (line,) = e.response.split("\n")[:-1]
        a, op, b, _ = EXPR.search(line).groups()
        assert op in "+-" and int(a) <= 20 and int(b) <= 20


def test_math_varies_names_and_templates():
    exs = rows("math", "train", 2, 500)
    first_words = {user_prompt(e).split()[0] for e in exs}
    assert len(first_words) >= 15  # names and "There are ..." / "In the morning ..." openings
    assert len({e.meta["answer"] for e in exs}) >= 40


# --- code -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_code_canonical_solutions_pass_their_tests(difficulty):
    exs = list(rows("code", "train", difficulty)[:300]) + list(rows("code", "eval", difficulty)[:50])
    for e in exs:
        m = e.meta
        assert m["prompt"].endswith('"""\n') and f"def {m['entry_point']}(" in m["prompt"]
        assert m["test"].startswith("def check(candidate):")
        assert 3 <= m["test"].count("    assert candidate(") <= 5
        assert e.response == f"```python\n{m['prompt']}{m['canonical_solution']}```"
        assert m["task_id"] == f"sftmix/{m['id']}"
        run_check(m["prompt"], m["canonical_solution"], m["test"], m["entry_point"])
    if difficulty == 1:
        assert all(len(e.meta["canonical_solution"].strip().splitlines()) == 1 for e in exs)
    else:
        assert all(len(e.meta["canonical_solution"].strip().splitlines()) > 1 for e in exs)


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_code_tests_reject_wrong_bodies(difficulty):
    exs = rows("code", "train", difficulty)[:300]
    for e in exs[:60]:
        m = e.meta
        with pytest.raises(AssertionError):
            run_check(m["prompt"], "    return None\n", m["test"], m["entry_point"])
    # Stronger: the body of the same family with other constants (same argument names) must fail too. A few
    # pairs are legitimately equivalent (a Caesar shift forward 3 is a shift backward 23), hence the margin.
    by_signature = defaultdict(list)
    for e in exs:
        by_signature[(e.meta["family"], e.meta["prompt"].split("(", 1)[1].split(")")[0])].append(e)
    pairs = failed = 0
    for group in by_signature.values():
        for a, b in zip(group, group[1:]):
            if a.meta["canonical_solution"] == b.meta["canonical_solution"]:
                continue
            pairs += 1
            try:
                run_check(a.meta["prompt"], b.meta["canonical_solution"], a.meta["test"], a.meta["entry_point"])
            except AssertionError:
                failed += 1
    assert pairs >= 100
    assert failed >= 0.97 * pairs, f"only {failed} of {pairs} swapped-constant bodies were caught"


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_code_eval_uses_train_families_with_new_constants(difficulty):
    train, evals = rows("code", "train", difficulty), rows("code", "eval", difficulty)
    families = set(code.families(difficulty))
    assert {e.meta["family"] for e in train} == families == {e.meta["family"] for e in evals}
    assert not {_task(e) for e in train} & {_task(e) for e in evals}


def _task(e) -> tuple[str, str]:
    """Family and body with argument names blanked out: what stays is the constants, i.e. the task itself."""
    signature = e.meta["prompt"].split("(", 1)[1].split(")")[0]
    body = e.meta["canonical_solution"]
    for arg in re.findall(r"(\w+):", signature):
        body = re.sub(rf"\b{arg}\b", "ARG", body)
    return e.meta["family"], body


def test_code_has_enough_families():
    assert len(code.FAMILIES) >= 25
    assert all(len(code.families(d)) >= 8 for d in (1, 2, 3))


# --- general ----------------------------------------------------------------------------------------------------

CONFLICTING = [{"lowercase", "uppercase"}, {"json", "bullets"}, {"json", "title"}, {"json", "end_with"},
               {"max_words", "min_words"}]


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_general_responses_satisfy_their_constraints(difficulty):
    exs = list(rows("general", "train", difficulty)[:500]) + list(rows("general", "eval", difficulty))
    for e in exs:
        cs = e.meta["constraints"]
        assert len(cs) == difficulty
        kinds = {c["kind"] for c in cs}
        assert len(kinds) == difficulty
        assert not any(pair <= kinds for pair in CONFLICTING)
        assert all(C.check_all(cs, e.response)), (user_prompt(e), e.response)
        for c in cs:
            assert C.describe(c) in user_prompt(e)
        assert e.meta["topic"] in user_prompt(e)


def test_general_covers_every_kind_and_many_topics():
    exs = rows("general", "train", 2)
    assert {c["kind"] for e in exs for c in e.meta["constraints"]} == set(C.KINDS)
    assert len({e.meta["topic"] for e in exs}) >= 40


def test_general_responses_are_short():
    words = [C.count_words(e.response) for e in rows("general", "train", 1)[:500]]
    assert max(words) <= 80 and 15 <= sum(words) / len(words) <= 50


# --- arguments --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(name="poetry", split="train", n=3), "math, code, general"),
        (dict(name="math", split="test", n=3), "train, eval"),
        (dict(name="code", split="train", n=3, difficulty=4), "1, 2, 3"),
        (dict(name="general", split="train", n=3, difficulty=0), "1, 2, 3"),
        (dict(name="math", split="train", n=3, difficulty=6), "1, 2, 3, 4, 5"),
        (dict(name="math", split="train", n=3, difficulty="2"), "1, 2, 3, 4, 5"),
        (dict(name="math", split="train", n=-1), "non-negative"),
    ],
)
def test_invalid_arguments(kwargs, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        generate(**kwargs)


def test_math_accepts_difficulty_five_and_zero_rows():
    assert len(generate("math", "eval", 3, difficulty=5)) == 3
    assert generate("code", "train", 0) == []


def test_exhausted_space_raises_instead_of_looping(monkeypatch):
    from sftmix.data.example import chat

    fixed = types.SimpleNamespace(MAX_DIFFICULTY=1, draw=lambda rng, d: ("same", chat("same question", "same")))
    monkeypatch.setitem(builtin._MODULES, "math", fixed)
    monkeypatch.setattr(builtin, "MAX_MISSES", 200)
    with pytest.raises(ValueError, match="ran out of distinct"):
        generate("math", "train", 5)
