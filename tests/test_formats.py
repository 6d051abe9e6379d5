import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sftmix.data.example import CODE_ASSISTANT_TEMPLATE, CODE_USER_TEMPLATE
from sftmix.data.formats import (
    FORMATS,
    LoadReport,
    detect_format,
    iter_examples,
    load_file,
    load_hf,
    read_records,
    to_example,
    write_jsonl,
)
from sftmix.errors import DataError

HUMANEVAL_ROW = {
    "task_id": "HumanEval/0",
    "prompt": "def add(a, b):\n",
    "canonical_solution": "    return a + b\n",
    "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n",
    "entry_point": "add",
}

# Two rows per format; the first row's expected conversation is checked for every container.
SAMPLES = {
    "alpaca": [
        {"instruction": "Name a colour.", "input": "", "output": "Blue."},
        {"instruction": "Translate.", "input": "chat", "output": "cat"},
    ],
    "sharegpt": [
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
        {"conversations": [{"from": "user", "value": "2+2?"}, {"from": "assistant", "value": "4"}]},
    ],
    "messages": [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
        {"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "?"},
                      {"role": "assistant", "content": "!"}]},
    ],
    "prompt_completion": [
        {"prompt": "Say yes.", "completion": "Yes."},
        {"prompt": "Say no.", "completion": "No."},
    ],
    "gsm8k": [
        {"question": "How many?", "answer": "3 + 4 = 7\n#### 7"},
        {"question": "And now?", "answer": "#### 8"},
    ],
    "humaneval": [HUMANEVAL_ROW, {**HUMANEVAL_ROW, "task_id": "HumanEval/1"}],
}

FIRST_MESSAGES = {
    "alpaca": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}],
    "sharegpt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
    "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
    "prompt_completion": [{"role": "user", "content": "Say yes."}, {"role": "assistant", "content": "Yes."}],
    "gsm8k": [{"role": "user", "content": "How many?"}, {"role": "assistant", "content": "3 + 4 = 7\n#### 7"}],
    "humaneval": [
        {"role": "user", "content": CODE_USER_TEMPLATE.format(prompt="def add(a, b):\n")},
        {"role": "assistant",
         "content": CODE_ASSISTANT_TEMPLATE.format(prompt="def add(a, b):\n", solution="    return a + b\n")},
    ],
}


def write_rows(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    else:
        # from_pylist takes its columns from the first row only, so give every row every key (None when absent),
        # which is also what real Parquet dumps look like.
        keys = list(dict.fromkeys(k for r in rows for k in r))
        pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows]), path)
    return path


def jsonl(tmp_path: Path, rows: list[dict], name: str = "d.jsonl") -> Path:
    return write_rows(tmp_path / name, rows)


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# ---------------------------------------------------------------------------------------------------------------
# Reading every format from every container


