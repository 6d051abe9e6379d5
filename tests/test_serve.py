"""`sftmix serve`: the OpenAI client against a live server on tiny, and bad input answered with clear 4xx bodies
while the server keeps serving."""

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from sftmix.errors import SftmixError
from sftmix.serve import Limits, create_app, generate_texts, load_served, serve_in_thread

LIMITS = Limits(max_tokens=32, max_n=4, max_body_bytes=64 * 1024, max_pending=4)
HELLO = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def tiny():
    from sftmix.models import load_model, load_tokenizer

    return load_model("tiny", device="cpu"), load_tokenizer("tiny")


@pytest.fixture(scope="module")
def server(tiny):
    model, tok = tiny
    app = create_app(model, tok, "tiny", LIMITS)
    with serve_in_thread(app) as url:
        yield app, url


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_openai_client_gets_sftmix_generation(server, tiny):
    from openai import OpenAI

    app, url = server
    client = OpenAI(base_url=url, api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["tiny"]
    r = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=12, temperature=0)
    text = r.choices[0].message.content
    # the same text sftmix's own generation gives for the same chat and settings
    from sftmix.evaluate.settings import GenSettings

    assert text == generate_texts(*tiny, [HELLO], GenSettings(max_new_tokens=12))[0][0]
    assert r.usage.completion_tokens <= 12 and r.usage.prompt_tokens > 5
    assert r.choices[0].finish_reason in ("stop", "length") and r.model == "tiny"
    # greedy with n=2: two (identical) choices; a stop sequence cuts the reply
    r2 = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=12, temperature=0, n=2)
    assert [c.message.content for c in r2.choices] == [text, text]
    # sampling: n choices, repeatable with a seed
    kw = dict(model="tiny", messages=HELLO, max_tokens=12, temperature=1.0, top_p=0.95, n=3, seed=7)
    sampled = [c.message.content for c in client.chat.completions.create(**kw).choices]
    assert len(sampled) == 3 and len(set(sampled)) > 1
    assert [c.message.content for c in client.chat.completions.create(**kw).choices] == sampled
    if len(text.split()) > 1:
        cut = text.split()[1]
        r3 = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=12, temperature=0, stop=[cut])
        assert cut not in r3.choices[0].message.content


def test_bad_input_gets_clear_4xx_and_the_server_keeps_serving(server):
    app, url = server
    c = httpx.Client(base_url=url, timeout=120)
    ok = {"model": "tiny", "messages": HELLO, "max_tokens": 4, "temperature": 0}
    cases = [
        (dict(content=b"{not json", headers={"content-type": "application/json"}), 400, None, "not valid JSON"),
        (dict(json=[1, 2]), 400, None, "JSON object"),
        (dict(json={"model": "tiny", "max_tokens": 4}), 400, "messages", "messages"),
        (dict(json={**ok, "messages": []}), 400, "messages", "messages"),
        (dict(json={**ok, "messages": [{"role": "wizard", "content": "hi"}]}), 400, "messages.0.role", "role"),
        (dict(json={**ok, "max_tokens": 1_000_000}), 400, "max_tokens", "at most 32"),
        (dict(json={**ok, "max_completion_tokens": 0}), 400, "max_completion_tokens", "max_completion_tokens"),
        (dict(json={**ok, "n": 100}), 400, "n", "at most 4"),
        (dict(json={**ok, "temperature": 9}), 400, "temperature", "temperature"),
        (dict(json={**ok, "stream": True}), 400, "stream", "streaming"),
        (dict(json={**ok, "model": "gpt-9"}), 404, "model", "not served here"),
        (dict(json={**ok, "messages": [{"role": "user", "content": "word " * 2000}]}), 400, "messages", "context"),
        (dict(content=b"x" * (10 << 20), headers={"content-type": "application/json"}), 413, None, "over the limit"),
    ]
    for kwargs, status, param, words in cases:
        r = c.post("/chat/completions", **kwargs)
        assert r.status_code == status, (kwargs.get("json"), r.text)
        err = r.json()["error"]
        assert words in err["message"] and err["type"] and err["param"] == param, err
    for method, path, status in (("GET", "/nowhere", 404), ("GET", "/chat/completions", 405)):
        r = c.request(method, path)
        assert r.status_code == status and r.json()["error"]["message"]
    assert c.post("/chat/completions", json=ok).status_code == 200  # still serving


