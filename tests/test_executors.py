"""Executors (local workers, Ray, Slurm through submitit), resume after kill -9, `sftmix status`, store versions.

Every study here is the same small one on `tiny`; the baseline is one uninterrupted in-process run, and every other
way of running it must end with the same scores and the same item-level results (CPU training and greedy decoding
are deterministic)."""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from sftmix.cli import main

STUDY = """\
name: ex
models: [{name: tiny, finetune: full}]
sources:
  math: {builtin: math, size: 24}
  code: {builtin: code, size: 24}
amounts: [1/2, 1]
strategies: [{name: sequential, params: {order: [code, math]}}]
training: {epochs: 1, learning_rate: 3.0e-3, batch_size: 8, max_length: 192}
evaluation: {tasks: [math, code], limit: 4, batch_size: 8, code_timeout: 5, after_each_stage: true}
"""


@pytest.fixture(scope="module")
def study_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("study") / "ex.yaml"
    p.write_text(STUDY)
    return p


def results(out):
    """Scores and every item result, keyed so that two stores can be compared for equality."""
    with sqlite3.connect(out / "sftmix.db") as db:
        evals = db.execute("SELECT eval_id, checkpoint, task, value, n FROM evals ORDER BY eval_id").fetchall()
        items = db.execute("SELECT eval_id, item_id, score, prediction FROM items ORDER BY eval_id, item_id").fetchall()
        dup = db.execute("SELECT COUNT(*) - COUNT(DISTINCT eval_id || item_id) FROM items").fetchone()[0]
    return evals, items, dup


def run(study_file, out, *extra):
    assert main(["run", str(study_file), f"out_dir={out}", *extra, "--no-progress"]) == 0


@pytest.fixture(scope="module")
def baseline(study_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "out"
    t0 = time.time()
    run(study_file, out)
    evals, items, dup = results(out)
    # base + 2 amounts x 2 stages = 5 checkpoints x 2 tasks
    assert len(evals) == 5 * 2 and len(items) == 5 * 2 * 4 and dup == 0
    return out, (evals, items), time.time() - t0


def test_stage_index_is_kept_with_each_score(baseline):
    from sftmix.study.store import Store

    store = Store(baseline[0] / "sftmix.db")
    try:
        rows = store.scores(store.meta("run_ids"))
    finally:
        store.close()
    seq = [r for r in rows if r["strategy"] == "sequential" and r["amount"] == 1.0 and r["task"] == "code"]
    assert sorted(r["stage_index"] for r in seq) == [0, 1, 2]  # before SFT, after code, after math


def test_two_local_workers_give_the_same_results(study_file, baseline, tmp_path):
    out = tmp_path / "w2"
    t0 = time.time()
    run(study_file, out, "executor.workers=2")
    print(f"\none worker {baseline[2]:.1f}s, two workers {time.time() - t0:.1f}s")
    assert results(out)[:2] == baseline[1]


def test_ray_executor_on_a_local_cluster(study_file, baseline, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    run(study_file, out, "executor.kind=ray", "executor.workers=2")
    assert results(out)[:2] == baseline[1]


def test_slurm_executor_through_submitit_local(study_file, baseline, tmp_path):
    pytest.importorskip("submitit")
    out = tmp_path / "slurm"
    run(study_file, out, "executor.kind=slurm", "executor.slurm.local=true", "executor.workers=2")
    assert results(out)[:2] == baseline[1]
    assert list((out / "slurm").iterdir())  # submitit's job folders


def _spawn(study_file, out, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "sftmix.cli", "run", str(study_file), f"out_dir={out}",
                             "--no-progress"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


# (crash point, nth hit) or a random delay: each trial is killed with SIGKILL, then resumed in-process.
TRIALS = [("stage_save", 2), ("store_write", 1), ("store_write", 4), ("delay", 0.35), ("delay", 0.7)]


@pytest.mark.parametrize("how,when", TRIALS, ids=[f"{h}-{w}" for h, w in TRIALS])
def test_kill_9_then_resume_equals_an_uninterrupted_run(study_file, baseline, tmp_path, how, when):
    out = tmp_path / "k"
    if how == "delay":
        proc = _spawn(study_file, out)
        time.sleep(when * baseline[2] * random.Random(str(when)).uniform(0.8, 1.2))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    else:
        proc = _spawn(study_file, out, {"SFTMIX_CRASH_AT": f"{how}:{when}"})
        err = proc.communicate(timeout=600)[1].decode()
        assert proc.returncode == -signal.SIGKILL, err[-2000:]
    run(study_file, out)  # resume
    assert results(out) == (*baseline[1], 0)
    assert not list((out / "stages").glob(".*"))  # no temp or half-moved stage directories left behind


def test_status_on_a_running_and_on_a_finished_study(study_file, baseline, tmp_path, capsys):
    assert main(["status", str(baseline[0])]) == 0
    out = capsys.readouterr().out
    assert "finished" in out and "4/4 trained" in out and "10/10 done" in out
    live = tmp_path / "live"
    proc = _spawn(study_file, live)
    try:
        deadline = time.time() + 120
        while not (live / "sftmix.db").exists() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        assert main(["status", str(live), "--json"]) == 0
        st = json.loads(capsys.readouterr().out)
        assert not st["finished"] and st["stages"]["total"] == 4 and st["evaluations"]["total"] == 10
    finally:
        proc.wait(timeout=600)
    assert main(["status", str(live)]) == 0
    assert "finished" in capsys.readouterr().out


def test_store_from_an_incompatible_version_is_a_clear_error(tmp_path, capsys, study_file):
    out = tmp_path / "old"
    out.mkdir()
    with sqlite3.connect(out / "sftmix.db") as db:
        db.execute("CREATE TABLE scores (run_id TEXT)")
    assert main(["run", str(study_file), f"out_dir={out}", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "incompatible sftmix version" in err and "schema 0" in err


def test_force_recomputes_a_task(study_file, baseline, tmp_path):
    import shutil

    out = tmp_path / "f"
    shutil.copytree(baseline[0], out)
    before = {r[0]: r for r in results(out)[0]}
    with sqlite3.connect(out / "sftmix.db") as db:
        db.execute("UPDATE evals SET value = -1 WHERE task = 'math'")
    run(study_file, out, "--force", "task=math")
    after = {r[0]: r for r in results(out)[0]}
    assert after == before