@pytest.mark.parametrize("ext", [".jsonl", ".json", ".parquet"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_from_each_container(tmp_path, fmt, ext):
    path = write_rows(tmp_path / f"{fmt}{ext}", SAMPLES[fmt])
    examples = load_file(path, source="src", ability="skill")
    assert len(examples) == 2
    assert examples[0].messages == FIRST_MESSAGES[fmt]
    assert all(ex.meta["format"] == fmt for ex in examples)
    # Explicit format reads the same as auto-detection.
    assert [e.messages for e in load_file(path, fmt=fmt)] == [e.messages for e in examples]


def test_read_records_containers(tmp_path):
    rows = SAMPLES["alpaca"]
    (tmp_path / "w.json").write_text(json.dumps({"data": rows}))
    (tmp_path / "r.json").write_text(json.dumps({"rows": rows, "version": 2}))
    (tmp_path / "b.jsonl").write_text("\n" + json.dumps(rows[0]) + "\n\n   \n" + json.dumps(rows[1]) + "\n")
    for name in ("w.json", "r.json", "b.jsonl"):
        assert read_records(tmp_path / name) == rows
    assert read_records(write_rows(tmp_path / "p.parquet", rows)) == rows


def test_detect_format():
    for fmt, rows in SAMPLES.items():
        assert detect_format(rows[0]) == fmt
    assert detect_format({"prompt": "p", "response": "r"}) == "prompt_completion"
    # UltraChat-style rows carry both a prompt and the messages; the messages are the conversation.
    assert detect_format({"prompt": "p", "prompt_id": "x", "messages": []}) == "messages"
    # Keys present as None (Parquet/datasets schema filling) do not count.
    assert detect_format({"instruction": None, "output": None, "question": "q", "answer": "1"}) == "gsm8k"


def test_meta_ids_and_limit(tmp_path):
    path = jsonl(tmp_path, SAMPLES["alpaca"] * 3, name="alp.jsonl")
    examples = load_file(path, ability="general")
    assert [e.meta["id"] for e in examples] == [f"alp-{i}" for i in range(6)]
    assert examples[4].meta == {"id": "alp-4", "source": "alp", "ability": "general", "row": 4, "format": "alpaca"}
    limited = load_file(path, source="mine", limit=2)
    assert [e.id for e in limited] == ["mine-0", "mine-1"]
    assert load_file(path, limit=0) == []


# ---------------------------------------------------------------------------------------------------------------
# Per-format conversion


def test_alpaca_input_and_system():
    ex = to_example({"instruction": "Summarise.", "input": "Long text.", "output": "Short."}, "alpaca")
    assert ex.messages == [
        {"role": "user", "content": "Summarise.\n\nLong text."},
        {"role": "assistant", "content": "Short."},
    ]
    ex = to_example({"instruction": "Hi", "output": "Hey", "system": "Be kind."}, "alpaca")
    assert ex.messages == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hey"},
    ]
    assert to_example({"instruction": "Hi", "input": None, "output": "Hey"}, "alpaca").messages[0]["content"] == "Hi"


def test_sharegpt_roles_and_multi_turn():
    row = {
        "conversations": [
            {"from": "system", "value": "S"},
            {"from": "human", "value": "a"},
            {"from": "chatgpt", "value": "b"},
            {"from": "user", "value": "c"},
            {"from": "bard", "value": "d"},
            {"from": "Human", "value": "e"},
            {"from": "bing", "value": "f"},
        ]
    }
    ex = to_example(row, "sharegpt")
    assert [m["role"] for m in ex.messages] == ["system"] + ["user", "assistant"] * 3
    assert [m["content"] for m in ex.messages] == list("Sabcdef")
    # A system prompt kept beside the conversation is put in front of it.
    ex = to_example({"system": "Sys", "conversations": row["conversations"][1:3]}, "sharegpt")
    assert ex.messages[0] == {"role": "system", "content": "Sys"}


def test_gsm8k_answer_extraction():
    ex = to_example({"question": "Total?", "answer": "Add them.\n#### 1,234"}, "gsm8k")
    assert ex.meta == {"answer": "1234", "question": "Total?"}
    assert ex.response == "Add them.\n#### 1,234"
    assert to_example({"question": "q", "answer": "#### -5 "}, "gsm8k").meta["answer"] == "-5"


def test_humaneval_fields_in_meta(tmp_path):
    ex = load_file(jsonl(tmp_path, [HUMANEVAL_ROW], name="he.jsonl"))[0]
    for key in ("task_id", "canonical_solution", "test", "entry_point", "prompt"):
        assert ex.meta[key] == HUMANEVAL_ROW[key]
    assert ex.meta["id"] == "he-0" and ex.meta["format"] == "humaneval"


# ---------------------------------------------------------------------------------------------------------------
# Errors users see


def test_invalid_json_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3 "b": 4}\n')
    msg = error_of(read_records, path)
    assert msg.startswith(f"{path} line 3: invalid JSON (Expecting ',' delimiter")
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"a": 1},\n  {"a": }\n]')
    assert f"{path} line 3: invalid JSON" in error_of(read_records, path)


def test_non_object_rows(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n')
    assert f"{path} line 2: expected a JSON object" in error_of(read_records, path)
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"meta": 1, "items": []}))
    msg = error_of(read_records, path)
    assert str(path) in msg and "'data'" in msg and "[meta, items]" in msg


def test_unknown_keys(tmp_path):
    path = jsonl(tmp_path, [{"foo": "x", "bar": "y"}])
    msg = error_of(load_file, path)
    assert f"{path} row 0 (line 1): cannot tell the format of a row with keys [bar, foo]" in msg
    assert "alpaca (instruction, output[, input])" in msg and "sharegpt (conversations)" in msg


