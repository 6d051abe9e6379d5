"""The reasoning suite of Zhang et al. (SPEC study 2): twelve zero-shot tasks in three domains, generated offline
from a seed with checkable answers, or loaded from files."""

import ast
import json
import operator
import re

import pytest

from sftmix.errors import SftmixError
from sftmix.evaluate.reasoning import (
    DOMAINS,
    KIN_COMPOSE,
    REASONING_TASKS,
    domain_scores,
    generate_items,
    normalise_reference,
)
from sftmix.evaluate.tasks import SUITES, make_task


def test_twelve_tasks_in_three_domains():
    assert len(REASONING_TASKS) == 12 and len(set(REASONING_TASKS)) == 12
    assert {d: len(v) for d, v in DOMAINS.items()} == {"symbolic": 4, "logical": 4, "arithmetic": 4}
    assert SUITES["reasoning"] == list(REASONING_TASKS)
    for domain, names in DOMAINS.items():
        for name in names:
            t = make_task(name, limit=2)
            assert (t.ability, t.domain, t.metric) == ("reasoning", domain, "accuracy")
            assert all(e.meta["domain"] == domain for e in t.items)


def _wrong(items, i):
    """Another item's answer that differs from item i's."""
    ref = normalise_reference(items[i].meta)
    for e in items:
        if normalise_reference(e.meta) != ref and normalise_reference({**items[i].meta, "answer": e.meta["answer"]}) != ref:
            return e.meta["answer"]
    raise AssertionError("all answers equal")


@pytest.mark.parametrize("name", REASONING_TASKS)
def test_reference_answers_score_one_and_wrong_answers_zero(name):
    t = make_task(name, limit=40)
    assert len(t.items) == 40
    rows = t.score(t.items, [[e.response] for e in t.items])
    assert t.summary(rows) == {"accuracy": 1.0}
    # the bare answer, without the marker phrase, is read too
    bare = t.score(t.items, [[f"Let me work it out.\n{e.meta['answer']}"] for e in t.items])
    assert [r["score"] for r in bare] == [1.0] * 40
    wrong = [[f"The answer is {_wrong(t.items, i)}."] for i in range(len(t.items))]
    assert t.summary(t.score(t.items, wrong)) == {"accuracy": 0.0}


@pytest.mark.parametrize("name", REASONING_TASKS)
def test_generation_is_deterministic_and_nested(name):
    a = generate_items(name, 20, seed=1)
    b = generate_items(name, 20, seed=1)
    assert [e.to_dict() for e in a] == [e.to_dict() for e in b]
    assert [e.to_dict() for e in generate_items(name, 5, seed=1)] == [e.to_dict() for e in a[:5]]
    assert [e.meta["question"] for e in generate_items(name, 20, seed=2)] != [e.meta["question"] for e in a]
    assert len({e.meta["question"] for e in a}) == 20
    assert make_task(name, limit=20, seed=1).key() == make_task(name, limit=20, seed=1).key()
    assert make_task(name, limit=20, seed=1).key() != make_task(name, limit=20, seed=2).key()


@pytest.mark.parametrize("name", REASONING_TASKS)
def test_degenerate_replies_score_zero(name):
    t = make_task(name, limit=30)
    for comps in ([[""] for _ in t.items],
                  [[e.prompt_messages[-1]["content"]] for e in t.items],
                  [[" ".join([str(e.meta["answer"]).split()[0]] * 30)] for e in t.items]):
        assert t.summary(t.score(t.items, comps))["accuracy"] == 0.0


# ------------------------------------------------------------------------------ the answers are really right


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.USub: operator.neg}


def _calc(node):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp):
        return _OPS[type(node.op)](_calc(node.operand))
    return _OPS[type(node.op)](_calc(node.left), _calc(node.right))


def test_answers_check_out_against_an_independent_reading_of_the_question():
    for e in generate_items("multistep_arithmetic", 50):
        expr = e.meta["question"].removeprefix("Compute the value of ").removesuffix(" =")
        assert _calc(ast.parse(expr, mode="eval").body) == int(e.meta["answer"])
    for e in generate_items("coin_flip", 50):
        flips = len(re.findall(r"\w+ flips the coin", e.meta["question"]))
        assert e.meta["answer"] == ("yes" if flips % 2 == 0 else "no")
    for e in generate_items("last_letter_concat", 30):
        words = re.search(r'"(.+)"', e.meta["question"]).group(1).split()
        assert e.meta["answer"] == "".join(w[-1] for w in words).lower()
    for e in generate_items("list_reversal", 30):
        xs = e.meta["question"].removeprefix("Reverse the order of this list: ").rstrip(".").split(", ")
        assert e.meta["answer"].split(", ") == xs[::-1] != xs
    for e in generate_items("babi_induction", 30):
        q = e.meta["question"]
        who = re.search(r"What color is (\w+)\?", q).group(1)
        kind = re.search(rf"{who} is an? (\w+)\.", q).group(1)
        example = next(n for n, k in re.findall(r"(\w+) is an? (\w+)\.", q) if k == kind and n != who)
        assert re.search(rf"{example} is {e.meta['answer']}\.", q)
    # kinship: the composition table read as family facts
    assert KIN_COMPOSE[("parent", "sibling")] == ("aunt", "uncle")
    assert KIN_COMPOSE[("sibling", "child")] == ("niece", "nephew")
    assert KIN_COMPOSE[("spouse", "parent")] == ("mother-in-law", "father-in-law")


