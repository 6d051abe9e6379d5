"""IFEval: the 25 instruction checkers (a reply that follows and one that does not, strict and loose), the loader's
errors, the strict/loose prompt/instruction-level scores, and replies that must score nothing (empty, looped, echoed)
for both `ifeval` and the built-in `general` task."""

from __future__ import annotations

import json

import pytest

from sftmix.errors import DataError, SftmixError
from sftmix.evaluate.ifeval import load_ifeval
from sftmix.evaluate.instructions import checkers
from sftmix.evaluate.instructions.score import loose_variants, score_reply, summarize, why_not_an_answer
from sftmix.evaluate.tasks import TASKS, make_task

PROMPT = "Tell me something about honey bees. Follow the formatting instructions."
REQUEST = "Write two sentences about bees."
REPEAT_PROMPT = f"First repeat the request word for word without change, then give your answer. Request: {REQUEST}"

# (instruction id, kwargs, a reply that follows it, a reply that does not). Neither passes by accident under loose
# scoring: the bad reply fails with its first line, last line or asterisks removed too.
CASES = [
    ("keywords:existence", {"keywords": ["ocean", "salt"]},
     "The Ocean tastes of salt because rivers carry minerals into it.",
     "The sea is wide and blue and full of fish."),
    ("keywords:frequency", {"keyword": "tide", "frequency": 3, "relation": "at least"},
     "The tide comes in. The tide goes out. Every tide follows the moon.",
     "The tide comes in and goes out twice a day."),
    ("keywords:forbidden_words", {"forbidden_words": ["sun", "hot"]},
     "The sunny desert is dry and its nights are cold.",
     "The Sun makes the desert very hot by day."),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 3, "let_relation": "at least"},
     "Zebras zigzag past the lazy keeper at noon.",
     "Horses run across the open field at noon."),
    ("language:response_language", {"language": "de"},
     "Bienen leben in großen Völkern und sammeln den ganzen Sommer lang Nektar für ihren Honig.",
     "Bees live in large colonies and collect nectar all summer long for their honey."),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"},
     "Dr. Smith keeps bees at home. He sells their honey.",
     "Bees make honey. They live in hives. A queen lays eggs. Workers fly out."),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3},
     "Bees live in hives.\n***\nThey make honey from nectar.\n***\nA queen lays the eggs.",
     "Bees live in hives.\n***\nThey make honey from nectar and a queen lays the eggs."),
    ("length_constraints:number_words", {"num_words": 10, "relation": "at least"},
     "Honey bees live together in large colonies and make sweet golden honey.",
     "Bees make honey together."),
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "honey"},
     "Bees live in hives all year.\n\n\"Honey,\" they say, is what they make.",
     "Bees live in hives all year.\n\nWax is what they make besides honey."),
    ("detectable_content:number_placeholders", {"num_placeholders": 2},
     "Dear [name], come and see the hives at [address] on Sunday.",
     "Dear friend, come and see the hives at [address] on Sunday."),
    ("detectable_content:postscript", {"postscript_marker": "P.S."},
     "Thank you for visiting our hives.\n\np.s. Bring a jar for the honey.",
     "Thank you for visiting our hives. Please bring a jar for the honey."),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2},
     "Two facts about bees:\n* Bees make honey.\n- Bees live in hives.\nThat is all.",
     "Facts about bees follow.\n* Bees make honey in their hives.\nThat is all for now."),
    ("detectable_format:constrained_response", {},
     "My answer is yes.",
     "Yes, I think bees can recognise human faces."),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2},
     "Bees are *busy* insects and make **sweet honey** all summer.",
     "Bees are *busy* insects and make sweet honey all summer."),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2},
     "Section 1\nBees make honey from nectar.\nSection 2\nBees live in hives with a queen.",
     "Section 1\nBees make honey from nectar and live in hives with a queen."),
    ("detectable_format:json_format", {},
     '```json\n{"topic": "bees", "facts": ["they make honey", "they live in hives"]}\n```',
     'Here it is: {"topic": "bees", "facts": ["they make honey"]}'),
    ("detectable_format:title", {},
     "<<Busy Bees>>\nBees make honey and live in hives.",
     "Busy Bees\nBees make honey and live in hives <<>>."),
    ("combination:two_responses", {},
     "Bees make honey from nectar.\n******\nHoney is what bees make from nectar.",
     "Bees make honey from nectar.\n******\nBees make honey from nectar."),
    ("combination:repeat_prompt", {"prompt_to_repeat": REQUEST},
     f"{REQUEST} Bees make honey from nectar. They live in hives with a queen.",
     "Bees make honey from nectar. They live in hives with a queen."),
    ("startend:end_checker", {"end_phrase": "Is there anything else I can help with?"},
     "Bees make honey from nectar. Is there anything else I can help with?",
     "Is there anything else I can help with? Bees make honey from nectar."),
    ("startend:quotation", {},
     '"Bees make honey from the nectar of flowers."',
     'Bees make "honey" from the nectar of flowers.'),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "Bees make HONEY in the HIVE all summer.",
     "Bees make honey in the Hive all summer."),
    ("change_case:english_capital", {},
     "HONEY BEES LIVE IN LARGE COLONIES AND EACH COLONY HAS ONE QUEEN WHO LAYS THE EGGS.",
     "Honey bees live in large colonies and each colony has one queen who lays the eggs."),
    ("change_case:english_lowercase", {},
     "honey bees live in large colonies and each colony has one queen who lays the eggs.",
     "honey bees live in large colonies. Each colony has one queen who lays the eggs."),
    ("punctuation:no_comma", {},
     "Bees make honey and wax and royal jelly.",
     "Bees make honey, wax and royal jelly."),
]


