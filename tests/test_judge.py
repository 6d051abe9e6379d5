"""The LLM judge: parsing and file formats, then MT-Bench and BELLE end to end against a live `sftmix serve` whose
model is a tiny fine-tuned here to answer in the judge's formats (and to refuse one kind of prompt), through the
real openai client: parsed ratings, unparseable replies, retries after server errors, and a cache that makes a
rerun cost zero requests."""

import json
import os
import random

import pytest

from sftmix.data.example import Example
from sftmix.errors import DataError, SftmixError
from sftmix.evaluate.judge import (
    MTBENCH_PROMPTS, TURN_SEP, Judge, JudgeCache, join_turns, judged_summary, load_belle, load_judge_prompts,
    load_mtbench, mtbench_prompts, parse_rating, parse_unit_score, split_turns,
)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------------------------- unit level


@pytest.mark.parametrize("text,want", [
    ("The answer is fine. Rating: [[8]]", 8), ("Rating: [[7.5]]", 7.5), ("[[3]] then [[9]]", 9),
    ("rated [6] overall", 6), ("Rating: [[11]]", None), ("Rating: [[0]]", None), ("I refuse to grade this.", None),
    ("", None), ("Rating: 8/10", None),
])
def test_parse_rating(text, want):
    assert parse_rating(text) == want


@pytest.mark.parametrize("text,want", [
    ("得分: 0.8", 0.8), ("得分：1分。模型回答与标准答案一致", 1.0), ("Score: 0", 0.0), ("[[0.5]]", 0.5),
    ("得分: 7", None), ("no score here", None), ("", None),
])
def test_parse_unit_score(text, want):
    assert parse_unit_score(text) == want


def test_mtbench_file_errors_name_the_line(tmp_path):
    good = {"question_id": 81, "category": "writing", "turns": ["Write a poem.", "Shorter."]}
    f = write_jsonl(tmp_path / "q.jsonl", [good, {"question_id": 82, "turns": ["x"]}])
    with pytest.raises(DataError, match=r"q.jsonl:2: field 'category' is missing"):
        load_mtbench(f)
    f.write_text(json.dumps(good) + "\n{oops\n")
    with pytest.raises(DataError, match=r"q.jsonl:2: not valid JSON"):
        load_mtbench(f)
    write_jsonl(f, [{**good, "turns": ["a", "b", "c"]}])
    with pytest.raises(DataError, match="q.jsonl:1: turns must be"):
        load_mtbench(f)
    p = write_jsonl(tmp_path / "jp.jsonl", [{"name": "single-v1", "prompt_template": "{question} {answr}"}])
    with pytest.raises(DataError, match=r"jp.jsonl:1: prompt_template has a placeholder 'answr'"):
        load_judge_prompts(p)
    write_jsonl(p, [{"name": "single-v1", "prompt_template": "{question} {answer}"}])
    with pytest.raises(DataError, match="no judge prompt named single-math-v1"):
        load_judge_prompts(p)


def test_mtbench_prompts_use_references_for_math_reasoning_coding():
    math = Example([{"role": "user", "content": "2+2?"}],
                   {"category": "math", "turns": ["2+2?", "And 3+3?"], "reference": ["4", "6"]})
    writing = Example([{"role": "user", "content": "Poem"}], {"category": "writing", "turns": ["Poem", "Shorter"]})
    (t1, t2) = mtbench_prompts(math, join_turns(["It is 4", "It is 6"]), MTBENCH_PROMPTS)
    assert "Reference answer" in t1[-1]["content"] and "It is 4" in t1[-1]["content"]
    assert "Second question: 6" in t2[-1]["content"] and "It is 6" in t2[-1]["content"]
    (w1, w2) = mtbench_prompts(writing, join_turns(["roses", "short"]), MTBENCH_PROMPTS)
    assert "Reference" not in w1[-1]["content"] + w2[-1]["content"]
    assert w1[0]["role"] == "system" and "[[" in w1[0]["content"]
    # a model cannot forge the turn separator to shift what the judge sees as its second answer
    assert split_turns(join_turns(["a" + TURN_SEP + "b", "c"])) == ["a" + "\n\n\n\n" + "b", "c"]