def test_mismatched_row_after_auto_detection(tmp_path):
    rows = [{"instruction": f"i{i}", "output": f"o{i}"} for i in range(5)] + [{"question": "q", "answer": "#### 1"}]
    path = jsonl(tmp_path, rows)
    msg = error_of(load_file, path)
    assert f"{path} row 5 (line 6)" in msg
    assert "alpaca" in msg and "[answer, question]" in msg
    parquet = write_rows(tmp_path / "d.parquet", rows)
    assert f"{parquet} row 5:" in error_of(load_file, parquet)


@pytest.mark.parametrize("name,content", [("e.jsonl", ""), ("e.jsonl", "\n  \n"), ("e.json", "[]"), ("e.json", "")])
def test_empty_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    msg = error_of(load_file, path)
    assert str(path) in msg and ("empty" in msg or "no rows" in msg)


def test_missing_file_and_unsupported_extension(tmp_path):
    missing = tmp_path / "nope.jsonl"
    assert error_of(load_file, missing) == f"{missing}: file not found"
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n1,2\n")
    msg = error_of(read_records, csv)
    assert str(csv) in msg and "'.csv'" in msg and ".json, .jsonl, .parquet" in msg


def test_unknown_format_name(tmp_path):
    msg = error_of(load_file, jsonl(tmp_path, SAMPLES["alpaca"]), fmt="dolly")
    assert "'dolly'" in msg and ", ".join(FORMATS) in msg


def test_unknown_roles(tmp_path):
    row = {"conversations": [{"from": "human", "value": "a"}, {"from": "robot", "value": "b"}]}
    msg = error_of(load_file, jsonl(tmp_path, [SAMPLES["sharegpt"][0], row], name="sg.jsonl"))
    assert "sg.jsonl row 1 (line 2)" in msg and "'robot'" in msg
    row = {"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "{}"},
                        {"role": "assistant", "content": "b"}]}
    msg = error_of(load_file, jsonl(tmp_path, [row], name="m.jsonl"))
    assert "m.jsonl row 0 (line 1)" in msg and "messages[1]" in msg and "'tool'" in msg


def test_conversation_must_end_with_assistant(tmp_path):
    ok = SAMPLES["messages"][0]
    ends_user = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                              {"role": "user", "content": "c"}]}
    empty_answer = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "  "}]}
    msg = error_of(load_file, jsonl(tmp_path, [ok, ok, ends_user]))
    assert "row 2 (line 3)" in msg and "must end with an assistant turn" in msg and "'user'" in msg
    assert "row 1 (line 2)" in error_of(load_file, jsonl(tmp_path, [ok, empty_answer]))
    assert "empty" in error_of(to_example, {"instruction": "x", "output": ""}, "alpaca", "here")


def test_missing_and_ill_typed_fields():
    assert error_of(to_example, {"instruction": "x"}, "alpaca", "f.jsonl row 9") == \
        "f.jsonl row 9: missing field 'output'"
    msg = error_of(to_example, {"instruction": "x", "output": 3}, "alpaca", "f.jsonl row 9")
    assert msg == "f.jsonl row 9: field 'output' must be a string, found int"
    msg = error_of(to_example, {"conversations": [{"from": "human"}]}, "sharegpt", "w")
    assert msg == "w: conversations[0] is missing field 'value'"
    assert "field 'messages' must be a list" in error_of(to_example, {"messages": "hi"}, "messages", "w")
    assert "missing field 'test'" in error_of(to_example, {**HUMANEVAL_ROW, "test": None}, "humaneval", "w")


# ---------------------------------------------------------------------------------------------------------------
# datasets


@pytest.fixture
def offline_datasets(tmp_path, monkeypatch):
    """Make `datasets` fail fast without network and keep its cache inside tmp_path."""
    datasets_config = pytest.importorskip("datasets.config")
    import huggingface_hub.constants as hub_constants

    # The libraries read these environment variables at import time, so patch the module constants too.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets_config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets_config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def test_load_hf_local_json_with_split_slicing(tmp_path, offline_datasets):
    path = jsonl(tmp_path, [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(5)], name="math.jsonl")
    examples = load_hf("json", data_files=str(path), split="train[:3]", ability="math")
    assert [e.meta["answer"] for e in examples] == ["0", "1", "2"]
    assert examples[2].meta["id"] == "math-2" and examples[2].meta["ability"] == "math"