def _prompt_for(iid: str) -> str:
    return REPEAT_PROMPT if iid == "combination:repeat_prompt" else PROMPT


def _score(iid: str, kwargs: dict, reply: str) -> dict:
    item = {"id": iid, "kwargs": checkers.clean_kwargs(iid, kwargs)}
    prefix = kwargs.get("prompt_to_repeat", "")
    check = (iid, lambda text: checkers.check(iid, item["kwargs"], text))
    return score_reply([check], reply, [_prompt_for(iid)], prefix)


def test_all_25_instruction_types_are_registered_and_tested():
    assert len(checkers.INSTRUCTIONS) == 25
    assert [c[0] for c in CASES] == list(checkers.INSTRUCTIONS)


@pytest.mark.parametrize("iid, kwargs, good, bad", CASES, ids=[c[0] for c in CASES])
def test_each_instruction_strict_and_loose(iid, kwargs, good, bad):
    ok = _score(iid, kwargs, good)
    assert ok["strict"] == [True] and ok["loose"] == [True] and "degenerate" not in ok, (good, ok)
    no = _score(iid, kwargs, bad)
    assert no["strict"] == [False] and no["loose"] == [False] and "degenerate" not in no, (bad, no)


# Replies that break an instruction only in a preamble line, a sign-off line or markdown asterisks: loose scoring
# forgives them, strict does not.
LOOSE_ONLY = [
    ("detectable_format:json_format", {}, 'Here is the JSON you asked for:\n{"topic": "bees", "count": 3}'),
    ("startend:quotation", {}, 'Sure, here it is.\n"Bees make honey from nectar."'),
    ("startend:quotation", {}, '**"Bees make honey from nectar."**'),
    ("startend:end_checker", {"end_phrase": "That is all."}, "Bees make honey from nectar. That is all.\nCheers!"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2},
     "*Facts about bees*\n* Bees make honey.\n* Bees live in hives."),
    ("punctuation:no_comma", {}, "Sure, here you go.\nBees make honey from nectar in their hives."),
    ("length_constraints:number_words", {"num_words": 8, "relation": "less than"},
     "Here is my very short answer for you:\nBees make honey."),
]


@pytest.mark.parametrize("iid, kwargs, reply", LOOSE_ONLY, ids=[f"{c[0]}-{i}" for i, c in enumerate(LOOSE_ONLY)])
def test_loose_forgives_first_line_last_line_and_asterisks(iid, kwargs, reply):
    row = _score(iid, kwargs, reply)
    assert row["strict"] == [False] and row["loose"] == [True], row


def test_loose_variants_are_the_papers_eight():
    variants = loose_variants("first *line*\nmiddle\nlast")
    assert variants == ["first *line*\nmiddle\nlast", "middle\nlast", "first *line*\nmiddle", "middle",
                        "first line\nmiddle\nlast", "middle\nlast", "first line\nmiddle", "middle"]


