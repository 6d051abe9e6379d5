"""The store and the stage directories under crashes and concurrency (no training here)."""

import json
import sqlite3
import threading
import time

import pytest

from sftmix.errors import SftmixError
from sftmix.study.steps import stage_lock
from sftmix.study.store import SCHEMA_VERSION, Store
from sftmix.train.trainer import stage_done


class FakeTask:
    name, ability, metric, domain = "math", "math", "accuracy", ""


ROWS = [{"item_id": f"i{k}", "score": k % 2, "prompt": "p", "prediction": "q", "reference": "r"} for k in range(4)]


def test_empty_or_truncated_stage_json_is_not_a_finished_stage(tmp_path):
    # Defect: an empty stage.json after a power loss stopped resume with a traceback.
    d = tmp_path / "stage"
    d.mkdir()
    (d / "stage.json").write_text("")
    assert stage_done(d) is None
    (d / "stage.json").write_text('{"stage_id": "abc", "ste')
    assert stage_done(d) is None
    (d / "stage.json").write_text(json.dumps({"stage_id": "abc", "steps": 3}))
    assert stage_done(d) == {"stage_id": "abc", "steps": 3}


def test_schema_version_is_recorded_and_checked(tmp_path):
    store = Store(tmp_path / "s.db")
    store.close()
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        db.execute("PRAGMA user_version = 1")
    with pytest.raises(SftmixError, match="incompatible sftmix version.*schema 1"):
        Store(tmp_path / "s.db")


def test_an_evaluation_is_all_or_nothing(tmp_path):
    store = Store(tmp_path / "s.db")
    try:
        bad = ROWS + [{"item_id": "i0", "score": 1, "prompt": "p", "prediction": "dup", "reference": "r"}]
        with pytest.raises(sqlite3.IntegrityError):
            store.add_eval("e1", "ck", FakeTask(), {"k": 1}, bad, {"accuracy": 0.5}, 1.0)
        assert not store.has_eval("e1") and store.items("e1") == []
        assert store.add_eval("e1", "ck", FakeTask(), {"k": 1}, ROWS, {"accuracy": 0.5}, 1.0) == 0.5
        assert len(store.items("e1")) == 4
    finally:
        store.close()


def test_inserts_name_their_columns(tmp_path):
    # Defect: inserts went by column position, so any schema change silently shifted values.
    store = Store(tmp_path / "s.db")
    try:
        store.add_run("r", "label", "tiny", "multitask", "math", 0.5, 3, ["s1"], "amount", {"math": {}}, {"k": 1}, "b")
        (row,) = store.runs()
        assert (row["seed"], row["amount"], row["axis"], row["params"], row["base_id"]) == (3, 0.5, "amount", {"k": 1}, "b")
    finally:
        store.close()


def test_concurrent_writers_from_threads_with_their_own_connections(tmp_path):
    Store(tmp_path / "s.db").close()
    errors = []

    def writer(i):
        try:
            s = Store(tmp_path / "s.db")
            for j in range(10):
                s.add_eval(f"e{i}-{j}", "ck", FakeTask(), {"i": i, "j": j}, ROWS, {"accuracy": 0.5}, 0.0)
            s.close()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    s = Store(tmp_path / "s.db")
    assert len(s.evals()) == 40 and len(s.items()) == 160
    s.close()


def test_stage_lock_lets_one_trainer_in_at_a_time(tmp_path):
    order = []

    def hold(name, delay):
        with stage_lock(tmp_path, "abc"):
            order.append(f"{name} in")
            time.sleep(delay)
            order.append(f"{name} out")

    a = threading.Thread(target=hold, args=("a", 0.3))
    a.start()
    time.sleep(0.05)
    b = threading.Thread(target=hold, args=("b", 0.0))
    b.start()
    a.join()
    b.join()
    assert order == ["a in", "a out", "b in", "b out"]
