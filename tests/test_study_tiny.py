"""End to end on the built-in tiny model: real tokenizer, real training, real generation, real scoring."""

import json
import sqlite3

import pytest

from sftmix.cli import main
from sftmix.config import load_study
from sftmix.study.plan import make_plan

STUDY = """\
name: mini
models: [{name: tiny, finetune: full}]
sources:
  math: {builtin: math, size: 64}
  code: {builtin: code, size: 64}
  general: {builtin: general, size: 64}
amounts: [1/4, 1]
strategies: [multitask, {name: single, sources: [math]}]
training: {epochs: 2, learning_rate: 3.0e-3, batch_size: 8, max_length: 256}
evaluation: {tasks: [math, code, general], limit: 6, batch_size: 16, code_timeout: 5}
"""


@pytest.fixture(scope="module")
def study_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    p = d / "mini.yaml"
    p.write_text(STUDY)
    return p


@pytest.fixture(scope="module")
def finished(study_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "run1"
    assert main(["run", str(study_file), f"out_dir={out}", "--no-progress"]) == 0
    return out


def db_rows(out, q):
    with sqlite3.connect(out / "sftmix.db") as db:
        return db.execute(q).fetchall()


def test_plan_shape(study_file):
    plan = make_plan(load_study(study_file))
    # base + multitask x 2 amounts + single(math) x 2 amounts
    assert len(plan.runs) == 5 and len(plan.stages) == 4
    sizes = sorted(len(s.mixture) for s in plan.stages.values())
    assert sizes == [16, 48, 64, 192]


def test_run_writes_store_report_and_item_results(finished):
    assert (finished / "report.html").exists() and (finished / "sftmix.db").exists()
    html = (finished / "report.html").read_text()
    assert "multitask math+code+general 1/4" in html
    assert db_rows(finished, "SELECT COUNT(*) FROM scores")[0][0] == 5 * 3
    assert db_rows(finished, "SELECT COUNT(*) FROM items")[0][0] == 5 * 3 * 6
    assert db_rows(finished, "SELECT COUNT(*) FROM runs WHERE status = 'done'")[0][0] == 5
    stages = db_rows(finished, "SELECT info FROM stages WHERE status = 'done'")
    assert len(stages) == 4
    for (info,) in stages:
        info = json.loads(info)
        assert info["loss_last"] < info["loss_first"]  # it learned something
    # every manifest is on disk with its row ids
    manifests = list((finished / "mixtures").glob("*.json"))
    assert len(manifests) == 4 and json.loads(manifests[0].read_text())["row_ids"]


def test_rerun_resumes_without_retraining_and_same_results(finished, study_file, monkeypatch):
    import sftmix.study.runner as runner

    before = db_rows(finished, "SELECT run_id, task, value FROM scores ORDER BY run_id, task")
    # lose one run's scores and one trained stage, as a kill mid-study would
    with sqlite3.connect(finished / "sftmix.db") as db:
        rid = db.execute("SELECT run_id FROM runs WHERE strategy = 'single' ORDER BY amount DESC").fetchone()[0]
        db.execute("DELETE FROM scores WHERE run_id = ?", (rid,))
        db.execute("DELETE FROM items WHERE run_id = ?", (rid,))
        stage = json.loads(db.execute("SELECT stages FROM runs WHERE run_id = ?", (rid,)).fetchone()[0])[-1]
    import shutil

    shutil.rmtree(finished / "stages" / stage)
    trained = []
    real = runner.train_stage
    monkeypatch.setattr(runner, "train_stage", lambda job, progress=True: trained.append(job.stage_id) or real(job, progress))
    assert main(["run", str(study_file), f"out_dir={finished}", "--no-progress"]) == 0
    assert trained == [stage]
    after = db_rows(finished, "SELECT run_id, task, value FROM scores ORDER BY run_id, task")
    assert after == before  # CPU training and greedy decoding are deterministic


def test_report_command_rewrites_report(finished, capsys):
    (finished / "report.html").unlink()
    assert main(["report", str(finished)]) == 0
    assert (finished / "report.html").exists()
    assert "report.html" in capsys.readouterr().out


def test_report_on_empty_dir_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no study store" in capsys.readouterr().err


def test_saved_study_yaml_is_the_effective_study_and_replans_identically(finished):
    from sftmix.study.store import Store

    sf = load_study(finished / "study.yaml")
    assert sf.study.output_dir == str(finished)  # the out_dir override is recorded
    store = Store(finished / "sftmix.db")
    try:
        assert [r.run_id for r in make_plan(sf).runs] == store.meta("run_ids")
    finally:
        store.close()


def test_report_keeps_to_the_current_plan(finished, tmp_path):
    from sftmix.study.runner import write_store_report
    from sftmix.study.store import Store

    store = Store(finished / "sftmix.db")
    try:
        store.add_run("stale", "stale run from an older study", "tiny", "multitask", "math", 0.5, 0, [])
        store.add_results("stale", "math", "math", "accuracy", [{"item_id": "x", "score": 1.0, "prompt": "p",
                                                                "prediction": "q", "reference": "r"}], 0.0)
        write_store_report(finished, store)
    finally:
        store.close()
    assert "stale run from an older study" not in (finished / "report.html").read_text()
