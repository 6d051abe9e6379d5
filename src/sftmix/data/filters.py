"""Row filters and ability labels, declared per source in the study file.

YAML shapes (under `sources.NAME`):

    filters:                                   # applied in order; a row is counted under the first rule removing it
      - drop: code                             # preset shorthand: drop rows that look like code (also keep: code)
      - drop: math                             # DMT's ablation is `filters: [drop: code, drop: math]`
      - {action: drop, regex: "(?i)as an ai language model", on: assistant, name: refusals}
      - {action: keep, keywords: [python, pandas], on: user}        # whole words, case-insensitive
      - {action: keep, field: lang, in: [en, de]}                   # a column of the original row
      - {action: drop, field: category, equals: brainstorm}
    labels:                                    # the first matching rule sets the row's ability
      - {ability: code, preset: code}
      - {ability: math, regex: "####"}

A rule has exactly one matcher: `preset` (code | math), `regex` (Python syntax, searched), `keywords` (a list) or
`field` with `equals` or `in`. `on` picks the text searched: any (default), user, assistant or system turns.
`field` looks in the row's own columns (meta["fields"], the top-level scalars a format does not consume) and then
in the example's meta (source, ability, format, ...); `equals: 1` also matches a column holding "1" (a null value
cannot be matched). `name` defaults to a readable description of the rule ("drop code", "keep lang in ['en']") and
is the key under which the manifest counts removed rows. YAML 1.1 reads a bare `on` key as true: that is handled.

Presets are heuristics tuned for recall on SFT data (code fences, def/class/import lines, indented returns,
`#include`, braces; GSM8K `####` and `<<a*b=c>>` markers, LaTeX, worked arithmetic, number-heavy word problems).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .example import Example

PRESET_NAMES = ("code", "math")
_M = re.MULTILINE

_CODE = [
    re.compile(r"```"),
    re.compile(r"^\s*(async\s+)?def\s+\w+\s*\(", _M),
    re.compile(r"^\s*class\s+\w+\s*[(:{]", _M),
    re.compile(r"^\s*(import\s+[\w.]+|from\s+[\w.]+\s+import\s+\w)", _M),
    re.compile(r"^[ \t]+return\b", _M),  # indented: a return inside a body, not "Return the book." in prose
    re.compile(r"^\s*#include\s*[<\"]", _M),
    re.compile(r"\bfunction\s+\w+\s*\(|\bconsole\.log\(|\bSystem\.out\.print|\bpublic\s+static\s+\w+"),
    re.compile(r"\bSELECT\b[\s\S]{0,200}?\bFROM\b|\b(CREATE\s+TABLE|INSERT\s+INTO|DELETE\s+FROM)\b|\bUPDATE\s+\w+\s+SET\b"),
    re.compile(r"^\s*(if|for|while|elif|else|try|except|with)\b[^\n]*:[ \t]*$", _M),  # Python block headers
    re.compile(r"^\s*(print|puts|echo|console\.log|printf)\b\s*[(\"']", _M),
    re.compile(r"\bdo\s*\|\w+(,\s*\w+)*\|"),  # Ruby blocks
    re.compile(r"</?(div|html|body|script|span|table|p)\b[^>]*>", re.IGNORECASE),
]

_MATH = [
    re.compile(r"####"),
    re.compile(r"<<[^<>\n]*=[^<>\n]*>>"),  # GSM8K calculator annotations
    re.compile(r"\\(frac|sqrt|sum|int|cdot|times|boxed|div|pi|theta|alpha|le|ge|neq)\b|\\\(|\\\[|\$\$"),
    re.compile(r"\d\s*[-+*/×÷^]\s*\(?\d[\d.,]*\)?\s*=\s*-?\$?\d"),  # worked arithmetic: 3 + 4 = 7
    re.compile(r"\b\d*[a-z]\s*[-+*/^]\s*\d+\s*=\s*-?\d|\bsolve for [a-z]\b", re.IGNORECASE),  # 2x + 3 = 7
]
_WORD_PROBLEM = re.compile(
    r"\b(how (many|much|long|far|old|fast)|what (is|was|are) the (total|sum|difference|product|average|"
    r"percentage|ratio|value)|calculate|compute|find the (value|sum|number|area|perimeter|total|average))\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*")


def _math_text(text: str) -> bool:
    if any(p.search(text) for p in _MATH):
        return True
    # A word problem: a question about quantities that carries several numbers.
    return bool(_WORD_PROBLEM.search(text)) and len(_NUMBER.findall(text)) >= 3


_STATEMENT_END = re.compile(r"[{};][ \t]*$", _M)
_ASSIGNMENT = re.compile(r"\s*[A-Za-z_][\w.]*(\[[^\]]*\])?\s*[-+*/%]?=\s*\S")


def _code_text(text: str) -> bool:
    if any(p.search(text) for p in _CODE):
        return True
    # C-like code without a fence: several lines ending in a brace or a semicolon; prose rarely has two.
    # Unfenced code: several statement-like lines (ending in a brace or semicolon, or assignments); prose and worked
    # math rarely have two.
    if len(_STATEMENT_END.findall(text)) >= 2:
        return True
    # A line with a second '=' is a worked calculation ("Total = 3 * 4 = 12"), not an assignment.
    assignments = sum(1 for line in text.splitlines() if _ASSIGNMENT.match(line) and line.count("=") == 1)
    return assignments >= 2


PRESETS = {"code": _code_text, "math": _math_text}


class _Matcher(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = None
    preset: Literal["code", "math"] | None = None
    regex: str | None = None
    keywords: list[str] | None = Field(None, min_length=1)
    field: str | None = None
    equals: Any = None
    in_: list[Any] | None = Field(None, alias="in", min_length=1)
    on: Literal["any", "user", "assistant", "system"] = "any"

    @model_validator(mode="before")
    @classmethod
    def _yaml_on_key(cls, data):
        # YAML 1.1 (PyYAML) reads the key `on` as the boolean True; take it back.
        if isinstance(data, dict) and True in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"invalid regex {v!r}: {e}") from None
        return v

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and any(not k.strip() for k in v):
            raise ValueError("keywords must not be empty strings")
        return v

    @model_validator(mode="after")
    def _one_matcher(self):
        given = [k for k in ("preset", "regex", "keywords", "field") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of preset, regex, keywords or field (got {', '.join(given) or 'none'})")
        has_value = [k for k, v in (("equals", self.equals), ("in", self.in_)) if v is not None]
        if self.field is not None:
            if len(has_value) != 1:
                raise ValueError(f"field {self.field!r} needs exactly one of equals or in")
            if "on" in self.model_fields_set:
                raise ValueError("'on' picks turns to search; a field rule looks at a column, not at turns")
        elif has_value:
            raise ValueError(f"{' and '.join(has_value)} only go with field")
        return self

    def describe(self) -> str:
        where = "" if self.on == "any" else f" in {self.on}"
        if self.preset:
            return f"{self.preset}{where}"
        if self.regex is not None:
            return f"regex {self.regex!r}{where}"
        if self.keywords is not None:
            return f"keywords {', '.join(self.keywords)}{where}"
        if self.equals is not None:
            return f"{self.field} = {self.equals!r}"
        return f"{self.field} in {self.in_!r}"

    def compile(self) -> "Rule":
        return Rule(self)


class FilterRule(_Matcher):
    action: Literal["keep", "drop"]

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data):
        # `drop: code` / `keep: math`: the one-line form for the presets.
        if isinstance(data, dict):
            short = [k for k in ("keep", "drop") if k in data]
            if len(short) > 1:
                raise ValueError("give one of keep or drop")
            if short:
                if "action" in data:
                    raise ValueError(f"give either action or the {short[0]}: PRESET shorthand")
                data = dict(data)
                preset = data.pop(short[0])
                if preset not in PRESET_NAMES:
                    raise ValueError(
                        f"unknown preset {preset!r} in '{short[0]}: {preset}'; expected one of {', '.join(PRESET_NAMES)} "
                        f"(or write action: {short[0]} with regex, keywords or field)"
                    )
                data.update(action=short[0], preset=preset)
        return data

    @property
    def label(self) -> str:
        return self.name or f"{self.action} {self.describe()}"


class LabelRule(_Matcher):
    ability: str = Field(min_length=1)

    @property
    def label(self) -> str:
        return self.name or f"{self.ability} if {self.describe()}"


def _texts(ex: Example, on: str) -> Iterator[str]:
    for m in ex.messages:
        if on == "any" or m["role"] == on:
            yield m["content"]


def _field_value(ex: Example, name: str):
    fields = ex.meta.get("fields") or {}
    return fields[name] if name in fields else ex.meta.get(name)


def _same(a, b) -> bool:
    # YAML `equals: 1` against a column holding "1" (CSV-born datasets) should match.
    return a == b or (a is not None and b is not None and type(a) is not type(b) and str(a) == str(b))


class Rule:
    """A compiled matcher: `Rule(rule)(example) -> bool`."""

    def __init__(self, rule: _Matcher):
        self.rule = rule
        if rule.preset:
            test = PRESETS[rule.preset]
            self._text = test
        elif rule.regex is not None:
            pattern = re.compile(rule.regex)
            self._text = lambda t: pattern.search(t) is not None
        elif rule.keywords is not None:
            # Lookarounds instead of \b so that keywords such as "c++" or ".net" match as whole words too.
            words = "|".join(re.escape(k.strip()) for k in sorted(rule.keywords, key=len, reverse=True))
            pattern = re.compile(rf"(?<!\w)(?:{words})(?!\w)", re.IGNORECASE)
            self._text = lambda t: pattern.search(t) is not None
        else:
            self._text = None

    def __call__(self, ex: Example) -> bool:
        r = self.rule
        if self._text is None:
            value = _field_value(ex, r.field)
            if r.in_ is not None:
                return any(_same(value, v) for v in r.in_)
            return _same(value, r.equals)
        return any(self._text(t) for t in _texts(ex, r.on))


def rule_labels(rules: Iterable[FilterRule | LabelRule]) -> list[str]:
    """The manifest key of each rule; a repeated label gets ' #2', ' #3' so that counts never merge."""
    seen: Counter = Counter()
    out = []
    for r in rules:
        seen[r.label] += 1
        out.append(r.label if seen[r.label] == 1 else f"{r.label} #{seen[r.label]}")
    return out


def filter_stream(examples: Iterable[Example], rules: list[FilterRule], removed: Counter) -> Iterator[Example]:
    """The rows that pass every rule, in order; `removed[label]` counts rows removed by each rule (streaming)."""
    compiled = list(zip(rule_labels(rules), [Rule(r) for r in rules], [r.action for r in rules]))
    for label, _, _ in compiled:
        removed.setdefault(label, 0)
    for ex in examples:
        for label, match, action in compiled:
            if match(ex) != (action == "keep"):
                removed[label] += 1
                break
        else:
            yield ex


def apply_filters(examples: Iterable[Example], rules: list[FilterRule]) -> tuple[list[Example], dict[str, int]]:
    """(kept rows, {rule label: rows it removed}); every rule appears in the counts, 0 when it removed nothing."""
    removed: Counter = Counter()
    kept = list(filter_stream(examples, rules, removed))
    return kept, dict(removed)


def label_stream(examples: Iterable[Example], rules: list[LabelRule], counts: Counter) -> Iterator[Example]:
    """Set meta["ability"] from the first matching rule (rows matching none keep theirs); counts[ability] += 1 for
    every row, so `counts` ends as the rows per ability."""
    compiled = [(Rule(r), r.ability) for r in rules]
    for ex in examples:
        for match, ability in compiled:
            if match(ex):
                ex.meta["ability"] = ability
                break
        counts[ex.meta.get("ability", "")] += 1
        yield ex


def apply_labels(examples: Iterable[Example], rules: list[LabelRule]) -> dict[str, int]:
    """Label rows in place; returns {ability: rows} over all the rows given."""
    counts: Counter = Counter()
    for _ in label_stream(examples, rules, counts):
        pass
    return dict(counts)
