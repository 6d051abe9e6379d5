"""report_to: stages and scores from the store, read back with MLflow's own client and TensorBoard's reader.
No model is trained here: the store is filled through its own API with known losses and scores."""

import importlib.util

import pytest

from sftmix.config import load_study
from sftmix.errors import StudyError
from sftmix.study import tracking
from sftmix.study.store import Store

SECRET = "sk-test-7f3a9c1e5b2d4680"


class Task:
    def __init__(self, name, ability, metric="accuracy"):
        self.name, self.ability, self.metric, self.domain = name, ability, metric, ""


def rows(scores):
    return [{"item_id": f"i{k}", "score": s, "prompt": "p", "prediction": "q", "reference": "r"}
            for k, s in enumerate(scores)]


HP1 = {"training": {"epochs": 1.0, "learning_rate": 0.001, "batch_size": 8}, "seed": 0,
       "model": {"name": "tiny", "finetune": "lora", "lora": {"r": 16}}}
HP2 = {**HP1, "training": {**HP1["training"], "learning_rate": 0.0005}}


def fill(out):
    """Run r1: two stages (math then code, losses known), scored at base (0) and at the end (2); run r2: one stage."""
    store = Store(out / "sftmix.db")
    store.set_meta("name", "tracked study")
    store.add_stage("s1", None, "tiny", "math", "h1", {"hash": "h1", "rows": 12, "tokens": 345,
                                                      "sources": {"math": {"rows": 12}}}, HP1, str(out / "s1"))
    store.finish_stage("s1", {"train_tokens": 345, "seconds": 2.5, "steps": 3, "loss": [2.0, 1.5, 1.25],
                              "loss_first": 2.0, "loss_last": 1.25, "learning_rate": 0.001})
    store.add_stage("s2", "s1", "tiny", "code", "h2", {"hash": "h2", "rows": 6, "sources": {"code": {"rows": 6}}},
                    HP2, str(out / "s2"))
    store.finish_stage("s2", {"train_tokens": 100, "seconds": 1.0, "steps": 2, "loss": [1.125, 0.875],
                              "loss_first": 1.125, "loss_last": 0.875, "learning_rate": 0.0005})
    store.add_run("r1", "sequential math>code 1/4", "tiny", "sequential", "math+code", 0.25, 0, ["s1", "s2"],
                  params={"order": "math,code"}, base_id="base")
    store.add_run("r2", "single math 1/4", "tiny", "single", "math", 0.25, 0, ["s1"], base_id="base")
    store.set_meta("run_ids", ["r1", "r2"])
    math, code = Task("math", "math"), Task("code", "code", "pass@1")
    store.add_eval("e_base_math", "base", math, {}, rows([0, 0, 0, 1]), {"accuracy": 0.25}, 1.0)
    store.add_eval("e_s2_math", "s2", math, {}, rows([1, 1, 0, 1]), {"accuracy": 0.75}, 1.0)
    store.add_eval("e_s2_code", "s2", code, {}, rows([1, 0]), {"pass@1": 0.5, "pass@10": 0.875}, 1.0)
    store.add_eval("e_s1_math", "s1", math, {}, rows([1, 1, 1, 1, 0]), {"accuracy": 0.8}, 1.0)
    store.set_meta("evals", {"r1": {"math": {"0": "e_base_math", "2": "e_s2_math"}, "code": {"2": "e_s2_code"}},
                             "r2": {"math": {"1": "e_s1_math"}}})
    return store


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)  # the judge's key variable: must reach no file
    monkeypatch.setenv("SFTMIX_TEST_TOKEN", SECRET)
    out = tmp_path / "out"
    store = fill(out)
    yield out, store
    store.close()


def mlflow_runs(out):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(out / "mlruns").as_uri())
    exp = client.get_experiment_by_name("tracked study")
    assert exp is not None
    return client, {r.data.tags["sftmix.run_id"]: r for r in client.search_runs([exp.experiment_id])}


def history(client, run, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]


def test_mlflow_runs_params_and_metrics(env):
    out, store = env
    assert tracking.log_study(out, store, ["mlflow"]) == {"mlflow": 2}
    client, runs = mlflow_runs(out)
    assert set(runs) == {"r1", "r2"}
    r1 = runs["r1"]
    assert r1.info.run_name == "sequential math>code 1/4" and r1.info.status == "FINISHED"
    assert r1.data.tags["sftmix.strategy"] == "sequential" and r1.data.tags["sftmix.amount"] == "0.25"
    p = r1.data.params
    assert p["sftmix.run_id"] == "r1" and p["model"] == "tiny" and p["strategy.order"] == "math,code"
    assert (p["stage1.id"], p["stage1.mixture_hash"], p["stage1.rows"], p["stage1.mixture_tokens"]) == ("s1", "h1",
                                                                                                       "12", "345")
    assert p["stage2.rows.code"] == "6" and p["training.learning_rate"] == "0.001" and p["model.lora.r"] == "16"
    # later stages carry only what differs from the first
    assert p["stage2.training.learning_rate"] == "0.0005" and "stage2.training.batch_size" not in p
    # the loss of every optimizer step, steps counted across the chain of stages
    assert history(client, r1, "train/loss") == [(1, 2.0), (2, 1.5), (3, 1.25), (4, 1.125), (5, 0.875)]
    assert history(client, r1, "stage1/train_tokens") == [(3, 345.0)]
    assert history(client, r1, "stage2/loss_final") == [(5, 0.875)]
    assert history(client, r1, "train/tokens") == [(5, 445.0)] and history(client, r1, "train/seconds") == [(5, 3.5)]
    # scores at their checkpoint's stage index, with n and the summary's other figures
    assert history(client, r1, "eval/math") == [(0, 0.25), (2, 0.75)]
    assert history(client, r1, "eval_n/math") == [(0, 4.0), (2, 4.0)]
    assert history(client, r1, "eval/code") == [(2, 0.5)] and history(client, r1, "eval/code.pass_10") == [(2, 0.875)]
    assert history(client, r1, "ability/code") == [(2, 0.5)]
    assert history(client, runs["r2"], "eval/math") == [(1, 0.8)]
    assert history(client, runs["r2"], "train/loss") == [(1, 2.0), (2, 1.5), (3, 1.25)]


