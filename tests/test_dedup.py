import numpy as np
import pytest
from pydantic import ValidationError

from sftmix.data.dedup import (
    DecontamConfig,
    DedupConfig,
    EvalIndex,
    decontaminate,
    dedup,
    dedup_indexes,
    exact_key,
    export_rows,
    scan_file,
    index_source,
    normalize,
)
from sftmix.data.example import chat
from sftmix.data.formats import iter_examples, load_file

QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
            "How many clips did Natalia sell altogether in April and May?")


def ids(groups):
    return {source: [e.id for e in rows] for source, rows in groups}


def test_normalize():
    import re

    from sftmix.data.dedup import words

    # The ASCII fast path (translate) and the general path (regex) agree, on every ASCII character.
    every_ascii = "".join(chr(c) for c in range(128)) + " Mixed CASE_words, 3.5% (ok)!"
    assert words(every_ascii) == re.sub(r"[^\w\s]|_", " ", every_ascii.lower()).split()
    assert words("Café — naïve “quotes”") == ["café", "naïve", "quotes"]
    assert normalize("  Hello,   WORLD!\n\tIt's  snake_case ") == "hello world it s snake case"
    from sftmix.data.dedup import _P, _window_hashes

    h = np.arange(1, 40, dtype=np.uint64) * np.uint64(0x9E37)
    for n in (1, 5, 8, 13, 20):  # the doubling window hash equals the plain rolling sum
        plain = np.zeros(len(h) - n + 1, dtype=np.uint64)
        for j in range(n):
            plain = plain * _P + h[j:j + len(plain)]
        assert (_window_hashes(h, n) == plain).all()
    assert exact_key(chat("Hello, world!", "Hi.")) == exact_key(chat("hello world", "HI"))
    assert exact_key(chat("hello world", "hi")) != exact_key(chat("hello world", "bye"))  # the answer counts
    assert exact_key(chat("a", "b")) != exact_key(chat("b", "a"))  # and so do the roles


def test_exact_dedup_within_and_across_sources_keeps_the_first_in_order():
    a = [chat("What is 2+2?", "4", id="a0"), chat("what is 2 + 2", "4.", id="a1"), chat("Name a colour", "Red", id="a2")]
    b = [chat("name a colour!", "red", id="b0"), chat("Name a fruit", "Apple", id="b1")]
    kept, removed = dedup([("a", a), ("b", b)])
    assert ids(kept) == {"a": ["a0", "a2"], "b": ["b1"]}
    assert [(r["id"], r["reason"], r["duplicate_of"], r["duplicate_source"]) for r in removed] == [
        ("a1", "exact_duplicate", "a0", "a"), ("b0", "exact_duplicate", "a2", "a")]
    # Order decides which copy survives.
    kept, _ = dedup([("b", b), ("a", a)])
    assert ids(kept) == {"b": ["b0", "b1"], "a": ["a0"]}
    kept, removed = dedup([("a", a), ("b", b)], DedupConfig(across_sources=False))
    assert ids(kept) == {"a": ["a0", "a2"], "b": ["b0", "b1"]} and len(removed) == 1
    kept, removed = dedup([("a", a)], DedupConfig(exact=False))
    assert ids(kept) == {"a": ["a0", "a1", "a2"]} and removed == []


def test_near_duplicates_by_minhash():
    base = ("Write a short story about a young dragon who learns to fly over the snowy mountains and the wide rivers "
            "of the north, and who makes friends with an old eagle along the way. The dragon is afraid at first.")
    rows = [chat(base, "Once upon a time.", id="n0"),
            chat(base.replace("old eagle", "old hawk"), "Once upon a time.", id="n1"),  # one word changed
            chat("Explain photosynthesis to a child in two sentences please, using simple words.", "Plants eat light.",
                 id="n2")]
    kept, removed = dedup([("s", rows)], DedupConfig(exact=False, near=True, threshold=0.6))
    assert ids(kept) == {"s": ["n0", "n2"]}
    (rec,) = removed
    assert rec["reason"] == "near_duplicate" and rec["duplicate_of"] == "n0" and rec["similarity"] >= 0.6
    kept, _ = dedup([("s", rows[:1]), ("t", rows[1:])], DedupConfig(exact=False, near=True, across_sources=False))
    assert ids(kept) == {"s": ["n0"], "t": ["n1", "n2"]}