def test_belle_files_in_both_layouts(tmp_path):
    rows = [{"question": "翻译: cat", "std_answer": "猫", "class": "translation"},
            {"id": "q2", "question": "Brainstorm", "std_answer": "", "class": "Brainstorming"}]
    f = write_jsonl(tmp_path / "eval_set.json", rows)
    p = write_jsonl(tmp_path / "eval_prompt.json", [{"class": "translation", "prompt": "P1"},
                                                    {"class": "brainstorming", "prompt": "P2"}])
    items, prompts = load_belle(f, p)
    assert [e.meta["category"] for e in items] == ["translation", "Brainstorming"] and items[1].id == "q2"
    (tmp_path / "as_list.json").write_text(json.dumps(rows))
    (tmp_path / "as_dict.json").write_text(json.dumps({"Translation": "P1", "brainstorming": "P2"}))
    items2, prompts2 = load_belle(tmp_path / "as_list.json", tmp_path / "as_dict.json")
    assert len(items2) == 2 and prompts2 == prompts
    write_jsonl(f, rows + [{"question": "x", "std_answer": "", "class": "poetry"}])
    with pytest.raises(DataError, match=r"eval_set.json:3: class 'poetry' has no judge prompt"):
        load_belle(f, p)


def test_summary_leaves_unjudged_items_out_but_counts_them():
    rows = [{"score": 0.8, "details": {"category": "writing", "rating": 8, "judged": 2, "unparseable": 0}},
            {"score": 0.0, "details": {"category": "math", "excluded": True, "judged": 0, "unparseable": 2}},
            {"score": 0.4, "details": {"category": "writing", "rating": 4, "judged": 1, "unparseable": 1}}]
    s = judged_summary(rows, "judge_rating")
    assert s["judge_rating"] == pytest.approx(0.6) and s["rating"] == pytest.approx(6)
    assert s["unjudged_items"] == 1 and s["unparseable"] == 3 and s["judgements"] == 3
    assert s["category:writing"] == pytest.approx(0.6) and "category:math" not in s
    # the scorer's own rows (details at top level) summarise the same
    assert judged_summary([{"score": r["score"], **r["details"]} for r in rows], "judge_rating") == s


# --------------------------------------------------------------------------------------- end to end, real HTTP

WORDS = ("the a cat dog sum of two numbers write poem about sea answer is 42 python list function return value story "
         "plan city tree blue run fast slow 1 2 3 7 9 plus minus").split()
# Prompt openings the test judge was fine-tuned on, and what it learned to say after each.
REPLIES = {"Rate:": "Rating: [[8]]", "Grade:": "Rating: [[6]]", "Check:": "I cannot grade this.",
           "Score:": "得分: 0.5"}
JUDGE_PROMPTS = [  # FastChat's layout; the math prompts get the learned refusal
    {"name": "single-v1", "system_prompt": "", "prompt_template": "Rate: {question} || {answer}"},
    {"name": "single-math-v1", "system_prompt": "", "prompt_template": "Check: {question} || {ref_answer_1} || {answer}"},
    {"name": "single-v1-multi-turn", "system_prompt": "",
     "prompt_template": "Grade: {question_1} || {answer_1} || {question_2} || {answer_2}"},
    {"name": "single-math-v1-multi-turn", "system_prompt": "",
     "prompt_template": "Check: {question_1} || {answer_1} || {ref_answer_1} || {question_2} || {answer_2}"},
    {"name": "pair-v2", "system_prompt": "", "prompt_template": "{question} {answer_a} {answer_b}"},  # ignored
]
QUESTIONS = [
    {"question_id": 81, "category": "writing", "turns": ["Write a poem about the sea.", "Now make it rhyme."]},
    {"question_id": 82, "category": "roleplay", "turns": ["Pretend to be a cat.", "Now a dog."]},
    {"question_id": 111, "category": "math", "turns": ["What is 2 plus 3?", "And 7 plus 9?"],
     "reference": ["5", "16"]},
]
KEY_ENV = "SFTMIX_TEST_JUDGE_KEY"


def _filler(rng, k):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, k)))


def _judge_prompt(kind, rng):
    if kind == "Grade:":
        return f"Grade: {_filler(rng, 8)} || {_filler(rng, 12)} || {_filler(rng, 8)} || {_filler(rng, 12)}"
    if kind == "Score:":
        return f"Score: 问题:{_filler(rng, 8)} 标准回答: {_filler(rng, 8)} 模型回答:{_filler(rng, 12)}"
    return f"{kind} {_filler(rng, 8)} || {_filler(rng, 12)}"