def test_load_hf_errors(tmp_path, offline_datasets):
    msg = error_of(load_hf, "no-such-org/no-such-dataset", split="train[:10]")
    assert "'no-such-org/no-such-dataset'" in msg and "'train[:10]'" in msg
    path = jsonl(tmp_path, [{"foo": 1}, {"foo": 2}], name="odd.jsonl")
    assert "odd.jsonl [train] row 0: cannot tell the format" in error_of(load_hf, "json", data_files=str(path))
    assert "'validation'" in error_of(load_hf, "json", data_files=str(path), split="validation")


# ---------------------------------------------------------------------------------------------------------------
# Writing


def _mixed_examples(tmp_path):
    return load_file(jsonl(tmp_path, SAMPLES["alpaca"] + [
        {"instruction": "Hi", "output": "Hey", "system": "Be kind."},
        {"instruction": "Ünïcode ✓", "output": "ok"},
    ], name="src.jsonl"))


@pytest.mark.parametrize("fmt", ["messages", "alpaca", "sharegpt"])
def test_write_jsonl_round_trip(tmp_path, fmt):
    examples = _mixed_examples(tmp_path)
    if fmt != "alpaca":
        examples += load_file(jsonl(tmp_path, SAMPLES["messages"], name="multi.jsonl"))
    out = write_jsonl(examples, tmp_path / "out" / f"train.{fmt}.jsonl", fmt=fmt)
    assert out == tmp_path / "out" / f"train.{fmt}.jsonl"
    back = load_file(out)
    assert [e.messages for e in back] == [e.messages for e in examples]
    assert back[0].meta["format"] == fmt
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
    if fmt == "messages":
        assert json.loads(out.read_text().splitlines()[0]).keys() == {"messages"}


def test_write_jsonl_is_atomic_on_failure(tmp_path):
    multi = load_file(jsonl(tmp_path, [{"messages": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"},
    ]}], name="multi.jsonl"))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "train.jsonl"
    target.write_text("previous contents\n")
    msg = error_of(write_jsonl, _mixed_examples(tmp_path) + multi, target, fmt="alpaca")
    assert "multi-0" in msg and "alpaca" in msg
    # The failure came after several rows were written; the old file is untouched and no temp file remains.
    assert target.read_text() == "previous contents\n"
    assert [p.name for p in out_dir.iterdir()] == ["train.jsonl"]
    assert "'csv'" in error_of(write_jsonl, multi, target, fmt="csv")


# ---------------------------------------------------------------------------------------------------------------
# Bad rows: an error naming file, line and field by default; counted skips with on_error="skip"

GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}


def _msgs(*pairs):
    return {"messages": [{"role": r, "content": c} for r, c in pairs]}