def test_decontamination_by_13_grams_names_task_item_and_ngram():
    evals = {"gsm8k": [chat(QUESTION, "#### 72", id="gsm8k-0")], "other": [("o-1", "a b c d e f g h i j k l m n")]}
    train = [
        chat("Solve: " + QUESTION.upper().replace(",", " ;"), "72", id="t0"),  # case and punctuation do not hide it
        chat("Natalia sold clips to 48 of her friends in April.", "ok", id="t1"),  # 10 words: too short to match
        chat("Unrelated question about clips and friends and April and May and Natalia?", "no", id="t2"),
    ]
    kept, removed = decontaminate([("math", train)], evals)
    assert ids(kept) == {"math": ["t1", "t2"]}
    (rec,) = removed
    assert rec["id"] == "t0" and rec["source"] == "math" and rec["reason"] == "contaminated"
    assert rec["task"] == "gsm8k" and rec["item"] == "gsm8k-0"
    assert rec["ngram"] == "natalia sold clips to 48 of her friends in april and then she"
    # A smaller n catches the 10-word overlap too; disabled removes nothing.
    kept, removed = decontaminate([("math", train)], evals, DecontamConfig(ngram=8))
    assert ids(kept) == {"math": ["t2"]} and len(removed) == 2
    assert decontaminate([("math", train)], evals, DecontamConfig(enabled=False))[1] == []


def test_short_eval_items_match_whole_or_are_counted_as_too_short():
    index = EvalIndex.build({"general": [("g1", "Write a haiku about autumn leaves in lowercase."), ("g2", "Hi there.")]})
    assert index.items == {"general": 2} and index.too_short == {"general": 1}
    hits = index.find(["please write a haiku about autumn leaves in lowercase now", "a haiku about autumn", "hi there"])
    assert hits[0] == ("general", "g1", "write a haiku about autumn leaves in lowercase") and hits[1:] == [None, None]
    # A window never spans two rows.
    assert index.find(["write a haiku about", "autumn leaves in lowercase"]) == [None, None]