def test_checkers_follow_the_papers_details():
    check = checkers.check
    # word counts are runs of word characters (so "it's" is two, as in the paper's tokenizer); "less than" is
    # strict, "at least" inclusive
    assert checkers.count_words("it's fine, 42!") == 4
    assert check("length_constraints:number_words", {"num_words": 3, "relation": "less than"}, "fine, 42!")
    assert not check("length_constraints:number_words", {"num_words": 3, "relation": "less than"}, "one two three")
    assert check("length_constraints:number_words", {"num_words": 3, "relation": "at least"}, "one two three")
    # Punkt keeps abbreviations and decimals inside a sentence
    assert checkers.count_sentences("Dr. Smith paid $3.50 for honey. Was it cheap? Yes!") == 3
    # keyword frequency counts substrings case-insensitively; letter frequency ignores case
    assert check("keywords:frequency", {"keyword": "bee", "frequency": 2, "relation": "at least"}, "Bee beehive")
    assert check("keywords:frequency", {"keyword": "bee", "frequency": 2, "relation": "less than"}, "A bee hums.")
    assert check("keywords:letter_frequency", {"letter": "A", "let_frequency": 2, "let_relation": "less than"},
                 "a bee")
    # a doubled paragraph separator is an empty paragraph in the middle: not followed
    assert not check("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "One.\n***\n***\nTwo.")
    assert check("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "***\nOne.\n***\nTwo.\n***")
    # two responses must differ and be exactly two
    assert not check("combination:two_responses", {}, "a\n******\nb\n******\nc")
    # "P.P.S" and "P.S." are different markers
    assert check("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Hi.\nP. P. S. more")
    assert not check("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Hi.\nP.S. more")
    # language: Chinese is "zh" even though langdetect says "zh-cn"; digits alone are no language at all
    assert check("language:response_language", {"language": "zh"}, "蜜蜂生活在蜂巢里，它们用花蜜酿造蜂蜜。")
    assert not check("language:response_language", {"language": "en"}, "12345 67890")
    # an uppercase reply must still be English
    assert not check("change_case:english_capital", {}, "LES ABEILLES FONT DU MIEL AVEC LE NECTAR DES FLEURS.")


def test_language_detection_is_deterministic():
    text = "Le miel est bon"  # short texts are where an unseeded langdetect flips between runs
    assert len({checkers.detect_language(text) for _ in range(5)}) == 1


# --- scores ---------------------------------------------------------------------------------------------------------


def test_prompt_and_instruction_level_strict_and_loose():
    rows = [
        {"prompt_strict": 1.0, "prompt_loose": 1.0, "strict": [True, True], "loose": [True, True]},
        {"prompt_strict": 0.0, "prompt_loose": 1.0, "strict": [True, False], "loose": [True, True]},
        {"prompt_strict": 0.0, "prompt_loose": 0.0, "strict": [False], "loose": [False]},
    ]
    s = summarize(rows)
    assert s["prompt_strict"] == pytest.approx(1 / 3) and s["prompt_loose"] == pytest.approx(2 / 3)
    # instruction level is over all 5 instructions, not a mean of per-prompt shares
    assert s["instruction_strict"] == pytest.approx(3 / 5) and s["instruction_loose"] == pytest.approx(4 / 5)


def _write_jsonl(tmp_path, rows, name="input_data.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ROWS = [
    {"key": 1000, "prompt": "Write a short note about bees. Wrap your entire response with double quotation marks. "
     "Do not use any commas.", "instruction_id_list": ["startend:quotation", "punctuation:no_comma"],
     "kwargs": [{}, {}]},
    {"key": 1001, "prompt": "Write a haiku about honey with a title wrapped in double angular brackets, i.e. "
     "<<title>>. Include the keywords honey and gold.",
     "instruction_id_list": ["detectable_format:title", "keywords:existence"],
     "kwargs": [{}, {"keywords": ["honey", "gold"]}]},
    # the Hugging Face copy pads every kwargs object with nulls
    {"key": 1002, "prompt": "Answer in fewer than 12 words: what do bees make?",
     "instruction_id_list": ["length_constraints:number_words"],
     "kwargs": [{"num_words": 12, "relation": "less than", "keywords": None, "language": None}]},
]


def test_task_end_to_end(tmp_path):
    path = _write_jsonl(tmp_path, ROWS)
    assert "ifeval" in TASKS
    task = make_task("ifeval", path=str(path))
    assert (task.name, task.ability, task.metric, len(task.items)) == ("ifeval", "general", "prompt_strict", 3)
    assert task.items[2].meta["instructions"] == [
        {"id": "length_constraints:number_words", "kwargs": {"num_words": 12, "relation": "less than"}}]
    assert task.key()["params"]["path"]["sha256"]  # a changed file is a different task
    replies = [
        ['"Bees visit flowers and turn nectar into honey."'],
        ["**<<Liquid Gold>>**\nHoney drips slow\ngolden light in a jar\nsummer kept"],  # honey, gold: loose title
        ["Bees make honey, wax and royal jelly, and they also pollinate many of our crops."],  # too long
    ]
    rows = task.score(task.items, replies)
    assert [r["strict"] for r in rows] == [[True, True], [True, True], [False]]
    assert [r["score"] for r in rows] == [1.0, 1.0, 0.0]
    summary = task.summary(rows)
    assert summary == {"prompt_strict": pytest.approx(2 / 3), "prompt_loose": pytest.approx(2 / 3),
                       "instruction_strict": pytest.approx(4 / 5), "instruction_loose": pytest.approx(4 / 5)}
    assert len(make_task("ifeval", path=str(path), limit=2).items) == 2


def test_task_needs_a_path():
    with pytest.raises(SftmixError, match="params.path"):
        make_task("ifeval")


@pytest.mark.parametrize(
    "ids, kwargs, needle",
    [
        (["keywords:existance"], [{"keywords": ["x"]}], r"unknown instruction id 'keywords:existance' \(did you "
                                                          r"mean 'keywords:existence'\?\); known: keywords:existence"),
        (["keywords:existence"], [{"keywords": "honey"}], r"kwarg 'keywords' must be a non-empty list of strings"),
        (["keywords:existence"], [{}], r"missing kwargs keywords"),
        (["punctuation:no_comma"], [{"num_words": 3}], r"unexpected kwargs num_words \(it takes no kwargs\)"),
        (["length_constraints:number_words"], [{"num_words": 3, "relation": "at most"}],
         r"kwarg 'relation' must be one of 'less than', 'at least', got 'at most'"),
        (["length_constraints:number_words"], [{"num_words": "3", "relation": "at least"}],
         r"kwarg 'num_words' must be a non-negative integer"),
        (["language:response_language"], [{"language": "klingon"}], r"kwarg 'language' must be an ISO 639-1"),
        (["keywords:letter_frequency"], [{"letter": "ab", "let_frequency": 2, "let_relation": "at least"}],
         r"kwarg 'letter' must be a single letter"),
        (["punctuation:no_comma", "detectable_format:title"], [{}], r"'kwargs' must be a list with one object per"),
        ([], [], r"'instruction_id_list' must be a non-empty list"),
        (["punctuation:no_comma"], ["x"], r"kwargs must be an object"),
    ],
)
def test_bad_rows_name_the_file_and_line(tmp_path, ids, kwargs, needle):
    rows = [ROWS[0], {"key": 7, "prompt": "Say something.", "instruction_id_list": ids, "kwargs": kwargs}]
    path = _write_jsonl(tmp_path, rows)
    with pytest.raises(DataError, match=rf"input_data.jsonl\b.*\bline 2\b.*{needle}"):
        load_ifeval(str(path))
    with pytest.raises(SftmixError, match="line 2"):  # and through the task registry, before any generation
        make_task("ifeval", path=str(path))


def test_other_bad_files(tmp_path):
    with pytest.raises(DataError, match=r"line 1\)?: field 'prompt' must be a non-empty string"):
        load_ifeval(str(_write_jsonl(tmp_path, [{"key": 1, "instruction_id_list": ["punctuation:no_comma"],
                                                 "kwargs": [{}]}])))
    with pytest.raises(DataError, match=r"line 2\)?: key '1000' repeats"):
        load_ifeval(str(_write_jsonl(tmp_path, [ROWS[0], ROWS[0]])))
    bad = tmp_path / "broken.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    with pytest.raises(DataError, match="broken.jsonl line 2: invalid JSON"):
        load_ifeval(str(bad))
    with pytest.raises(DataError, match="file not found"):
        load_ifeval(str(tmp_path / "missing.jsonl"))


# --- replies that are not answers -----------------------------------------------------------------------------------


def _junk(prompt: str) -> dict[str, str]:
    return {"empty": "", "blank": " \n\t ", "echo": prompt, "echo twice": f"{prompt}\n{prompt}",
            "echo and ok": f"{prompt}\nOk.", "repeated": "honey " * 50, "looped char": "a" * 200}


def test_junk_scores_zero_on_ifeval(tmp_path):
    path = _write_jsonl(tmp_path, ROWS)
    task = make_task("ifeval", path=str(path))
    for name in _junk("x"):
        replies = [[_junk(e.messages[0]["content"])[name]] for e in task.items]
        rows = task.score(task.items, replies)
        assert task.summary(rows) == {"prompt_strict": 0.0, "prompt_loose": 0.0, "instruction_strict": 0.0,
                                      "instruction_loose": 0.0}, name
        assert all(r["degenerate"] for r in rows), name


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_junk_scores_zero_on_general(difficulty):
    task = make_task("general", limit=60, difficulty=difficulty)
    for name in _junk("x"):
        replies = [[_junk(e.prompt_messages[-1]["content"])[name]] for e in task.items]
        summary = task.summary(task.score(task.items, replies))
        assert max(summary.values()) == 0.0, (name, summary)


def test_echo_guard_leaves_real_answers_alone():
    options = ("Answer with one of the following options: ('My answer is yes.', 'My answer is no.', "
               "'My answer is maybe.')")
    assert why_not_an_answer("My answer is yes.", [f"Is honey sweet? {options}"]) is None
    # repeating the request is what combination:repeat_prompt asks for; the answer after it is the reply's own
    reply = f"{REQUEST} Bees make honey from nectar. They live in hives with a queen."
    assert why_not_an_answer(reply, [REPEAT_PROMPT], REQUEST) is None
    assert why_not_an_answer(REQUEST, [REPEAT_PROMPT], REQUEST) == "echo"
    # quoting a clause of the prompt inside a long answer of its own is not an echo
    prompt = "Write a story about a bee named Maya who gets lost in a big city and finds her way home again."
    story = ("Maya the bee who gets lost in a big city and finds her way home again was small but brave. "
             "She followed the smell of lavender across rooftops, rested on a bus stop sign, asked a pigeon for "
             "directions and at sunset saw the old oak tree above her hive.")
    assert why_not_an_answer(story, [prompt]) is None
    assert why_not_an_answer(prompt, [prompt]) == "echo"


# --- agreement with the reference implementation -----------------------------------------------------------------

# kwargs tried for each instruction in the comparison below
REFERENCE_KWARGS = {
    "keywords:existence": [{"keywords": ["bees", "honey"]}, {"keywords": ["the"]}],
    "keywords:frequency": [{"keyword": k, "frequency": f, "relation": r}
                           for k in ("the", "bee") for f in (1, 3) for r in ("less than", "at least")],
    "keywords:forbidden_words": [{"forbidden_words": ["sun", "hot"]}, {"forbidden_words": ["the", "honey"]}],
    "keywords:letter_frequency": [{"letter": "e", "let_frequency": f, "let_relation": r}
                                  for f in (2, 5) for r in ("less than", "at least")],
    "language:response_language": [{"language": "en"}, {"language": "de"}],
    "length_constraints:number_sentences": [{"num_sentences": n, "relation": r}
                                            for n in (2, 3) for r in ("less than", "at least")],
    "length_constraints:number_paragraphs": [{"num_paragraphs": n} for n in (1, 2, 3)],
    "length_constraints:number_words": [{"num_words": n, "relation": r}
                                        for n in (8, 20) for r in ("less than", "at least")],
    "length_constraints:nth_paragraph_first_word": [
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "honey"},
        {"num_paragraphs": 1, "nth_paragraph": 1, "first_word": "sure"}],
    "detectable_content:number_placeholders": [{"num_placeholders": n} for n in (1, 2)],
    "detectable_content:postscript": [{"postscript_marker": m} for m in ("P.S.", "P.P.S")],
    "detectable_format:number_bullet_lists": [{"num_bullets": n} for n in (1, 2, 3)],
    "detectable_format:constrained_response": [{}],
    "detectable_format:number_highlighted_sections": [{"num_highlights": n} for n in (1, 2)],
    "detectable_format:multiple_sections": [{"section_spliter": "Section", "num_sections": n} for n in (1, 2)],
    "detectable_format:json_format": [{}],
    "detectable_format:title": [{}],
    "combination:two_responses": [{}],
    "combination:repeat_prompt": [{"prompt_to_repeat": REQUEST}],
    "startend:end_checker": [{"end_phrase": p} for p in ("Is there anything else I can help with?", "That is all.")],
    "startend:quotation": [{}],
    "change_case:capital_word_frequency": [{"capital_frequency": n, "capital_relation": r}
                                           for n in (1, 2) for r in ("less than", "at least")],
    "change_case:english_capital": [{}],
    "change_case:english_lowercase": [{}],
    "punctuation:no_comma": [{}],
}


def _reference_texts() -> list[str]:
    import random

    from sftmix.data.builtin import generate

    texts = [t for c in CASES for t in c[2:]] + [c[2] for c in LOOSE_ONLY]
    texts += [e.response for d in (1, 2, 3) for e in generate("general", "eval", 15, difficulty=d)]
    rng = random.Random(0)
    pieces = ["Bees make honey.", "the tide, it turns", "HONEY IS GOLD", "Dr. Smith said so.", "P.S. bring jars",
              "[name]", "*busy*", "**sweet honey**", "* one", "- two", "<<Title>>", "Section 1", '"quoted"',
              "My answer is yes.", "That is all.", '{"a": 1}', "U.S. DON'T", "***", "******", REQUEST]
    for _ in range(40):
        texts.append("".join(p + rng.choice(["\n", "\n\n", " ", "\n***\n"]) for p in rng.sample(pieces, 4)))
    return list(dict.fromkeys(v for t in texts for v in loose_variants(t) if v.strip()))


def test_checkers_agree_with_the_reference_implementation(monkeypatch):
    """Google's checkers, as packaged in if-verifiable, on the same replies and kwargs. Their sentence splitting needs
    NLTK data that cannot be downloaded here, so they are handed the same Punkt model. The deliberate differences:
    a reply with no letters at all passes the reference's language checks (langdetect raises, the reference says
    yes) and fails here."""
    pytest.importorskip("if_verifiable")
    import types

    import nltk.tokenize
    import punkt
    from if_verifiable.ifeval import instructions_util
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_DICT

    monkeypatch.setattr(instructions_util, "_get_sentence_tokenizer",
                        lambda: types.SimpleNamespace(tokenize=punkt.sent_tokenize))
    monkeypatch.setattr(nltk.tokenize, "sent_tokenize", lambda text, language="english": punkt.sent_tokenize(text))
    # Both sides ask langdetect the same questions; answer the reference from the same (cached) calls.
    from if_verifiable.ifeval import instructions as reference_module
    from langdetect import LangDetectException

    def detect(text):
        found = checkers.detect_language(text)
        if found is None:
            raise LangDetectException(0, "No features in text.")
        return found

    monkeypatch.setattr(reference_module, "langdetect",
                        types.SimpleNamespace(detect=detect, LangDetectException=LangDetectException))
    assert set(REFERENCE_KWARGS) == set(INSTRUCTION_DICT) == set(checkers.INSTRUCTIONS)

    texts = _reference_texts()
    compared, differ = 0, []
    for iid, kwarg_sets in REFERENCE_KWARGS.items():
        for kwargs in kwarg_sets:
            reference = INSTRUCTION_DICT[iid](iid)
            reference.build_description(**kwargs)
            mine = checkers.clean_kwargs(iid, kwargs)
            for text in texts:
                theirs, ours = bool(reference.check_following(text)), checkers.check(iid, mine, text)
                compared += 1
                no_letters = iid.startswith("language:") and checkers.detect_language(text) is None
                if theirs != ours and not (no_letters and theirs and not ours):
                    differ.append((iid, kwargs, text, theirs, ours))
    assert compared > 10_000 and not differ, differ[:5]


def test_hugging_face_parquet_copy_loads(tmp_path):
    """The hub copy of IFEval is Parquet, and Parquet unifies kwargs into one struct: every key on every row, null
    where unused."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    assert pq.read_table(path).to_pylist()[0]["kwargs"][1]["keywords"] is None  # padded, as on the hub
    items = load_ifeval(str(path))
    assert [e.meta["key"] for e in items] == ["1000", "1001", "1002"]
    assert items[1].meta["instructions"][1] == {"id": "keywords:existence", "kwargs": {"keywords": ["honey", "gold"]}}
