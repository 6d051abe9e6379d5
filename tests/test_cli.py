"""The other subcommands: eval (a model alone, or samples made elsewhere), data, plan."""

import json
import sqlite3

from sftmix.cli import main
from sftmix.data.builtin import generate


def test_eval_a_model_alone_stores_item_results(tmp_path, capsys):
    assert main(["eval", "tiny", "--tasks", "math,general", "--limit", "4", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "math:" in out and "general:" in out
    with sqlite3.connect(tmp_path / "sftmix.db") as db:
        assert db.execute("SELECT COUNT(*) FROM items").fetchone()[0] == 8


def test_eval_scores_external_samples(tmp_path, capsys):
    items = generate("math", "eval", 5, seed=0, difficulty=1)
    samples = tmp_path / "samples.jsonl"
    # three right answers, two wrong ones
    rows = [{"id": e.id, "completion": f"so the answer is #### {e.meta['answer'] if i < 3 else -1}"} for i, e in enumerate(items)]
    samples.write_text("\n".join(json.dumps(r) for r in rows))
    assert main(["eval", "--samples", str(samples), "--tasks", "math", "--limit", "5", "--out", str(tmp_path / "o")]) == 0
    assert "math: 60.0%" in capsys.readouterr().out


def test_eval_bad_inputs_are_clear(tmp_path, capsys):
    assert main(["eval", "tiny", "--tasks", "poetry"]) == 2
    assert "unknown task 'poetry'" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "completion": "1"}\n{oops\n')
    assert main(["eval", "--samples", str(bad), "--tasks", "math", "--out", str(tmp_path / "o")]) == 2
    assert "bad.jsonl line 2: invalid JSON" in capsys.readouterr().err


def test_data_exports_train_ready_jsonl_and_manifests(tmp_path, capsys):
    study = tmp_path / "s.yaml"
    study.write_text("models: [tiny]\nsources: {math: {builtin: math, size: 40}}\namounts: [1/4, 1]\n")
    assert main(["data", str(study), "--export", str(tmp_path / "mix"), "--format", "alpaca"]) == 0
    files = sorted((tmp_path / "mix").glob("*.alpaca.jsonl"))
    sizes = sorted(len(f.read_text().splitlines()) for f in files)
    assert sizes == [10, 40]
    row = json.loads(files[0].read_text().splitlines()[0])
    assert set(row) >= {"instruction", "output"}
    manifests = list((tmp_path / "mix").glob("*.manifest.json"))
    assert len(manifests) == 2
    # the 1/4 mixture is a prefix of the full one (nested sampling)
    by_rows = sorted((json.loads(m.read_text()) for m in manifests), key=lambda m: m["rows"])
    assert by_rows[1]["row_ids"][:10] == by_rows[0]["row_ids"]


def test_plan_reports_stages_tokens_and_flops(tmp_path, capsys):
    study = tmp_path / "s.yaml"
    study.write_text(
        "models: [tiny]\nsources: {math: {builtin: math, size: 40}, code: {builtin: code, size: 40}}\n"
        "amounts: [1/4, 1]\nstrategies: [multitask, single]\ntraining: {epochs: 2}\n"
    )
    assert main(["plan", str(study), "--json", str(tmp_path / "plan.json")]) == 0
    out = capsys.readouterr().out
    assert "unique stages: 6" in out and "FLOPs" in out
    summary = json.loads((tmp_path / "plan.json").read_text())
    assert summary["totals"]["runs"] == 7  # base + 2 multitask + 4 single
    assert summary["totals"]["train_tokens"] > 0 and summary["totals"]["flops"] > 0


def _files_study(tmp_path, bad_line=False):
    (tmp_path / "chat.jsonl").write_text(
        "\n".join(json.dumps({"instruction": f"Say hi {i}", "output": f"hi {i}"}) for i in range(20))
        + ("\n{not json" if bad_line else "")
    )
    (tmp_path / "gsm.jsonl").write_text(
        "\n".join(json.dumps({"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"}) for i in range(6))
    )
    study = tmp_path / "files.yaml"
    study.write_text(
        "models: [tiny]\nsources:\n  chat: {path: chat.jsonl, ability: general}\n  math: {builtin: math, size: 20}\n"
        "amounts: [1/2, 1]\nevaluation: {tasks: [{name: gsm8k, params: {path: gsm.jsonl}}], limit: 3}\n"
    )
    return study


def test_study_with_file_sources_and_a_gsm8k_file_task(tmp_path, capsys):
    study = _files_study(tmp_path)
    assert main(["data", str(study)]) == 0
    out = capsys.readouterr().out
    assert "source chat: 20 rows" in out and "mixture" in out
    from sftmix.config import load_study
    from sftmix.study.plan import make_plan
    from sftmix.study.runner import build_tasks

    sf = load_study(study)
    (task,) = build_tasks(sf)
    assert task.name == "gsm8k" and len(task.items) == 3 and task.items[0].meta["answer"] == "1"
    # determinism: the same study gives the same mixtures
    assert [s.mixture.hash for s in make_plan(sf).stages.values()] == [s.mixture.hash for s in make_plan(load_study(study)).stages.values()]


def test_bad_data_file_in_a_study_names_file_and_line(tmp_path, capsys):
    study = _files_study(tmp_path, bad_line=True)
    assert main(["data", str(study)]) == 2
    err = capsys.readouterr().err
    assert "chat.jsonl line 21" in err and "Traceback" not in err


def test_a_local_model_directory_works_as_a_model_name(tmp_path, capsys):
    from sftmix.models import model_path

    local = model_path("tiny")  # a plain HF-format directory
    assert main(["eval", local, "--tasks", "math", "--limit", "2", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "math:" in capsys.readouterr().out
