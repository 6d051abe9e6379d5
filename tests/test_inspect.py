import json

from sftmix.cli import main
from sftmix.data.inspect import inspect_file

GOOD = {"conversations": [{"from": "human", "value": "Hi [bold]there[/bold]"}, {"from": "gpt", "value": "Hello!"},
                          {"from": "human", "value": "Bye"}, {"from": "gpt", "value": "See you."}]}
BAD = {"conversations": [{"from": "gpt", "value": "Welcome!"}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]}


def _write(path, rows, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return path


def test_inspect_file_counts_rows_turns_roles_and_problems(tmp_path):
    path = _write(tmp_path / "chat.jsonl", [GOOD, GOOD, BAD, {"messages": []}], tail='{"conver')
    insp = inspect_file(path, n_examples=1)
    r = insp.report
    assert insp.format == "sharegpt" and "detected from the first row" in insp.format_note
    assert (r.rows_read, r.rows_kept) == (5, 2)
    assert r.skipped == {"role_order": 1, "wrong_format": 1, "truncated_line": 1}
    assert [p.where for p in r.problems] == [f"{path} row 2 (line 3)", f"{path} row 3 (line 4)", f"{path} line 5"]
    assert (insp.turns.low, insp.turns.high, insp.turns.mean) == (4, 4, 4.0)
    assert insp.roles == {"user": 4, "assistant": 4}
    assert insp.signatures == {"sharegpt": 3, "messages": 1}
    assert len(insp.examples) == 1 and insp.tokens.n == 0


def test_inspect_explains_ambiguous_and_unknown_formats(tmp_path):
    both = _write(tmp_path / "both.jsonl", [{"prompt": "p", "completion": "c",
                                             "messages": [{"role": "user", "content": "p"},
                                                          {"role": "assistant", "content": "c"}]}])
    insp = inspect_file(both)
    assert insp.format == "messages" and "match messages, prompt_completion" in insp.format_note
    odd = _write(tmp_path / "odd.jsonl", [{"foo": 1}, {"foo": 2}])
    insp = inspect_file(odd)
    assert insp.format is None and "no signature matches the first row's keys [foo]" in insp.format_note
    assert insp.report.skipped == {"unknown_format": 2}


def test_cli_data_inspect(tmp_path, capsys):
    path = _write(tmp_path / "chat.jsonl", [GOOD, GOOD, BAD])
    assert main(["data", "inspect", str(path), "--n", "1", "--model", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "format: sharegpt" in out and "rows: 2 usable of 3 read, 1 bad" in out
    assert "tokens (tiny)" in out and "turns (user+assistant)" in out
    assert "Hi [bold]there[/bold]" in out  # data text is escaped, not taken as markup
    assert "problems: role_order 1" in out and "row 2 (line 3)" in out
    assert main(["data", "inspect", str(path), "--format", "messages", "--model", "none"]) == 0
    out = capsys.readouterr().out
    assert "format: messages (given)" in out and "rows: 0 usable of 3 read" in out and "tokens" not in out
    assert main(["data", "inspect", str(tmp_path / "missing.jsonl"), "--model", "none"]) == 2
    assert "missing.jsonl: file not found" in capsys.readouterr().err


def test_cli_non_utf8_files_are_one_error_line(tmp_path, capsys):
    study = tmp_path / "s.yaml"
    study.write_bytes(b"\xff\xfem\x00o\x00d\x00")
    assert main(["plan", str(study)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "s.yaml: not UTF-8" in err and "Traceback" not in err
    data = tmp_path / "d.json"
    data.write_bytes('[{"instruction": "caf\xe9", "output": "o"}]'.encode("latin-1"))
    study.write_text(f"models: [tiny]\nsources: {{d: {{path: {data}}}}}\namounts: [1]\n")
    assert main(["data", str(study)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "d.json: not UTF-8" in err
    assert main(["data", "inspect", str(data), "--model", "none"]) == 2
    assert "d.json: not UTF-8" in capsys.readouterr().err


def test_data_with_a_study_still_works(tmp_path, capsys):
    study = tmp_path / "s.yaml"
    study.write_text("models: [tiny]\nsources: {math: {builtin: math, size: 20}}\namounts: [1]\n")
    assert main(["data", str(study)]) == 0
    assert "source math: 20 rows" in capsys.readouterr().out
