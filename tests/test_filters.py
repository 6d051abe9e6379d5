import pytest
import yaml
from pydantic import ValidationError

from sftmix.data.example import chat, code_example
from sftmix.data.filters import (
    PRESETS,
    FilterRule,
    LabelRule,
    apply_filters,
    apply_labels,
    filter_stream,
    rule_labels,
)

CODE_ROWS = [
    chat("Reverse a list in Python.", "```python\nxs[::-1]\n```"),
    chat("Write add.", "def add(a, b):\n    return a + b"),
    chat("Include a header.", "#include <stdio.h>\nint main() { return 0; }"),
    chat("Sum the list.", "total = 0\nfor x in xs:\n    total += x\nprint(total)"),
    chat("Users named T", "SELECT *\nFROM users\nWHERE name LIKE 'T%';"),
    code_example("def inc(x):\n", "    return x + 1\n"),
]
MATH_ROWS = [
    chat("Tom has 3 apples and buys 4 more. How many now?", "3 + 4 = <<3+4=7>>7\n#### 7"),
    chat("Simplify.", "We get \\frac{1}{2}."),
    chat("Solve for x: 2x + 3 = 7", "x = 2"),
    chat("A shop sells 12 pens at 3 dollars and 5 pads at 2 dollars. What is the total cost?", "It costs 46 dollars."),
]
GENERAL_ROWS = [
    chat("Write a haiku about rain.", "Soft rain on the roof\nwhispers to the sleeping town\nmorning comes in grey"),
    chat("Give me three tips for sleep.", "Keep a schedule; avoid screens; keep the room cool."),
    chat("Who wrote Hamlet?", "William Shakespeare wrote it around 1600."),
    chat("Return policy?", "Return the item within 30 days for a refund."),
]


def rules(text: str, model=FilterRule):
    return [model.model_validate(r) for r in yaml.safe_load(text)]


def test_presets_separate_code_math_and_general():
    assert all(PRESETS["code"](m["content"]) for ex in CODE_ROWS for m in ex.messages[-1:])
    assert all(any(PRESETS["math"](m["content"]) for m in ex.messages) for ex in MATH_ROWS)
    for ex in GENERAL_ROWS:
        assert not any(PRESETS["code"](m["content"]) or PRESETS["math"](m["content"]) for m in ex.messages), ex
    for ex in MATH_ROWS:  # worked arithmetic is not code
        assert not any(PRESETS["code"](m["content"]) for m in ex.messages), ex


def test_dmt_ablation_is_one_line_of_yaml():
    general = GENERAL_ROWS + CODE_ROWS + MATH_ROWS
    kept, removed = apply_filters(general, rules("[drop: code, drop: math]"))
    assert kept == GENERAL_ROWS
    assert removed == {"drop code": len(CODE_ROWS), "drop math": len(MATH_ROWS)}


def test_keep_and_drop_by_regex_keywords_and_field():
    rows = [chat("Use pandas to read a CSV.", "pd.read_csv(path)", id="a"),
            chat("Tell me about Pandas, the animals.", "They eat bamboo.", id="b"),
            chat("What is C++?", "A language. As an AI language model I think so.", id="c")]
    rows[0].meta["fields"] = {"lang": "en", "score": 5}
    rows[1].meta["fields"] = {"lang": "de", "score": 3}
    rows[2].meta["fields"] = {"lang": "fr", "score": "5"}
    kept, removed = apply_filters(rows, rules("[{action: keep, keywords: [pandas, c++], on: user}]"))
    assert [e.id for e in kept] == ["a", "b", "c"]  # case-insensitive whole words, c++ included
    kept, _ = apply_filters(rows, rules("[{action: keep, keywords: [panda]}]"))
    assert kept == []  # whole words only
    kept, removed = apply_filters(rows, rules("[{action: drop, regex: '(?i)as an ai language model', on: assistant, name: refusals}]"))
    assert [e.id for e in kept] == ["a", "b"] and removed == {"refusals": 1}
    kept, _ = apply_filters(rows, rules("[{action: drop, regex: '(?i)as an ai', on: user}]"))
    assert len(kept) == 3  # `on` limits the search to those turns
    kept, removed = apply_filters(rows, rules("[{action: keep, field: lang, in: [en, de]}]"))
    assert [e.id for e in kept] == ["a", "b"] and removed == {"keep lang in ['en', 'de']": 1}
    kept, _ = apply_filters(rows, rules("[{action: drop, field: score, equals: 5}]"))
    assert [e.id for e in kept] == ["b"]  # "5" from a string column matches 5 too
    kept, _ = apply_filters(rows, rules("[{action: keep, field: id, equals: c}]"))
    assert [e.id for e in kept] == ["c"]  # falls back to the example's meta


def test_each_row_is_counted_once_under_the_first_rule_that_removes_it():
    rows = CODE_ROWS + MATH_ROWS + GENERAL_ROWS
    rs = rules("[drop: code, {action: drop, regex: '.'}]")
    kept, removed = apply_filters(rows, rs)
    assert kept == [] and removed == {"drop code": len(CODE_ROWS), "drop regex '.'": len(rows) - len(CODE_ROWS)}
    assert sum(removed.values()) == len(rows)
    assert apply_filters(rows, rules("[drop: code, drop: code]"))[1] == {"drop code": len(CODE_ROWS), "drop code #2": 0}
    from collections import Counter

    counts = Counter()
    stream = filter_stream(iter(rows), rules("[keep: math]"), counts)
    assert list(stream) == MATH_ROWS and counts == {"keep math": len(rows) - len(MATH_ROWS)}


def test_labels_set_ability_by_first_matching_rule():
    rows = [chat(e.messages[0]["content"], e.messages[-1]["content"], ability="general")
            for e in CODE_ROWS[:2] + MATH_ROWS[:2] + GENERAL_ROWS[:2]]
    counts = apply_labels(rows, rules("[{ability: code, preset: code}, {ability: math, regex: '####|frac'}]", LabelRule))
    assert counts == {"code": 2, "math": 2, "general": 2}
    assert [e.meta["ability"] for e in rows] == ["code", "code", "math", "math", "general", "general"]
    assert rule_labels(rules("[{ability: code, preset: code, on: assistant}]", LabelRule)) == ["code if code in assistant"]


@pytest.mark.parametrize("rule,fragment", [
    ({"drop": "poetry"}, "unknown preset 'poetry'"),
    ({"action": "drop"}, "exactly one of preset, regex, keywords or field (got none)"),
    ({"action": "drop", "regex": "a", "keywords": ["b"]}, "got regex, keywords"),
    ({"action": "drop", "regex": "(unclosed"}, "invalid regex"),
    ({"action": "keep", "field": "lang"}, "needs exactly one of equals or in"),
    ({"action": "keep", "field": "lang", "equals": "en", "on": "user"}, "'on' picks turns"),
    ({"action": "keep", "regex": "x", "equals": 1}, "equals only go with field"),
    ({"action": "remove", "regex": "x"}, "action"),
    ({"action": "keep", "regex": "x", "colour": "red"}, "colour"),
    ({"action": "keep", "keywords": []}, "keywords"),
    ({"drop": "code", "keep": "math"}, "one of keep or drop"),
])
def test_bad_rules_are_clear_errors(rule, fragment):
    with pytest.raises(ValidationError) as info:
        FilterRule.model_validate(rule)
    assert fragment in str(info.value)


def test_label_rule_needs_an_ability_and_a_matcher():
    with pytest.raises(ValidationError):
        LabelRule.model_validate({"preset": "code"})
    with pytest.raises(ValidationError):
        LabelRule.model_validate({"ability": "code"})