# (kind, the JSONL line as bytes, a fragment the error names): one of each bad row users meet.
BAD_LINES = [
    ("missing_field", json.dumps({"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}),
     "messages[0] is missing field 'content'"),
    ("null_field", json.dumps({"messages": [{"role": "user", "content": None}, {"role": "assistant", "content": "x"}]}),
     "messages[0] is missing field 'content'"),
    ("wrong_type", json.dumps({"messages": [{"role": "user", "content": ["parts"]},
                                            {"role": "assistant", "content": "x"}]}),
     "messages[0] field 'content' must be a string, found list"),
    ("empty_assistant", json.dumps(_msgs(("user", "q"), ("assistant", " \n"))), "messages[1]: the assistant turn is empty"),
    ("no_assistant", json.dumps(_msgs(("user", "q"))), "must end with an assistant turn"),
    ("role_order", json.dumps(_msgs(("assistant", "Hi, how can I help?"), ("user", "q"), ("assistant", "a"))),
     "messages[0]: 'assistant' as the first turn"),
    ("role_order", json.dumps(_msgs(("user", "a"), ("user", "b"), ("assistant", "c"))),
     "messages[1]: 'user' after messages[0] ('user')"),
    ("role_order", json.dumps(_msgs(("user", "a"), ("system", "s"), ("assistant", "c"))),
     "messages[1]: a system turn after the start"),
    ("unknown_role", json.dumps(_msgs(("user", "a"), ("tool", "{}"), ("assistant", "c"))), "'tool'"),
    ("invalid_utf8", b'{"messages": "caf\xe9"}', "not UTF-8 text"),
    ("invalid_json", '{"messages": [}', "invalid JSON"),
    ("not_an_object", "[1, 2]", "expected a JSON object per line"),
    ("wrong_format", json.dumps({"instruction": "i", "output": "o"}), "expected the messages format"),
]


def _line(content) -> bytes:
    return content if isinstance(content, bytes) else content.encode()


def test_each_bad_row_is_an_error_naming_file_line_and_field(tmp_path):
    for i, (kind, content, fragment) in enumerate(BAD_LINES):
        path = tmp_path / f"bad{i}.jsonl"
        path.write_bytes(_line(json.dumps(GOOD)) + b"\n" + _line(content) + b"\n" + _line(json.dumps(GOOD)) + b"\n")
        with pytest.raises(DataError) as info:
            load_file(path)
        msg = str(info.value)
        assert f"{path} " in msg and "line 2" in msg and fragment in msg, (kind, msg)
        assert info.value.kind == kind and "\n" not in msg


def test_skip_counts_every_bad_row_by_kind_and_keeps_the_rest(tmp_path, capsys):
    path = tmp_path / "mixed.jsonl"
    big = json.dumps(_msgs(("user", "q"), ("assistant", "x" * (10 * 2**20))))  # a 10 MB row
    lines = [json.dumps(GOOD)] + [c for _, c, _ in BAD_LINES] + [big, json.dumps(GOOD)]
    # A truncated last line: the writer died mid-row, so there is no closing brace and no newline.
    path.write_bytes(b"\n".join(_line(c) for c in lines) + b'\n{"messages": [{"role": "user", "con')
    report = LoadReport()
    examples = load_file(path, on_error="skip", report=report)
    n = len(BAD_LINES)
    assert [e.meta["row"] for e in examples] == [0, n + 2]  # row numbers (and ids) count the skipped rows
    assert [e.id for e in examples] == ["mixed-0", f"mixed-{n + 2}"]
    expected = Counter(k for k, _, _ in BAD_LINES) + Counter({"row_too_large": 1, "truncated_line": 1})
    assert report.skipped == expected
    assert report.rows_read == n + 4 and report.rows_kept == 2 and report.rows_skipped == n + 2
    assert [p.kind for p in report.problems][:3] == [k for k, _, _ in BAD_LINES][:3]
    assert report.problems[-1].message.startswith(f"{path} line {n + 4}: truncated last line")
    assert f"{path} line {n + 2}: row is 10.0 MiB" in report.problems[-2].message
    summary = report.summary("mixed")
    assert summary.startswith(f"mixed: {n + 2} of {n + 4} rows skipped (3 role_order") and "1 truncated_line" in summary
    assert report.to_dict()["skipped"]["role_order"] == 3
    # With a report the caller shows it; the load itself prints nothing.
    assert capsys.readouterr().err == ""
    # Without one, skipped rows are never silent: one summary line on stderr.
    load_file(path, on_error="skip")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{n + 2} of {n + 4} rows skipped" in err
    # By default the first bad row stops the load.
    assert "line 2" in error_of(load_file, path)


def test_skip_in_json_and_parquet_containers(tmp_path):
    rows = [GOOD, _msgs(("user", "a"), ("user", "b"), ("assistant", "c")), GOOD,
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None}]}]
    for ext in (".json", ".parquet"):
        path = write_rows(tmp_path / f"x{ext}", rows)
        report = LoadReport()
        assert [e.meta["row"] for e in load_file(path, on_error="skip", report=report)] == [0, 2]
        assert report.skipped == {"role_order": 1, "null_field": 1}
        assert report.problems[0].where == f"{path} row 1"
        assert f"{path} row 1: messages[1]" in error_of(load_file, path)
    (tmp_path / "l.json").write_text(json.dumps([GOOD, "text", GOOD]))
    report = LoadReport()
    assert len(load_file(tmp_path / "l.json", on_error="skip", report=report)) == 2
    assert report.skipped == {"not_an_object": 1}


def test_a_big_row_in_parquet_is_too_large(tmp_path):
    path = write_rows(tmp_path / "big.parquet", [GOOD, _msgs(("user", "q"), ("assistant", "y" * 3000))])
    msg = error_of(load_file, path, max_row_bytes=1000)
    assert f"{path} row 1: row holds" in msg and "max_row_bytes" in msg


