import ast
import itertools
from fractions import Fraction

import pytest

from sftmix.evaluate.scoring import (
    code_program,
    extract_code,
    extract_number,
    load_humaneval,
    math_correct,
    pass_at_k,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        # "####" marker, with the usual GSM8K solution before it
        ("She pays 3 * 4 = 12 dollars.\n#### 12", "12"),
        ("#### 1,234", "1234"),
        ("#### $-3", "-3"),
        ("First 5, then 7.\n#### 19\nThe answer is 20", "19"),
        # \boxed, nested braces and fractions
        ("so the total is \\boxed{42}.", "42"),
        # the FIRST marked answer wins: what follows it (a made-up next problem) cannot overrule it
        ("\\boxed{3} and then \\boxed{x = 5}", "3"),
        ("#### 72\n\nQuestion: Sam has 4 pens and buys 11 more. How many?\n#### 15", "72"),
        ("The answer is 72.\nNext question: 3 + 12 = 15\n#### 15", "72"),
        ("Step 1: 3 + 4 = 7\nFinal answer: $1,040", "1040"),
        ("Answer = 42 dollars", "42"),
        # fractions and units
        ("\\boxed{x = 5}", "5"),
        ("The answer is 3/4.", "0.75"),
        ("each gets 3/4", "0.75"),
        ("\\boxed{\\dfrac{3}{4}}", "0.75"),
        ("The answer is 15 km.", "15"),
        ("#### 2,500.00 dollars", "2500"),
        ("\\boxed{\\frac{1}{2}}", "0.5"),
        ("\\boxed{1,000 \\text{ dollars}}", "1000"),
        ("\\boxed{A} and finally 7", "7"),
        # last number in the text
        ("It costs $1,234.50 in total.", "1234.5"),
        ("The answer is 12.", "12"),
        ("The answer is 12.0", "12"),
        ("12.50", "12.5"),
        ("The temperature dropped to -5 degrees", "-5"),
        ("between 3-5 apples", "5"),
        ("values 1,2,3", "3"),
        ("-0.0", "0"),
        ("0.25 of 8", "8"),
        ("roughly .5", "0.5"),
        # a markdown heading is not the GSM8K marker
        ("#### Step 1\nadd them: 9", "9"),
        # nothing numeric
        ("no digits here", None),
        ("", None),
    ],
)
def test_extract_number(text, expected):
    assert extract_number(text) == expected


@pytest.mark.parametrize(
    "completion, answer, expected",
    [
        ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "#### 72", True),
        ("The answer is 72.", "Natalia sold 48/2 = 24 clips in May.\n#### 72", True),
        ("\\boxed{72.0}", "72", True),
        ("That is 1,000 dollars", "1000", True),
        ("answer: 0.3333333", "0.33333333", True),
        ("The answer is 71", "72", False),
        ("The answer is -72", "72", False),
        ("0.3334", "0.3333", False),
        ("I don't know", "72", False),
        ("72", "no reference", False),
    ],
)
def test_math_correct(completion, answer, expected):
    assert math_correct(completion, answer) is expected


PROMPT = 'from typing import List\nimport math\n\n\ndef total(xs: List[int]) -> int:\n    """Sum xs."""\n'


def _function_names(code: str) -> list[str]:
    return [node.name for node in ast.parse(code).body if isinstance(node, ast.FunctionDef)]


def test_extract_code_fenced_full_function_with_prose():
    completion = (
        "Sure! Here is the implementation:\n\n```python\ndef total(xs):\n    return sum(xs)\n```\n\n"
        "It adds all elements. Example:\n```\ntotal([1, 2])\n```\n"
    )
    code = extract_code(completion, PROMPT, "total")
    assert code == "from typing import List\nimport math\n\n\ndef total(xs):\n    return sum(xs)\n"
    assert _function_names(code) == ["total"]


def test_extract_code_prefers_python_block_over_earlier_block():
    completion = "```text\nsome output\n```\n```py\ndef total(xs):\n    return sum(xs)\n```"
    assert extract_code(completion, PROMPT, "total").endswith("def total(xs):\n    return sum(xs)\n")


def test_extract_code_body_continuation():
    code = extract_code("    return sum(xs)\n", PROMPT, "total")
    assert code == PROMPT + "    return sum(xs)\n"
    assert _function_names(code) == ["total"]


def test_extract_code_fenced_body_continuation():
    code = extract_code("```python\n    return sum(xs)\n```", PROMPT, "total")
    assert code == PROMPT + "    return sum(xs)\n"


def test_extract_code_unterminated_fence():
    completion = "Here you go:\n```python\ndef total(xs):\n    return sum(xs)\n"
    code = extract_code(completion, PROMPT, "total")
    assert code.startswith("from typing import List\nimport math\n")
    assert code.endswith("def total(xs):\n    return sum(xs)\n")
    assert "Here you go" not in code
    ast.parse(code)