@pytest.fixture(scope="module")
def judge_server(tmp_path_factory):
    """A tiny fine-tuned (full FT, here) to reply in the judge formats, served over HTTP with an API key; the
    app counts requests and can be told to fail the next k with HTTP 500."""
    import torch
    from fastapi.responses import JSONResponse

    from sftmix.config import ModelConfig, TrainingConfig
    from sftmix.models import load_model, load_tokenizer
    from sftmix.serve import Limits, create_app, serve_in_thread
    from sftmix.train.trainer import StageJob, train_stage

    rng = random.Random(0)
    rows = [Example([{"role": "user", "content": _judge_prompt(k, rng)}, {"role": "assistant", "content": v}])
            for _ in range(24) for k, v in REPLIES.items()]
    d = tmp_path_factory.mktemp("judge-stage")
    hp = TrainingConfig(epochs=1, max_steps=100, learning_rate=3e-3, batch_size=16, warmup_ratio=0.05)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 1.6M-parameter model gains nothing from threads, and on a busy box they thrash
    try:
        info = train_stage(StageJob("judge", ModelConfig(name="tiny", finetune="full"), rows, hp, 0, None,
                                    str(d / "s")), progress=False)
    finally:
        torch.set_num_threads(threads)
    assert info["loss_last"] < 0.1 * info["loss_first"]
    app = create_app(load_model("tiny", weights=d / "s" / "model", device="cpu"), load_tokenizer("tiny"),
                     "tiny-judge", Limits(max_tokens=32, max_pending=64), api_key="judge-key")
    app.state.test = {"seen": 0, "fail_next": 0}

    @app.middleware("http")
    async def count_and_fail(request, call_next):
        if request.url.path.endswith("/chat/completions"):
            app.state.test["seen"] += 1
            if app.state.test["fail_next"] > 0:
                app.state.test["fail_next"] -= 1
                return JSONResponse({"error": {"message": "injected failure", "type": "server_error"}}, 500)
        return await call_next(request)

    os.environ[KEY_ENV] = "judge-key"
    with serve_in_thread(app) as url:
        yield app, url
    os.environ.pop(KEY_ENV, None)


@pytest.fixture(scope="module")
def evaluated():
    """The model under evaluation: the base tiny, answering through sftmix's generation."""
    from sftmix.models import load_model, load_tokenizer
    from sftmix.serve import generate_texts

    model, tok = load_model("tiny", device="cpu"), load_tokenizer("tiny")
    calls = []

    def gen(convs, settings):
        calls.append(convs)
        return generate_texts(model, tok, convs, settings)

    return gen, calls


def judge_cfg(url, **kw):
    return {"model": "tiny-judge", "base_url": url, "api_key_env": KEY_ENV, "n": 2, "max_tokens": 16,
            "backoff": 0.01, "concurrency": 4, **kw}


def make_mtbench(tmp_path, url, cache, **kw):
    from sftmix.evaluate.tasks import make_task

    q = write_jsonl(tmp_path / "question.jsonl", QUESTIONS)
    jp = write_jsonl(tmp_path / "judge_prompts.jsonl", JUDGE_PROMPTS)
    return make_task("mtbench", max_new_tokens=6, path=str(q), judge_prompts=str(jp),
                     judge=judge_cfg(url, **kw), cache=str(cache))


def test_mtbench_end_to_end_with_retries_then_a_free_rerun(judge_server, evaluated, tmp_path):
    from sftmix.study.steps import score_rows

    app, url = judge_server
    gen, calls = evaluated
    task = make_mtbench(tmp_path, url, tmp_path / "judge.sqlite")
    calls.clear()
    completions = task.respond(gen, task.items)
    # two rounds: turn 2 is asked with the model's own turn-1 answer in the conversation
    assert len(calls) == 2 and len(calls[1]) == 3
    for conv, preds in zip(calls[1], completions):
        assert conv[1] == {"role": "assistant", "content": split_turns(preds[0])[0]}
        assert conv[2]["content"] in [q["turns"][1] for q in QUESTIONS]

    seen0 = app.state.test["seen"]
    app.state.test["fail_next"] = 3  # the first three requests get HTTP 500: retried with backoff
    rows, summary = score_rows(task, completions)
    sent = app.state.test["seen"] - seen0
    assert task.judge.stats.retries == 3 and task.judge.stats.failed == 0
    assert sent == 3 * 2 * 2 + 3  # questions x turns x n judgements, plus the retried failures
    by_cat = {r["details"]["category"]: r for r in rows}
    for cat in ("writing", "roleplay"):  # turn 1 rated 8, turn 2 rated 6, by the fine-tuned judge
        d = by_cat[cat]["details"]
        assert (d["turn_1"], d["turn_2"], d["rating"], by_cat[cat]["score"]) == (8, 6, 7, 0.7)
        assert (d["judged"], d["unparseable"], d["excluded"]) == (4, 0, False)
        assert d["judge"] == f"tiny-judge @ {url}" and "[[8]]" in d["judgements"][0]
    m = by_cat["math"]["details"]  # the judge refuses reference-guided prompts: counted, never a number
    assert (m["judged"], m["unparseable"], m["excluded"], m["rating"]) == (0, 4, True, None)
    assert m["judgements"][0] == "I cannot grade this."
    assert summary["judge_rating"] == pytest.approx(0.7) and summary["rating"] == pytest.approx(7)
    assert summary["unjudged_items"] == 1 and summary["unparseable"] == 4 and summary["judgements"] == 8
    assert summary["category:writing"] == pytest.approx(0.7) and "category:math" not in summary

    # the same task again, from a fresh Judge on the same cache: zero requests reach the server
    again = make_mtbench(tmp_path, url, tmp_path / "judge.sqlite")
    seen1 = app.state.test["seen"]
    rows2, summary2 = score_rows(again, completions)
    assert app.state.test["seen"] == seen1 and again.judge.stats.requests == 0 and again.judge.stats.cached == 12
    assert summary2 == summary and [r["score"] for r in rows2] == [r["score"] for r in rows]
    # a different judge setting is a different cache key, and a different evaluation; concurrency is neither
    other = make_mtbench(tmp_path, url, tmp_path / "judge.sqlite", max_tokens=15)
    score_rows(other, completions)
    assert app.state.test["seen"] - seen1 == 12
    assert other.key() != task.key() == make_mtbench(tmp_path, url, tmp_path / "other.sqlite", concurrency=1).key()