def test_all_rows_bad_is_an_error_even_when_skipping(tmp_path):
    path = tmp_path / "junk.jsonl"
    path.write_text("{oops\n[1]\n")
    msg = error_of(load_file, path, on_error="skip", report=LoadReport())
    assert f"{path}: none of its 2 rows could be used" in msg and "invalid_json" in msg
    assert "on_error" in error_of(load_file, path, on_error="ignore")


@pytest.mark.parametrize("name,data", [
    ("u16.jsonl", '{"instruction": "i", "output": "o"}\n'.encode("utf-16")),
    ("latin.json", '[{"instruction": "caf\xe9", "output": "o"}]'.encode("latin-1")),
])
def test_files_that_are_not_utf8_are_one_error(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    for on_error in ("raise", "skip"):
        msg = error_of(load_file, path, on_error=on_error)
        assert msg.startswith(f"{path}") and "not UTF-8" in msg and "\n" not in msg


def test_first_unknown_row_is_skipped_and_detection_uses_the_next(tmp_path):
    path = jsonl(tmp_path, [{"foo": 1}] + SAMPLES["alpaca"])
    report = LoadReport()
    examples = load_file(path, on_error="skip", report=report)
    assert report.format == "alpaca" and len(examples) == 2 and report.skipped == {"unknown_format": 1}


# ---------------------------------------------------------------------------------------------------------------
# Real shapes: multi-turn conversations kept whole, extra columns kept for filters, streaming selection

MULTI = [
    ("system", "You are terse."), ("user", "What is 2+2?"), ("assistant", "4."),
    ("user", "And times 3?"), ("assistant", "12."), ("user", "Thanks!"), ("assistant", "You're welcome."),
]


@pytest.mark.parametrize("ext", [".jsonl", ".json", ".parquet"])
def test_multi_turn_sharegpt_and_messages_kept_whole(tmp_path, ext):
    to_from = {"system": "system", "user": "human", "assistant": "gpt"}
    sharegpt = [{"id": "c1", "conversations": [{"from": to_from[r], "value": c} for r, c in MULTI], "lang": "en"}]
    messages = [{**_msgs(*MULTI), "category": "chat", "score": 4.5, "tags": ["x"]}]
    expected = [{"role": r, "content": c} for r, c in MULTI]
    for name, rows in (("sg", sharegpt), ("msg", messages)):
        (ex,) = load_file(write_rows(tmp_path / f"{name}{ext}", rows))
        assert ex.messages == expected
    assert load_file(tmp_path / f"sg{ext}")[0].meta["fields"] == {"id": "c1", "lang": "en"}
    # Non-scalar columns (tags) are not copied; scalar ones are, for field filters.
    assert load_file(tmp_path / f"msg{ext}")[0].meta["fields"] == {"category": "chat", "score": 4.5}


def test_rows_selection_and_limit_stream(tmp_path):
    rows = [{"instruction": f"i{i}", "output": f"o{i}"} for i in range(50)]
    for ext in (".jsonl", ".json", ".parquet"):
        path = write_rows(tmp_path / f"r{ext}", rows)
        picked = load_file(path, rows=[40, 3, 17])
        assert [e.meta["row"] for e in picked] == [3, 17, 40]
        assert [e.messages[0]["content"] for e in picked] == ["i3", "i17", "i40"]
        assert picked[0].id == "r-3"
        assert len(load_file(path, limit=7)) == 7
        it = iter_examples(path)
        assert next(it).id == "r-0"  # a generator: rows come one at a time


def test_load_hf_skips_bad_rows_too(tmp_path, offline_datasets):
    rows = [{"question": "q0", "answer": "#### 1"}, {"question": "q1", "answer": "no marker ####"},
            {"question": "q2", "answer": "#### 3"}]
    path = jsonl(tmp_path, rows, name="m.jsonl")
    report = LoadReport()
    examples = load_hf("json", data_files=str(path), on_error="skip", report=report)
    assert [e.meta["answer"] for e in examples] == ["1", "3"] and report.skipped == {"bad_value": 1}
    assert "m.jsonl [train] row 1: field 'answer'" in error_of(load_hf, "json", data_files=str(path))
