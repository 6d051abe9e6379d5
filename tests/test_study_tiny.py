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
report_to: [mlflow, tensorboard]
"""


@pytest.fixture(scope="module")
def study_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    p = d / "mini.yaml"
    p.write_text(STUDY)
    return p


@pytest.fixture(scope="module")
def finished(study_file, tmp_path_factory):
    import os

    out = tmp_path_factory.mktemp("out") / "run1"
    old = os.environ.pop("MLFLOW_TRACKING_URI", None)  # the study's own file store under out_dir
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    try:
        assert main(["run", str(study_file), f"out_dir={out}", "--no-progress"]) == 0
    finally:
        if old is not None:
            os.environ["MLFLOW_TRACKING_URI"] = old
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
    assert [r.label for r in plan.runs] == ["base tiny", "multitask 1/4", "multitask 1", "single math 1/4",
                                            "single math 1"]


def test_run_writes_store_report_and_item_results(finished):
    assert (finished / "report.html").exists() and (finished / "sftmix.db").exists()
    html = (finished / "report.html").read_text()
    assert "multitask 1/4" in html
    # 5 runs: each checkpoint (base + 4 stages) is evaluated once on each of 3 tasks
    assert db_rows(finished, "SELECT COUNT(*) FROM evals")[0][0] == 5 * 3
    assert db_rows(finished, "SELECT COUNT(*) FROM items")[0][0] == 5 * 3 * 6
    stages = db_rows(finished, "SELECT info FROM stages WHERE status = 'done'")
    assert len(stages) == 4
    for (info,) in stages:
        info = json.loads(info)
        assert info["loss_last"] < info["loss_first"]  # it learned something
    # every manifest is on disk with its row ids
    manifests = list((finished / "mixtures").glob("*.json"))
    assert len(manifests) == 4 and json.loads(manifests[0].read_text())["row_ids"]


def scores(out):
    from sftmix.study.store import Store

    store = Store(out / "sftmix.db")
    try:
        return sorted((s["run_id"], s["task"], s["value"]) for s in store.scores(store.meta("run_ids")))
    finally:
        store.close()


def test_rerun_resumes_without_retraining_and_same_results(finished, study_file, monkeypatch):
    import sftmix.study.steps as steps

    before = scores(finished)
    assert len(before) == 5 * 3
    # lose one checkpoint's evaluations and its trained stage, as a kill mid-study would
    with sqlite3.connect(finished / "sftmix.db") as db:
        rid, stage_ids = db.execute("SELECT run_id, stages FROM runs WHERE strategy = 'single' ORDER BY amount DESC").fetchone()
        stage = json.loads(stage_ids)[-1]
        db.execute("DELETE FROM items WHERE eval_id IN (SELECT eval_id FROM evals WHERE checkpoint = ?)", (stage,))
        db.execute("DELETE FROM evals WHERE checkpoint = ?", (stage,))
    import shutil

    shutil.rmtree(finished / "stages" / stage)
    trained = []
    real = steps.train_stage
    monkeypatch.setattr(steps, "train_stage", lambda job, progress=True: trained.append(job.stage_id) or real(job, progress))
    assert main(["run", str(study_file), f"out_dir={finished}", "--no-progress"]) == 0
    assert trained == [stage]
    assert scores(finished) == before  # CPU training and greedy decoding are deterministic


def test_changed_evaluation_settings_are_not_served_from_old_scores(finished, study_file):
    # Defect: resume reused a score whenever (run, task name) matched, whatever the evaluation settings.
    from sftmix.study.plan import make_plan
    from sftmix.study.steps import eval_id

    sf = load_study(study_file, [f"out_dir={finished}"])
    plan = make_plan(sf)
    changed = {
        "limit": ["evaluation.limit=5"],
        "difficulty": ["evaluation.tasks=[{name: math, params: {difficulty: 2}}, code, general]"],
        "max_new_tokens": ["evaluation.tasks=[{name: math, max_new_tokens: 32}, code, general]"],
        "code_timeout": ["evaluation.code_timeout=3"],
    }
    base = {t.name: eval_id(plan.runs[0].checkpoint_id, t) for t in plan.tasks}
    for what, overrides in changed.items():
        other = make_plan(load_study(study_file, [f"out_dir={finished}", *overrides]))
        ids = {t.name: eval_id(other.runs[0].checkpoint_id, t) for t in other.tasks}
        assert ids != base, what
        assert [r.checkpoint_id for r in other.runs] == [r.checkpoint_id for r in plan.runs]  # training unchanged


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
        write_store_report(finished, store)
    finally:
        store.close()
    assert "stale run from an older study" not in (finished / "report.html").read_text()


def test_recommend_reads_the_study_and_writes_json(finished, capsys, tmp_path):
    out_json = tmp_path / "rec.json"
    assert main(["recommend", str(finished), "--budget", "120", "--weights", "math=2,code=1,general=1",
                 "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "Recommended: multitask with" in text and "Rests on: multitask 1/4; multitask 1; base tiny" in text
    rec = json.loads(out_json.read_text())
    top = rec["candidates"][0]
    assert sum(top["allocation"].values()) == 120 and set(top["allocation"]) == {"math", "code", "general"}
    assert rec["items"] == {"math": 6, "code": 6, "general": 6}
    for p in [*top["predicted"].values(), top["weighted"]]:
        assert p["lo"] <= p["score"] <= p["hi"]
    assert main(["recommend", str(finished), "--budget", "120", "--weights", "maths=1"]) == 2
    assert "no ability 'maths'" in capsys.readouterr().err
    assert main(["recommend", str(tmp_path), "--budget", "10"]) == 2
    assert "no study store" in capsys.readouterr().err


def test_report_to_logs_the_real_training_and_scores(finished):
    """report_to: [mlflow, tensorboard] on a real run: MLflow (its own client, the study's file store) and
    TensorBoard (its own reader) hold each run's training loss and scores as the store has them."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    client = MlflowClient(tracking_uri=(finished / "mlruns").as_uri())
    exp = client.get_experiment_by_name("mini")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"base tiny", "multitask 1/4", "multitask 1", "single math 1/4", "single math 1"}
    (run_id,) = [r[0] for r in db_rows(finished, "SELECT run_id FROM runs WHERE label = 'multitask 1'")]
    (stage,) = [r[0] for r in db_rows(finished, f"SELECT stages FROM runs WHERE run_id = '{run_id}'")]
    (info,) = [json.loads(r[0]) for r in db_rows(finished, f"SELECT info FROM stages WHERE stage_id = '{json.loads(stage)[0]}'")]
    mt = runs["multitask 1"]
    logged = [m.value for m in sorted(client.get_metric_history(mt.info.run_id, "train/loss"), key=lambda m: m.step)]
    assert logged == pytest.approx(info["loss"]) and len(logged) > 1
    scores = dict(db_rows(finished, f"SELECT task, value FROM evals WHERE checkpoint = '{json.loads(stage)[-1]}'"))
    assert set(scores) == {"math", "code", "general"}
    for task, value in scores.items():
        assert mt.data.metrics[f"eval/{task}"] == pytest.approx(value)
    acc = EventAccumulator(str(finished / "tensorboard" / "multitask-1"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx(info["loss"], rel=1e-6)