def test_logical_ordering_puzzles_have_exactly_one_solution():
    import itertools

    for e in generate_items("logical_ordering", 30):
        q = e.meta["question"]
        colors = e.meta["choices"]
        noun = re.search(r"There are \d (\w+)s in a row", q).group(1)
        left = re.findall(rf"The (\w+) {noun} is to the left of the (\w+) {noun}\.", q)
        pos = [(c, 0) for c in re.findall(rf"The (\w+) {noun} is the leftmost\.", q)]
        pos += [(c, ["first", "second", "third", "fourth", "fifth"].index(o))
                for c, o in re.findall(rf"The (\w+) {noun} is the (\w+) from the left\.", q)]
        slot = ["first", "second", "third", "fourth", "fifth"].index(re.search(r"Which \w+ is the (\w+) from", q).group(1))
        sols = [p for p in itertools.permutations(colors)
                if all(p.index(a) < p.index(b) for a, b in left) and all(p.index(c) == i for c, i in pos)]
        assert len(sols) == 1 and sols[0][slot] == e.meta["answer"]


def test_marked_answers_win_and_hedges_do_not_score():
    t = make_task("coin_flip", limit=10)
    e = t.items[0]
    other = "no" if e.meta["answer"] == "yes" else "yes"
    cases = {f"yes or no? {e.meta['answer']} or {other}": 0.0,  # both words, no marked answer: a hedge
             f"The answer is {e.meta['answer']}. (Not {other}.)": 1.0,
             f"The answer is {other}. Hmm, maybe {e.meta['answer']}": 0.0,
             f"{e.meta['answer'].capitalize()}, it is.": 1.0,
             f"{e.meta['answer']} idea": 0.0}  # "no idea" is not an answer
    for reply, want in cases.items():
        assert t.score([e], [[reply]])[0]["score"] == want, reply
    k = make_task("clutrr_kinship", limit=100)
    e = next(x for x in k.items if x.meta["answer"] == "grandmother")
    assert k.score([e], [["She is his grandma."]])[0]["score"] == 1.0  # a synonym
    assert k.score([e], [["She is his mother."]])[0]["score"] == 0.0  # "mother" inside "grandmother" is not it
    assert k.score([e], [["The answer is grandmother, not mother."]])[0]["score"] == 1.0


def test_samples_vote(tmp_path):
    t = make_task("first_letter_concat", limit=2, samples=3)
    a, b = (e.meta["answer"] for e in t.items)
    rows = t.score(t.items, [[a, "zz", f"The answer is {a}."], ["zz", "zz", b]])
    assert [r["score"] for r in rows] == [1.0, 0.0]
    assert t.summary(rows) == pytest.approx({"accuracy": 0.5, "maj@3": 0.5, "pass@1": 0.5})


def test_items_load_from_a_file(tmp_path):
    f = tmp_path / "coin.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"question": "A coin is heads up. Ann flips it. Is it still heads up?", "answer": "no"},
        {"question": "A coin is heads up. Nobody flips it. Is it still heads up?", "answer": "yes", "id": "c2"},
    ]))
    t = make_task("coin_flip", path=str(f))
    assert [e.id for e in t.items] == ["coin_flip-file-0", "c2"]
    assert t.params["path"] == str(f) and t.key()["params"]["path"]["sha256"]
    assert [r["score"] for r in t.score(t.items, [["The answer is no."], ["no"]])] == [1.0, 0.0]
    g = tmp_path / "gsm.jsonl"
    g.write_text(json.dumps({"question": "What is 6 * 7?", "answer": "6 * 7 = 42\n#### 42"}))
    t = make_task("gsm_style", path=str(g))
    assert t.score(t.items, [["6 * 7 = 42, so 42."]])[0]["score"] == 1.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "Q?", "answer": "a"}) + "\n" + json.dumps({"question": "", "answer": "b"}))
    with pytest.raises(SftmixError, match="bad.jsonl row 1: expected an object with a non-empty string 'question'"):
        make_task("list_reversal", path=str(bad))
    with pytest.raises(SftmixError, match="n must be an integer >= 1"):
        make_task("coin_flip", n=0)


def test_domain_scores_average_tasks_per_domain():
    scores = {"coin_flip": 1.0, "list_reversal": 0.5, "addsub": 0.25, "math": 0.9}
    assert domain_scores(scores) == {"symbolic": 0.75, "arithmetic": 0.25}