def test_a_rerun_reuses_the_mlflow_run_and_adds_only_what_is_new(env):
    out, store = env
    tracking.log_study(out, store, "mlflow")
    assert tracking.log_study(out, store, "mlflow") == {"mlflow": 0}
    client, runs = mlflow_runs(out)
    assert len(client.search_runs([runs["r1"].info.experiment_id])) == 2
    assert len(history(client, runs["r1"], "train/loss")) == 5
    # a task evaluated later (e.g. added to the study) lands in the same run
    store.add_eval("e_s1_code", "s1", Task("code", "code", "pass@1"), {}, rows([1, 1]), {"pass@1": 1.0}, 1.0)
    wanted = store.meta("evals")
    wanted["r2"]["code"] = {"1": "e_s1_code"}
    store.set_meta("evals", wanted)
    assert tracking.log_study(out, store, ["mlflow", "none"]) == {"mlflow": 1}
    client, runs2 = mlflow_runs(out)
    assert runs2["r2"].info.run_id == runs["r2"].info.run_id
    assert history(client, runs2["r2"], "eval/code") == [(1, 1.0)]
    assert history(client, runs2["r2"], "eval/math") == [(1, 0.8)]


def test_mlflow_tracking_uri_comes_from_the_environment(env, tmp_path, monkeypatch):
    out, store = env
    elsewhere = tmp_path / "central"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere.as_uri())
    tracking.log_study(out, store, ["mlflow"])
    assert (elsewhere).is_dir() and not (out / "mlruns").exists()


def scalars(d):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(d))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_scalars_per_run(env):
    out, store = env
    assert tracking.log_study(out, store, ["tensorboard"]) == {"tensorboard": 2}
    d = out / "tensorboard" / "sequential-math-code-1-4"
    s = scalars(d)
    assert s["train/loss"] == [(1, 2.0), (2, 1.5), (3, 1.25), (4, 1.125), (5, 0.875)]
    assert s["eval/math"] == [(0, 0.25), (2, 0.75)] and s["ability/math"] == [(0, 0.25), (2, 0.75)]
    assert s["stage2/train_tokens"] == [(5, 100.0)]
    assert scalars(out / "tensorboard" / "single-math-1-4")["eval/math"] == [(1, pytest.approx(0.8))]
    # unchanged: nothing rewritten; changed: written anew, not appended to
    events = sorted(d.glob("events.out.tfevents.*"))
    assert len(events) == 1
    assert tracking.log_study(out, store, ["tensorboard"]) == {"tensorboard": 0}
    assert sorted(d.glob("events.out.tfevents.*")) == events
    store.finish_stage("s2", {"train_tokens": 100, "seconds": 1.0, "steps": 2, "loss": [1.0, 0.5],
                              "loss_first": 1.0, "loss_last": 0.5, "learning_rate": 0.0005})
    assert tracking.log_study(out, store, ["tensorboard"]) == {"tensorboard": 1}
    assert len(list(d.glob("events.out.tfevents.*"))) == 1
    assert scalars(d)["train/loss"] == [(1, 2.0), (2, 1.5), (3, 1.25), (4, 1.0), (5, 0.5)]


def test_no_secret_from_the_environment_is_written(env):
    out, store = env
    tracking.log_study(out, store, ["mlflow", "tensorboard"])
    files = [f for f in out.rglob("*") if f.is_file() and f.name != "sftmix.db" and not f.name.startswith("sftmix.db")]
    assert len(files) > 20  # mlflow's params, metrics, tags and the event files were all looked at
    for f in files:
        assert SECRET.encode() not in f.read_bytes(), f


STUDY = """\
name: t
models: [tiny]
sources: {math: {builtin: math, size: 16}}
amounts: [1]
"""


def test_report_to_is_checked_at_load_time(tmp_path, monkeypatch):
    assert load_study(None, text=STUDY, base_dir=tmp_path).study.report_to == []
    sf = load_study(None, text=STUDY + "report_to: mlflow, tensorboard\n", base_dir=tmp_path)
    assert sf.study.report_to == ["mlflow", "tensorboard"]
    assert load_study(None, text=STUDY + "report_to: none\n", base_dir=tmp_path).study.report_to == ["none"]
    assert tracking.backends(["none"]) == [] and tracking.backends("mlflow") == ["mlflow"]
    with pytest.raises(StudyError, match=r"study:5: report_to\.1: unknown backend 'wandb'; expected mlflow, "
                                         r"tensorboard or none"):
        load_study(None, text=STUDY + "report_to: [mlflow, wandb]\n", base_dir=tmp_path)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(StudyError, match=r"report_to\.0: report_to mlflow needs the mlflow-skinny package: "
                                         r"pip install 'sftmix\[tracking\]'"):
        load_study(None, text=STUDY + "report_to: [mlflow]\n", base_dir=tmp_path)


def test_credentials_in_a_tracking_uri_never_reach_a_message():
    from sftmix.errors import redact

    text = redact("logging to https://bob:hunter2@mlflow.example.com/api?x=1&access_token=abc123 failed")
    assert "hunter2" not in text and "abc123" not in text and "mlflow.example.com" in text
    assert redact("file:///tmp/mlruns") == "file:///tmp/mlruns"
