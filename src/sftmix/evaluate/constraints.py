"""Verifiable instructions (IFEval-style): each constraint is a dict such as {"kind": "max_words", "n": 40}.

The same registry serves two purposes: `describe` writes the instruction sentence that goes into a prompt and
`check` decides whether a response obeys it, so the wording a model is trained on and the rule it is scored by
cannot drift apart. Checks are deliberately mechanical (regexes, no NLP models) so that scores are reproducible.
The `general` task scores replies with them the way IFEval is scored (strict and loose, prompt and instruction
level, nothing for an empty, looped or echoed reply): see `instructions/score.py`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import NamedTuple

# A "word" is a run of letters/digits, optionally joined by an apostrophe or hyphen ("don't", "well-known"),
# so punctuation, bullet markers and brackets never count.
WORD_RE = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_FENCE_RE = re.compile(r"^```(?:json)?[ \t]*\n(.*)\n?```$", re.DOTALL | re.IGNORECASE)
_TITLE_RE = re.compile(r"<<([^\n]+?)>>")


def count_words(text: str) -> int:
    return len(WORD_RE.findall(text))


def has_word(text: str, word: str) -> bool:
    """Whole-word, case-insensitive; lookarounds instead of \\b so that words like "c++" still work."""
    return re.search(rf"(?<!\w){re.escape(word.strip())}(?!\w)", text, re.IGNORECASE) is not None


# --- parameter access -------------------------------------------------------------------------------------------


def _param(constraint: dict, name: str, kind: str):
    if name not in constraint:
        raise ValueError(
            f"constraint {kind!r} needs parameter {name!r}; got {constraint!r} (known kinds: {_known()})"
        )
    return constraint[name]


def _int_param(constraint: dict, kind: str) -> int:
    n = _param(constraint, "n", kind)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"constraint {kind!r}: parameter 'n' must be a non-negative integer, got {n!r}")
    return n


def _phrase_param(constraint: dict, kind: str) -> str:
    phrase = _param(constraint, "phrase", kind)
    if not isinstance(phrase, str) or not phrase.strip():
        raise ValueError(f"constraint {kind!r}: parameter 'phrase' must be a non-empty string, got {phrase!r}")
    return phrase.strip()


def _words_param(constraint: dict, kind: str) -> list[str]:
    words = _param(constraint, "words", kind)
    if isinstance(words, str):
        words = [words]
    if not isinstance(words, (list, tuple)) or not words or not all(isinstance(w, str) and w.strip() for w in words):
        raise ValueError(f"constraint {kind!r}: parameter 'words' must be a non-empty list of strings, got {words!r}")
    return [w.strip() for w in words]


def _word_list(constraint: dict, kind: str, noun: str, joiner: str) -> str:
    """'keyword "sun"' or 'keywords "sun", "moon" and "star"'."""
    quoted = [f'"{w}"' for w in _words_param(constraint, kind)]
    if len(quoted) == 1:
        return f"{noun} {quoted[0]}"
    return f"{noun}s " + ", ".join(quoted[:-1]) + f" {joiner} " + quoted[-1]


# --- checkers (text is already stripped) ------------------------------------------------------------------------


def _strip_json_fence(text: str) -> str:
    m = _FENCE_RE.match(text)
    return m.group(1).strip() if m else text


def _is_json(text: str) -> bool:
    try:
        json.loads(_strip_json_fence(text))
    except ValueError:
        return False
    return True


def _bullet_count(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.lstrip().startswith(("- ", "* ")))


def _has_title(text: str) -> bool:
    return any(t.strip() for t in _TITLE_RE.findall(text))


class Kind(NamedTuple):
    check: Callable[[dict, str], bool]
    describe: Callable[[dict], str]


# Case-insensitive start/end phrases: otherwise "start with 'Sure.'" and "all lowercase" could never hold together.
KINDS: dict[str, Kind] = {
    "lowercase": Kind(
        lambda c, t: t.islower(),
        lambda c: "Your entire response should be in lowercase letters. No capital letters are allowed.",
    ),
    "uppercase": Kind(
        lambda c, t: t.isupper(),
        lambda c: "Your entire response should be in capital letters only.",
    ),
    "end_with": Kind(
        lambda c, t: t.lower().endswith(_phrase_param(c, "end_with").lower()),
        lambda c: f'Finish your response with this exact phrase: "{_phrase_param(c, "end_with")}". '
        "No other words should follow it.",
    ),
    "start_with": Kind(
        lambda c, t: t.lower().startswith(_phrase_param(c, "start_with").lower()),
        lambda c: f'Begin your response with this exact phrase: "{_phrase_param(c, "start_with")}".',
    ),
    "max_words": Kind(
        lambda c, t: count_words(t) <= _int_param(c, "max_words"),
        lambda c: f"Answer with at most {_int_param(c, 'max_words')} words.",
    ),
    "min_words": Kind(
        lambda c, t: count_words(t) >= _int_param(c, "min_words"),
        lambda c: f"Answer with at least {_int_param(c, 'min_words')} words.",
    ),
    "bullets": Kind(
        lambda c, t: _bullet_count(t) == _int_param(c, "bullets"),
        lambda c: f"Your answer must contain exactly {_int_param(c, 'bullets')} bullet points. "
        'Start each bullet point on its own line with "- ".',
    ),
    "json": Kind(
        lambda c, t: _is_json(t),
        lambda c: "Wrap your entire output in JSON format.",
    ),
    "keywords": Kind(
        lambda c, t: all(has_word(t, w) for w in _words_param(c, "keywords")),
        lambda c: f"Include the {_word_list(c, 'keywords', 'keyword', 'and')} in the response.",
    ),
    "forbidden": Kind(
        lambda c, t: not any(has_word(t, w) for w in _words_param(c, "forbidden")),
        lambda c: f"Do not include the {_word_list(c, 'forbidden', 'word', 'or')} in the response.",
    ),
    "no_commas": Kind(
        lambda c, t: "," not in t,
        lambda c: "Do not use any commas in your response.",
    ),
    "title": Kind(
        lambda c, t: _has_title(t),
        # No example title in the wording: a reply that copied "<<an example>>" from its prompt would pass.
        lambda c: "Your answer must contain a title of your own, wrapped in double angular brackets.",
    ),
    "quoted": Kind(
        lambda c, t: len(t) >= 2 and t[0] == '"' and t[-1] == '"',
        lambda c: "Wrap your entire response with double quotation marks.",
    ),
}


def _known() -> str:
    return ", ".join(KINDS)


def _kind(constraint: dict) -> Kind:
    if not isinstance(constraint, dict) or "kind" not in constraint:
        raise ValueError(
            f"a constraint must be a dict with a 'kind' key, got {constraint!r} (known kinds: {_known()})"
        )
    kind = constraint["kind"]
    if kind not in KINDS:
        raise ValueError(f"unknown constraint kind {kind!r}; known kinds: {_known()}")
    return KINDS[kind]


def check(constraint: dict, response: str) -> bool:
    """Whether `response` obeys `constraint`. Raises ValueError for an unknown kind or a bad parameter."""
    return bool(_kind(constraint).check(constraint, (response or "").strip()))


def check_all(constraints: list[dict], response: str) -> list[bool]:
    return [check(c, response) for c in constraints]


def describe(constraint: dict) -> str:
    """The instruction sentence for `constraint`, as written into prompts."""
    return _kind(constraint).describe(constraint)