def test_belle_end_to_end(judge_server, evaluated, tmp_path):
    from sftmix.evaluate.tasks import make_task
    from sftmix.study.steps import generate_for, score_rows

    app, url = judge_server
    f = write_jsonl(tmp_path / "eval_set.json", [
        {"question": "Translate cat into French.", "std_answer": "chat", "class": "translation"},
        {"question": "List three trees.", "std_answer": "", "class": "brainstorming"},
        {"question": "Name a blue thing.", "std_answer": "the sea", "class": "open qa"},
    ])
    p = write_jsonl(tmp_path / "eval_prompt.json", [{"class": c, "prompt": "Score: "} for c in
                                                    ("translation", "brainstorming", "open QA")])
    task = make_task("belle", max_new_tokens=6, path=str(f), prompts=str(p), judge=judge_cfg(url, n=1),
                     cache=str(tmp_path / "j.sqlite"))
    gen, _ = evaluated
    completions = [[c[0]] for c in gen([e.prompt_messages for e in task.items], task.gen)]
    rows, summary = score_rows(task, completions)
    assert [r["score"] for r in rows] == [0.5, 0.5, 0.5]
    assert summary["judge_score"] == 0.5 and summary["category:open qa"] == 0.5 and summary["unjudged_items"] == 0
    assert rows[0]["details"]["judgements"] == ["得分: 0.5"]


def test_judge_configuration_errors_are_clear(judge_server, tmp_path):
    app, url = judge_server
    msgs = [[{"role": "user", "content": "Rate: a || b"}]]
    os.environ.pop("SFTMIX_NO_SUCH_KEY", None)
    with pytest.raises(SftmixError, match="SFTMIX_NO_SUCH_KEY is not set"):
        Judge(judge_cfg(url, api_key_env="SFTMIX_NO_SUCH_KEY"), cache=tmp_path / "c.sqlite").run(msgs, parse_rating)
    os.environ["SFTMIX_WRONG_KEY"] = "wrong"
    try:
        with pytest.raises(SftmixError, match="AuthenticationError.*invalid or missing API key"):
            Judge(judge_cfg(url, api_key_env="SFTMIX_WRONG_KEY"), cache=tmp_path / "c.sqlite").run(msgs, parse_rating)
    finally:
        os.environ.pop("SFTMIX_WRONG_KEY")
    with pytest.raises(SftmixError, match="not served here"):
        Judge(judge_cfg(url, model="gpt-4"), cache=tmp_path / "c.sqlite").run(msgs, parse_rating)
    with pytest.raises(SftmixError, match="judge.n"):
        Judge({"model": "x", "n": 0})
    with pytest.raises(SftmixError, match="needs an LLM judge"):
        from sftmix.evaluate.tasks import make_task

        make_task("mtbench", path=str(write_jsonl(tmp_path / "q.jsonl", QUESTIONS)))


def test_unreachable_judge_is_counted_as_failed_and_not_cached(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cache = JudgeCache(tmp_path / "c.sqlite")
    j = Judge({"model": "m", "base_url": f"http://127.0.0.1:{port}/v1", "api_key_env": None, "max_retries": 2,
               "backoff": 0.01, "timeout": 5}, cache=cache, progress=False)
    (v,) = j.run([[{"role": "user", "content": "Rate: a || b"}]], parse_rating)
    assert v.values == [] and v.unparseable == 0 and "APIConnectionError" in v.errors[0]
    assert j.stats.requests == 3 and j.stats.retries == 2 and j.stats.failed == 1
    assert cache.db.execute("SELECT COUNT(*) FROM judgements").fetchone()[0] == 0  # retried on the next run