def test_fifty_concurrent_requests_are_bounded(server):
    app, url = server
    before = rss_mb()
    body = {"model": "tiny", "messages": HELLO, "max_tokens": 16, "temperature": 0}

    def post(i):
        with httpx.Client(base_url=url, timeout=300) as c:
            if i % 10 == 9:  # a few oversized bodies in the crowd
                return c.post("/chat/completions", content=b" " * (10 << 20)).status_code
            return c.post("/chat/completions", json=body).status_code

    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(post, range(50)))
    assert set(statuses) <= {200, 413, 429}, statuses
    assert statuses.count(413) == 5 and statuses.count(200) >= 1 and statuses.count(429) >= 1
    assert app.state.pending == 0
    r = httpx.post(f"{url}/chat/completions", json=body, timeout=120)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] is not None
    assert rss_mb() - before < 300  # bodies are capped and dropped, not accumulated


def test_api_key_is_required_when_set(tiny):
    app = create_app(*tiny, "tiny", LIMITS, api_key="s3cret")
    with serve_in_thread(app) as url:
        body = {"messages": HELLO, "max_tokens": 2, "temperature": 0}
        r = httpx.post(f"{url}/chat/completions", json=body)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{url}/models", headers={"Authorization": "Bearer nope"}).status_code == 401
        ok = httpx.post(f"{url}/chat/completions", json=body, headers={"Authorization": "Bearer s3cret"}, timeout=60)
        assert ok.status_code == 200


def test_stage_and_adapter_arguments_are_checked(tmp_path):
    with pytest.raises(SftmixError, match="not both"):
        load_served("tiny", adapter="a", stage="b")
    with pytest.raises(SftmixError, match="no stage.json"):
        load_served("tiny", stage=str(tmp_path))
    (tmp_path / "stage.json").write_text("{}")
    with pytest.raises(SftmixError, match="does not name its base model"):
        load_served(None, stage=str(tmp_path))
    with pytest.raises(SftmixError, match="neither model/"):
        load_served("tiny", stage=str(tmp_path))
    with pytest.raises(SftmixError, match="adapter_config.json"):
        load_served("tiny", adapter=str(tmp_path))
    from sftmix.cli import main

    with pytest.raises(SystemExit):  # argparse: --adapter and --stage are exclusive
        main(["serve", "tiny", "--adapter", "a", "--stage", "b"])