def test_lean_path_over_files_matches_the_example_path(tmp_path):
    import json

    rows = [{"instruction": f"Question number {i % 7} about topic {i % 5}", "output": f"Answer {i % 7}"}
            for i in range(60)]
    rows[10] = {"instruction": QUESTION, "output": "72"}
    for name, part in (("a", rows[:40]), ("b", rows[20:])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    evals = {"gsm8k": [chat(QUESTION, "#### 72", id="gsm8k-0")]}
    index = EvalIndex.build(evals)
    lean = [index_source(n, iter_examples(tmp_path / f"{n}.jsonl"), index, batch_size=16) for n in ("a", "b")]
    assert [len(ix) for ix in lean] == [40, 40] and lean[0].removed[0]["id"] == "a-10"
    removed = dedup_indexes(lean)
    groups = [(n, load_file(tmp_path / f"{n}.jsonl")) for n in ("a", "b")]
    groups, contam = decontaminate(groups, index)
    groups, dups = dedup(groups)
    assert {n: [f"{n}-{r}" for r in ix.kept_rows().tolist()] for n, ix in zip("ab", lean)} == ids(groups)
    assert [r["id"] for r in removed] == [r["id"] for r in dups]
    assert [r["duplicate_of"] for r in removed] == [r["duplicate_of"] for r in dups]
    # 35 distinct (i % 7, i % 5) pairs; a's copy of (3, 0) was the contaminated row, so b's copy (i = 45) survives.
    assert len(ids(groups)["a"]) == 34 and ids(groups)["b"] == ["b-25"]
    # Materialise only the chosen rows.
    chosen = lean[0].kept_rows()[:3].tolist()
    assert [e.id for e in load_file(tmp_path / "a.jsonl", source="a", rows=chosen)] == [f"a-{r}" for r in chosen]
    assert lean[0].keys.dtype == np.uint64 and lean[0].rows.dtype == np.int64


def test_configs_forbid_unknown_fields():
    with pytest.raises(ValidationError):
        DedupConfig(exact=True, fuzzy=True)
    with pytest.raises(ValidationError):
        DedupConfig(threshold=1.5)
    with pytest.raises(ValidationError):
        DecontamConfig(ngram=1)
    with pytest.raises(ValueError):
        dedup_indexes([], DedupConfig(near=True))


def test_spilled_rows_export_without_reparsing(tmp_path):
    rows = [chat(f"Question {i}?", f"Answer {i}.", id=f"s-{i}", row=i) for i in range(10)]
    rows[4] = chat("Question 1?", "Answer 1.", id="s-4", row=4)
    ix = index_source("s", rows, spill=tmp_path / "s.spill")
    dedup_indexes([ix])
    assert ix.kept_rows().tolist() == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    # The sampled order is kept, not file order.
    out = export_rows([(ix, [9, 0, 5])], tmp_path / "mix.jsonl")
    assert [e.messages for e in load_file(out)] == [rows[9].messages, rows[0].messages, rows[5].messages]
    out = export_rows([(ix, [2]), (ix, [3])], tmp_path / "mix.alpaca.jsonl", fmt="alpaca")
    import json

    assert [json.loads(line)["instruction"] for line in out.read_text().splitlines()] == ["Question 2?", "Question 3?"]
    with pytest.raises(ValueError, match="row 4 of source 's' was removed"):
        export_rows([(ix, [4])], tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="no row 42"):
        export_rows([(ix, [42])], tmp_path / "x.jsonl")  # rows that never made it into the index (filtered, bad)
    with pytest.raises(ValueError, match="without a spill"):
        export_rows([(index_source("t", rows), [0])], tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


def test_scan_file_runs_bad_rows_filters_labels_decontam_and_spill_in_one_pass(tmp_path):
    import json

    from sftmix.data.filters import FilterRule, LabelRule

    rows = [{"instruction": "Write add in Python.", "output": "def add(a, b):\n    return a + b"},
            {"instruction": "Name a colour.", "output": "Blue."},
            {"instruction": "Total?", "output": "3 + 4 = 7\n#### 7"},
            {"instruction": "Oops", "output": ""},
            {"instruction": QUESTION, "output": "72"},
            {"instruction": "Name a fruit.", "output": "Apple."}]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    scan = scan_file("general", path, ability="general", on_error="skip",
                     filters=[FilterRule.model_validate({"drop": "math"})],
                     labels=[LabelRule.model_validate({"ability": "code", "preset": "code"})],
                     eval_index=EvalIndex.build({"gsm8k": [chat(QUESTION, "#### 72", id="g-0")]}),
                     spill=tmp_path / "general.spill")
    assert scan.report.skipped == {"empty_assistant": 1}
    assert scan.filtered == {"drop math": 1}
    assert scan.abilities == {"code": 1, "general": 3}
    ix = scan.index
    assert ix.rows.tolist() == [0, 1, 4, 5] and ix.kept_rows().tolist() == [0, 1, 5]
    assert [ix.ability_names[c] for c in ix.abilities.tolist()] == ["code", "general", "general", "general"]
    assert ix.removed[0]["item"] == "g-0"
    out = export_rows([(ix, ix.kept_rows())], tmp_path / "mix.jsonl")
    assert [e.messages[0]["content"] for e in load_file(out)] == ["Write add in Python.", "Name a colour.", "Name a fruit."]


def test_scan_files_in_worker_processes_equal_scanning_in_turn(tmp_path):
    """Forked workers keep the parent's string-hash salt, so the eval index still matches in them."""
    import json

    from sftmix.data.dedup import scan_files

    index = EvalIndex.build({"gsm8k": [chat(QUESTION, "#### 72", id="g-0")]})
    jobs = []
    for k in range(3):
        rows = [{"instruction": f"Item {i} of file {k}: name a colour.", "output": "Blue."} for i in range(40)]
        rows[7] = {"instruction": QUESTION, "output": "72"}  # contaminated in every file
        rows[9] = rows[3]  # a duplicate inside each file
        path = tmp_path / f"s{k}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        jobs.append({"source": f"s{k}", "path": path})

    def figures(scans):
        return [(s.index.source, s.index.rows.tolist(), s.index.keys.tolist(), s.index.keep.tolist(),
                 [r["item"] for r in s.index.removed]) for s in scans]

    serial = scan_files(jobs, index, workers=1)
    parallel = scan_files(jobs, index, workers=2)
    assert figures(parallel) == figures(serial)
    assert [r[4] for r in figures(parallel)] == [["g-0"]] * 3  # the contaminated row was found in every worker