def test_extract_code_raw_full_function_without_fence():
    completion = "import math\n\ndef total(xs):\n    return math.fsum(xs)\n"
    code = extract_code(completion, PROMPT, "total")
    assert code.startswith("from typing import List\nimport math\n")
    assert _function_names(code) == ["total"]


def test_extract_code_keeps_prompt_helpers_before_entry_point():
    prompt = "def helper(x):\n    return x * 2\n\n\ndef main(x):\n    \"\"\"Use helper.\"\"\"\n"
    code = extract_code("```python\ndef main(x):\n    return helper(x) + 1\n```", prompt, "main")
    assert _function_names(code) == ["helper", "main"]


def test_extract_code_other_function_name_is_a_continuation():
    # A completion defining only a helper is not the requested function.
    code = extract_code("    def inner():\n        return 1\n    return inner()\n", PROMPT, "total")
    assert code.startswith(PROMPT)


def test_code_program_layout():
    meta = {"prompt": PROMPT, "entry_point": "total", "test": "def check(candidate):\n    assert candidate([1]) == 1\n"}
    program = code_program(meta, "    return sum(xs)\n")
    assert program == PROMPT + "    return sum(xs)\n" + "\n\n" + meta["test"] + "\n\ncheck(total)\n"
    ast.parse(program)


def _brute_force_pass_at_k(n: int, c: int, k: int) -> Fraction:
    # Samples 0..c-1 pass; pass@k = share of k-subsets with at least one passing sample.
    subsets = list(itertools.combinations(range(n), k))
    hits = sum(1 for s in subsets if any(i < c for i in s))
    return Fraction(hits, len(subsets))


@pytest.mark.parametrize(
    "n, c, k",
    [(1, 0, 1), (1, 1, 1), (5, 2, 1), (5, 2, 2), (5, 2, 3), (5, 2, 4), (6, 1, 3), (8, 3, 2), (10, 0, 5), (10, 4, 5), (10, 9, 1), (10, 10, 10), (12, 5, 7)],
)
def test_pass_at_k_matches_brute_force(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(float(_brute_force_pass_at_k(n, c, k)), abs=1e-12)


def test_pass_at_k_edge_cases():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    # fewer samples than k: the best estimate is pass@n
    assert pass_at_k(3, 1, 10) == 1.0
    assert pass_at_k(3, 0, 10) == 0.0
    # large n stays finite and in range (a binomial-coefficient ratio would overflow floats)
    value = pass_at_k(2000, 7, 100)
    assert 0.0 < value < 1.0
    for bad in [(0, 0, 1), (5, 6, 1), (5, -1, 1), (5, 2, 0)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def test_load_humaneval():
    problems = load_humaneval(limit=3)
    assert [p["task_id"] for p in problems] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    for p in problems:
        assert {"prompt", "canonical_solution", "test", "entry_point"} <= p.keys()
    assert len(load_humaneval()) == 164
    assert load_humaneval(limit=0) == []
    with pytest.raises(ValueError):
        load_humaneval(limit=-1)


# ------------------------------------------------------------------------------------------- degenerate output

from sftmix.evaluate.scoring import answer_text, degenerate, majority, strip_echo  # noqa: E402

QUESTION = "Tom has 5 apples. Tom buys 3 more. Then Tom gives 2 to Mia. How many apples does Tom have now?"


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty"),
        ("  \n\t ", "empty"),
        ("6 " * 40, "repeated"),
        ("yes yes yes yes yes yes yes yes", "repeated"),
        ("7 8 7 8 7 8 7 8 7 8 7 8 7 8 7 8", "repeated"),
        ("pi" * 40, "repeated"),
        ("6", None),
        ("yes", None),
        ("1 + 1 + 1 + 1 + 1 + 1 = 6", None),
        ("5 + 3 = 8. 8 - 2 = 6.\n#### 6", None),
    ],
)
def test_degenerate(text, reason):
    assert degenerate(text) == reason


def test_strip_echo_blanks_copied_runs_and_keeps_the_rest():
    assert strip_echo(QUESTION, [QUESTION]).split() == []
    kept = strip_echo(QUESTION + "\nShe has 5 + 3 - 2 = 6.\n#### 6", [QUESTION])
    assert kept.split() == "She has 5 + 3 - 2 = 6. #### 6".split()
    # a short restatement is not an echo
    assert strip_echo("Tom has 5 apples, so 5 + 3 - 2 = 6.", [QUESTION]) == "Tom has 5 apples, so 5 + 3 - 2 = 6."
    # an echo of any prompt message counts (few-shot exemplars too), case-insensitively
    shot = "A box holds 8 crayons and a teacher buys 7 boxes.\n#### 56"
    assert strip_echo(shot.upper(), [shot, QUESTION]).split() == []


def test_answer_text_and_majority():
    assert answer_text(QUESTION, [QUESTION]) == ("", "echo")
    assert answer_text("", [QUESTION]) == ("", "empty")
    assert answer_text("#### 6", [QUESTION]) == ("#### 6", None)
    assert majority(["3", None, "4", "4", "3"]) == "3"  # tie: the first seen
    assert majority([None, None]) is None