def test_sftmix_serve_command_serves_a_stage_directory(tmp_path, tiny):
    """The real command in a subprocess, on a stage laid out as train_stage writes it (stage.json + model/)."""
    import socket

    model, tok = tiny
    stage = tmp_path / "stages" / "abc123"
    model.save_pretrained(stage / "model")
    (stage / "stage.json").write_text(json.dumps({"stage_id": "abc123", "steps": 0}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SFTMIX_TEST_KEY": "k1"}
    proc = subprocess.Popen([sys.executable, "-m", "sftmix.cli", "serve", "tiny", "--stage", str(stage), "--port",
                             str(port), "--max-tokens", "8", "--api-key-env", "SFTMIX_TEST_KEY"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, headers = f"http://127.0.0.1:{port}", {"Authorization": "Bearer k1"}
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline, "sftmix serve did not come up"
            time.sleep(0.3)
        assert httpx.get(f"{url}/v1/models", headers=headers).json()["data"][0]["id"] == "tiny-abc123"
        r = httpx.post(f"{url}/v1/chat/completions", headers=headers, timeout=60,
                       json={"messages": HELLO, "max_tokens": 100})
        assert r.status_code == 400 and "at most 8" in r.json()["error"]["message"]
        r = httpx.post(f"{url}/v1/chat/completions", headers=headers, timeout=60,
                       json={"messages": HELLO, "max_tokens": 8, "temperature": 0})
        assert r.status_code == 200 and r.json()["model"] == "tiny-abc123"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, 130, -signal.SIGINT)


def _predictions(db_path) -> dict:
    import sqlite3

    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT e.task, i.item_id, i.prediction, i.score FROM items i JOIN evals e USING (eval_id)")
        return {(t, i): (p, s) for t, i, p, s in rows}


def test_sftmix_eval_scores_a_served_model_as_it_scores_the_model_itself(tiny, tmp_path, capsys, monkeypatch):
    """`sftmix eval MODEL --base-url URL`: the OpenAI-compatible backend on a live `sftmix serve`; greedy replies
    and scores equal those of the same model evaluated in process."""
    from sftmix.cli import main

    key = "sk-test-not-stored-4711"
    monkeypatch.setenv("SFTMIX_TEST_KEY", key)
    args = ["--tasks", "math,code,general", "--limit", "3", "--no-progress"]
    with serve_in_thread(create_app(*tiny, "tiny", Limits(), api_key=key)) as url:
        # the server wants the key: without --api-key-env none is sent, and sftmix says so
        assert main(["eval", "tiny", "--base-url", url, "--out", str(tmp_path / "nokey"), *args]) == 2
        assert "refused the API key" in capsys.readouterr().err
        assert main(["eval", "tiny", "--base-url", url, "--api-key-env", "SFTMIX_TEST_KEY", "--out",
                     str(tmp_path / "served"), *args]) == 0
    served_out, served_err = capsys.readouterr()
    assert main(["eval", "tiny", "--out", str(tmp_path / "local"), *args]) == 0
    assert capsys.readouterr().out == served_out
    served, local = _predictions(tmp_path / "served" / "sftmix.db"), _predictions(tmp_path / "local" / "sftmix.db")
    assert len(served) == 9 and served == local
    # the key is read from the environment, never written down or printed
    assert key not in served_out + served_err
    for f in (tmp_path / "served").rglob("*"):
        assert not f.is_file() or key.encode() not in f.read_bytes(), f


def test_sftmix_eval_backend_is_part_of_the_key_and_checked(tmp_path, capsys, monkeypatch):
    import sqlite3

    from sftmix.cli import main
    from sftmix.evaluate import generate as gen

    calls = []
    real = gen.generate_hf
    monkeypatch.setattr(gen, "generate_hf", lambda *a, **k: calls.append(1) or real(*a, **k))
    args = ["eval", "tiny", "--tasks", "math", "--limit", "3", "--no-progress", "--out", str(tmp_path)]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert not calls
    # plain HF generate is another evaluation (another backend may sample differently), with the same greedy replies
    assert main(args + ["--backend", "hf"]) == 0
    assert calls and capsys.readouterr().out == first
    with sqlite3.connect(tmp_path / "sftmix.db") as db:
        runs = db.execute("SELECT run_id, label FROM runs ORDER BY label").fetchall()
        preds = db.execute("SELECT eval_id, item_id, prediction FROM items ORDER BY item_id, eval_id").fetchall()
    # both stay in the store, each under its own run
    assert [label for _, label in runs] == ["tiny", "tiny [hf]"] and runs[0][0] != runs[1][0]
    assert len({e for e, _, _ in preds}) == 2 and len(preds) == 6
    assert [p[1:] for p in preds[0::2]] == [p[1:] for p in preds[1::2]]
    bad = [(["--backend", "openai"], "--base-url URL"),
           (["--backend", "hf", "--base-url", "http://127.0.0.1:9/v1"], "only for --backend openai"),
           (["--api-key-env", "X"], "only for --backend openai"),
           (["--base-url", "http://127.0.0.1:9/v1", "--chat-template", "chatml"], "its own chat template")]
    for extra, message in bad:
        assert main(args + extra) == 2
        assert message in capsys.readouterr().err
    assert main(["eval", "--samples", "x.jsonl", "--backend", "hf", "--out", str(tmp_path)]) == 2
    assert "nothing is generated" in capsys.readouterr().err
