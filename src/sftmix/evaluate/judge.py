"""An LLM judge behind any OpenAI-compatible endpoint, and the two judged tasks the papers used: MT-Bench
single-answer grading (1-10, two turns, reference answers for math/reasoning/coding) and BELLE's 0-1 scoring with
per-category prompts.

Every judgement is one request (n judgements per answer are n requests, seeded `seed + k`), so endpoints without
the `n` parameter work too. Replies are cached in SQLite under a key of (judge model, base URL, messages, request
settings, judgement index): a rerun sends nothing. Only replies are cached, never failures, so a rerun retries
what failed. A reply without a rating (or a refusal) is counted as unparseable and never turned into a number.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from ..data.example import Example
from ..errors import DataError, SftmixError
from .settings import GenSettings
from .tasks import Task, task

# ------------------------------------------------------------------------------------------------------ parsing

_DOUBLE = re.compile(r"\[\[\s*(-?\d+(?:\.\d+)?)\s*\]\]")
_SINGLE = re.compile(r"\[\s*(-?\d+(?:\.\d+)?)\s*\]")  # FastChat also accepts "[7]" when "[[7]]" is missing
_BELLE = re.compile(r"(?:得分|分数|score|rating)\s*[:：=]?\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_rating(text: str, lo: float = 1, hi: float = 10) -> float | None:
    """The last `[[x]]` rating in a judge's reply (falling back to `[x]`), or None if absent or outside lo..hi."""
    for pattern in (_DOUBLE, _SINGLE):
        found = pattern.findall(text or "")
        if found:
            x = float(found[-1])
            return x if lo <= x <= hi else None
    return None


def parse_unit_score(text: str) -> float | None:
    """BELLE's "得分: 0.8" (or "Score: 0.8", "[[0.8]]"); None unless exactly one number in 0..1 is found that way."""
    found = _BELLE.findall(text or "") or _DOUBLE.findall(text or "")
    if not found:
        return None
    x = float(found[0])
    return x if 0 <= x <= 1 else None


# -------------------------------------------------------------------------------------------------------- cache


class JudgeCache:
    """judgement key -> the judge's reply, in one SQLite file shared by threads (and by concurrent studies)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS judgements (key TEXT PRIMARY KEY, reply TEXT NOT NULL, "
                        "finish TEXT, created REAL)")
        self.db.commit()

    def get(self, key: str) -> tuple[str, str] | None:
        with self._lock:
            row = self.db.execute("SELECT reply, finish FROM judgements WHERE key = ?", (key,)).fetchone()
        return (row[0], row[1]) if row else None

    def put(self, key: str, reply: str, finish: str | None) -> None:
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO judgements VALUES (?, ?, ?, ?)", (key, reply, finish, time.time()))
            self.db.commit()

    def close(self) -> None:
        self.db.close()


def default_cache_path() -> Path:
    from ..models import cache_dir

    return cache_dir() / "judge.sqlite"


# -------------------------------------------------------------------------------------------------------- judge


@dataclass
class Verdict:
    """All judgements of one prompt: parsed values, the raw replies, and what could not be used."""

    values: list[float] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    unparseable: int = 0  # replies without a usable rating, refusals included
    errors: list[str] = field(default_factory=list)  # requests that failed after all retries

    @property
    def mean(self) -> float | None:
        return sum(self.values) / len(self.values) if self.values else None


@dataclass
class JudgeStats:
    requests: int = 0  # HTTP requests sent, retries included
    cached: int = 0  # judgements answered from the cache
    retries: int = 0
    failed: int = 0


_RETRYABLE_STATUS = {408, 409, 429}


def judge_config(cfg):
    """A JudgeConfig from the study, or a dict of its fields (task params), validated the same way."""
    from ..config import JudgeConfig

    if cfg is None:
        raise SftmixError("this task needs an LLM judge: set evaluation.judge (model, base_url, api_key_env) in the "
                          "study, or params.judge on the task")
    if isinstance(cfg, JudgeConfig):
        return cfg
    from pydantic import ValidationError

    try:
        return JudgeConfig.model_validate(cfg)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise SftmixError(f"judge.{where}: {err['msg']}") from None


class Judge:
    """Sends judge prompts to an OpenAI-compatible endpoint with concurrency, retries and a cache."""

    def __init__(self, cfg, cache: JudgeCache | str | Path | None = None, progress: bool = True):
        self.cfg = judge_config(cfg)
        self.cache = cache if isinstance(cache, JudgeCache) else JudgeCache(
            cache or self.cfg.cache or os.environ.get("SFTMIX_JUDGE_CACHE") or default_cache_path())
        self.progress = progress
        self.stats = JudgeStats()
        self._lock = threading.Lock()
        self._client = None

    @property
    def name(self) -> str:
        return f"{self.cfg.model} @ {self.cfg.base_url}"

    def client(self):
        if self._client is None:
            from openai import OpenAI

            key = "no-key"
            if self.cfg.api_key_env:
                key = os.environ.get(self.cfg.api_key_env, "")
                if not key:
                    raise SftmixError(f"evaluation.judge.api_key_env: environment variable {self.cfg.api_key_env} "
                                      "is not set (set it, or api_key_env: null for an endpoint without keys)")
            # Retries are ours (counted, and with the backoff the study asked for), not the SDK's.
            self._client = OpenAI(api_key=key, base_url=self.cfg.base_url, max_retries=0, timeout=self.cfg.timeout)
        return self._client

    def request_settings(self, k: int) -> dict:
        c = self.cfg
        s = {"temperature": c.temperature, "max_tokens": c.max_tokens}
        if c.top_p is not None:
            s["top_p"] = c.top_p
        if c.seed is not None:
            s["seed"] = c.seed + k
        return s

    def key(self, messages: list[dict], k: int) -> str:
        blob = json.dumps({"model": self.cfg.model, "base_url": self.cfg.base_url.rstrip("/"), "messages": messages,
                           "settings": self.request_settings(k), "k": k}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _call(self, messages: list[dict], k: int) -> tuple[str, str | None]:
        import openai

        delay = self.cfg.backoff
        for attempt in range(self.cfg.max_retries + 1):
            with self._lock:
                self.stats.requests += 1
            try:
                r = self.client().chat.completions.create(model=self.cfg.model, messages=messages,
                                                          **self.request_settings(k))
                choice = r.choices[0]
                return choice.message.content or "", choice.finish_reason
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as e:
                # A wrong key, model or URL fails every request alike: stop the evaluation with what to fix.
                raise SftmixError(f"judge {self.name}: {type(e).__name__} ({_status_message(e)}); check "
                                  "evaluation.judge.model, base_url and api_key_env") from None
            except (openai.APIConnectionError, openai.APIStatusError) as e:
                status = getattr(e, "status_code", None)
                retryable = status is None or status >= 500 or status in _RETRYABLE_STATUS
                if not retryable or attempt == self.cfg.max_retries:
                    raise
                with self._lock:
                    self.stats.retries += 1
                time.sleep(delay * (1 + 0.25 * random.random()))
                delay *= 2
        raise AssertionError("unreachable")

    def _one(self, key: str, messages: list[dict], k: int) -> tuple[str | None, str | None, str | None]:
        """(reply, finish_reason, error) for one judgement; replies are cached as soon as they arrive."""
        try:
            reply, finish = self._call(messages, k)
        except SftmixError:
            raise
        except Exception as e:  # the request failed for good: counted, shown, and retried on the next run
            with self._lock:
                self.stats.failed += 1
            return None, None, f"{type(e).__name__}: {_status_message(e)}"
        self.cache.put(key, reply, finish)
        return reply, finish, None

    def run(self, prompts: list[list[dict]], parse: Callable[[str], float | None],
            desc: str = "judge") -> list[Verdict]:
        """n judgements of each prompt (a list of chat messages); returns one Verdict per prompt, in order."""
        verdicts = [Verdict() for _ in prompts]
        jobs = []
        for i, messages in enumerate(prompts):
            for k in range(self.cfg.n):
                key = self.key(messages, k)
                hit = self.cache.get(key)
                if hit is not None:
                    self.stats.cached += 1
                    _record(verdicts[i], hit[0], hit[1], None, parse)
                else:
                    jobs.append((i, key, messages, k))
        if not jobs:
            return verdicts
        self.client()  # built once, before the threads share it (and a missing key fails here, not per request)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(jobs), desc=desc, unit="judgement", leave=False, disable=None)
        with ThreadPoolExecutor(max_workers=min(self.cfg.concurrency, len(jobs))) as pool:
            futures = {pool.submit(self._one, key, messages, k): i for i, key, messages, k in jobs}
            try:
                for fut in as_completed(futures):
                    reply, finish, error = fut.result()
                    _record(verdicts[futures[fut]], reply, finish, error, parse)
                    if bar:
                        bar.update(1)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
            finally:
                if bar:
                    bar.close()
        return verdicts


def _record(v: Verdict, reply: str | None, finish: str | None, error: str | None, parse) -> None:
    if error is not None:
        v.errors.append(error)
        return
    v.replies.append(reply)
    value = None if finish == "content_filter" else parse(reply)  # a filtered reply is a refusal, whatever it says
    if value is None:
        v.unparseable += 1
    else:
        v.values.append(value)


def _status_message(e: Exception) -> str:
    status = getattr(e, "status_code", None)
    body = getattr(e, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):  # OpenAI's error shape
        text = str(body["error"].get("message"))
    else:
        text = (str(e).splitlines() or [type(e).__name__])[0]
    return f"HTTP {status}: {text}" if status else text


# ------------------------------------------------------------------------------------------------ file loading


def _read_records(path: str | Path, what: str) -> list[tuple[int, object]]:
    """(line, record) from a JSON array, a JSON object or JSON lines; errors name the file and line."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: {what} file not found")
    text = p.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{p}:{e.lineno}: not valid JSON ({e.msg})") from None
        return [(0, r) for r in data]
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((n, json.loads(line)))
        except json.JSONDecodeError as e:
            if n == 1 and stripped.startswith("{"):  # one pretty-printed JSON object
                try:
                    return [(0, json.loads(text))]
                except json.JSONDecodeError as e2:
                    raise DataError(f"{p}:{e2.lineno}: not valid JSON ({e2.msg})") from None
            raise DataError(f"{p}:{n}: not valid JSON ({e.msg}); expected one {what} object per line") from None
    return out


def _where(path, line: int, index: int) -> str:
    return f"{path}:{line}" if line else f"{path}: item {index}"


# ----------------------------------------------------------------------------------------------------- MT-Bench

# sftmix's own judge prompts. Placeholders are FastChat's, so a judge_prompts.jsonl drops in unchanged.
_RULE = ("Finish with your verdict as a whole number from 1 (useless) to 10 (excellent) inside double square brackets, "
         "exactly like this: \"Rating: [[6]]\".")
MTBENCH_PROMPTS = {
    "single": {
        "system": "You grade answers written by an AI assistant. Weigh how helpful, relevant, correct, deep and clear "
                  "the answer is for the user's question. Say briefly why, then rate it. " + _RULE,
        "template": "Question:\n{question}\n\n--- Answer to grade ---\n{answer}\n--- End of answer ---",
    },
    "single-ref": {
        "system": "You grade answers written by an AI assistant to questions that have a right answer. Compare the "
                  "answer with the reference answer, point out any mistake, and judge correctness first and "
                  "helpfulness second. " + _RULE,
        "template": "Question:\n{question}\n\n--- Reference answer ---\n{ref_answer_1}\n--- End of reference ---\n\n"
                    "--- Answer to grade ---\n{answer}\n--- End of answer ---",
    },
    "multi": {
        "system": "You grade an AI assistant in a two-turn conversation. Grade only its reply to the second user "
                  "message, reading the first exchange as context. Weigh how helpful, relevant, correct, deep and "
                  "clear that reply is. Say briefly why, then rate it. " + _RULE,
        "template": "=== Conversation ===\nUser: {question_1}\n\nAssistant: {answer_1}\n\nUser: {question_2}\n\n"
                    "Assistant: {answer_2}\n=== End of conversation ===",
    },
    "multi-ref": {
        "system": "You grade an AI assistant in a two-turn conversation about questions that have right answers. "
                  "Grade only its reply to the second user message. Compare it with the reference answers, point "
                  "out any mistake, and judge correctness first and helpfulness second. " + _RULE,
        "template": "=== Reference answers ===\nFirst question: {ref_answer_1}\nSecond question: {ref_answer_2}\n"
                    "=== End of references ===\n\n=== Conversation ===\nUser: {question_1}\n\nAssistant: {answer_1}"
                    "\n\nUser: {question_2}\n\nAssistant: {answer_2}\n=== End of conversation ===",
    },
}
# FastChat's prompt names for the same four roles.
FASTCHAT_NAMES = {"single-v1": "single", "single-math-v1": "single-ref", "single-v1-multi-turn": "multi",
                  "single-math-v1-multi-turn": "multi-ref"}
REFERENCE_CATEGORIES = ("math", "reasoning", "coding")
_FIELDS = {"single": ("question", "answer"), "single-ref": ("question", "answer", "ref_answer_1"),
           "multi": ("question_1", "answer_1", "question_2", "answer_2"),
           "multi-ref": ("question_1", "answer_1", "question_2", "answer_2", "ref_answer_1", "ref_answer_2")}
# Between the two turns' answers in a stored prediction; stripped from the answers themselves so it cannot be forged.
TURN_SEP = "\n\n<<<sftmix: turn 2>>>\n\n"


def load_judge_prompts(path: str | Path) -> dict[str, dict]:
    """FastChat's judge_prompts.jsonl -> {single, single-ref, multi, multi-ref: {system, template}}."""
    found = {}
    for i, (line, r) in enumerate(_read_records(path, "judge prompt")):
        where = _where(path, line, i)
        if not isinstance(r, dict) or "name" not in r or "prompt_template" not in r:
            raise DataError(f"{where}: expected an object with name, system_prompt and prompt_template")
        role = FASTCHAT_NAMES.get(r["name"])
        if role is None:
            continue  # pairwise prompts and others are not used by single-answer grading
        prompt = {"system": str(r.get("system_prompt") or ""), "template": str(r["prompt_template"])}
        _check_template(prompt["template"], role, where)
        found[role] = prompt
    missing = [n for n, role in FASTCHAT_NAMES.items() if role not in found]
    if missing:
        raise DataError(f"{path}: no judge prompt named {', '.join(missing)} (FastChat's single-answer prompts)")
    return found


def _check_template(template: str, role: str, where: str) -> None:
    try:
        template.format(**{f: "x" for f in _FIELDS[role]})
    except (KeyError, IndexError, ValueError) as e:
        raise DataError(f"{where}: prompt_template has a placeholder {e} that {role} prompts do not fill; "
                        f"use {', '.join('{' + f + '}' for f in _FIELDS[role])}") from None


def load_mtbench(path: str | Path, references: str | Path | None = None, limit: int | None = None,
                 categories: list[str] | None = None) -> list[Example]:
    """FastChat's question.jsonl (question_id, category, turns, reference?) as items; reference answers may also
    come from a FastChat answer file (question_id, choices[0].turns), e.g. reference_answer/gpt-4.jsonl."""
    refs = {}
    if references:
        for i, (line, r) in enumerate(_read_records(references, "reference answer")):
            try:
                refs[r["question_id"]] = [str(t) for t in r["choices"][0]["turns"]]
            except (KeyError, IndexError, TypeError):
                raise DataError(f"{_where(references, line, i)}: expected question_id and choices[0].turns") from None
    items = []
    for i, (line, r) in enumerate(_read_records(path, "MT-Bench question")):
        where = _where(path, line, i)
        if not isinstance(r, dict):
            raise DataError(f"{where}: expected an object with question_id, category and turns")
        for f in ("question_id", "category", "turns"):
            if f not in r:
                raise DataError(f"{where}: field {f!r} is missing (expected question_id, category, turns)")
        turns = r["turns"]
        if not isinstance(turns, list) or not 1 <= len(turns) <= 2 or not all(isinstance(t, str) and t.strip() for t in turns):
            raise DataError(f"{where}: turns must be a list of one or two non-empty strings")
        ref = r.get("reference") or refs.get(r["question_id"])
        if ref is not None and (not isinstance(ref, list) or not all(isinstance(t, str) for t in ref)):
            raise DataError(f"{where}: reference must be a list of strings, one per turn")
        if categories and r["category"] not in categories:
            continue
        items.append(Example([{"role": "user", "content": turns[0]}], {
            "id": str(r["question_id"]), "source": "mtbench", "ability": "general", "category": str(r["category"]),
            "turns": turns, "reference": ref, "answer": "\n\n".join(ref or []),
        }))
        if limit and len(items) >= limit:
            break
    if not items:
        raise DataError(f"{path}: no MT-Bench questions" + (f" in categories {categories}" if categories else ""))
    return items


def join_turns(answers: list[str]) -> str:
    return TURN_SEP.join(a.replace(TURN_SEP.strip(), "") for a in answers)


def split_turns(prediction: str) -> list[str]:
    return prediction.split(TURN_SEP)


def mtbench_respond(generate_fn, items: list[Example], settings: GenSettings) -> list[list[str]]:
    """Two rounds of generation: every turn-1 answer is fed back before turn 2, as in FastChat's gen_model_answer.
    `generate_fn(conversations, settings) -> list[list[str]]`. Returns, per item, its n two-turn predictions."""
    first = generate_fn([e.prompt_messages for e in items], settings)
    convs, owners = [], []
    for i, (e, answers) in enumerate(zip(items, first)):
        if len(e.meta["turns"]) < 2:
            continue
        for j, a1 in enumerate(answers):
            convs.append(e.prompt_messages + [{"role": "assistant", "content": a1},
                                              {"role": "user", "content": e.meta["turns"][1]}])
            owners.append((i, j))
    second = generate_fn(convs, replace(settings, n=1)) if convs else []
    out = [[join_turns([a]) for a in answers] for answers in first]
    for (i, j), (a2, *_) in zip(owners, second):
        out[i][j] = join_turns([first[i][j], a2])
    return out


def mtbench_prompts(item: Example, prediction: str, prompts: dict[str, dict]) -> list[list[dict]]:
    """The judge's messages for each turn of one prediction."""
    turns = item.meta["turns"]
    answers = split_turns(prediction) + [""] * len(turns)
    ref = item.meta.get("reference")
    use_ref = bool(ref) and item.meta["category"] in REFERENCE_CATEGORIES
    out = []
    role = "single-ref" if use_ref else "single"
    fill = {"question": turns[0], "answer": answers[0], "ref_answer_1": ref[0] if use_ref else ""}
    out.append(_messages(prompts[role], fill))
    if len(turns) > 1:
        role = "multi-ref" if use_ref else "multi"
        fill = {"question_1": turns[0], "answer_1": answers[0], "question_2": turns[1], "answer_2": answers[1],
                "ref_answer_1": ref[0] if use_ref else "", "ref_answer_2": (ref[1] if len(ref) > 1 else "") if use_ref else ""}
        out.append(_messages(prompts[role], fill))
    return out


def _messages(prompt: dict, fill: dict) -> list[dict]:
    msgs = [{"role": "system", "content": prompt["system"]}] if prompt["system"] else []
    return msgs + [{"role": "user", "content": prompt["template"].format(**fill)}]


def score_mtbench(items: list[Example], completions: list[list[str]], judge: Judge, prompts: dict) -> list[dict]:
    """Per item: the mean of all parsed 1-10 ratings over its turns and predictions, /10 as the score."""
    plan = []  # (item index, turn index, messages)
    for i, (e, preds) in enumerate(zip(items, completions)):
        for pred in preds:
            for t, msgs in enumerate(mtbench_prompts(e, pred, prompts)):
                plan.append((i, t, msgs))
    verdicts = judge.run([m for _, _, m in plan], parse_rating, desc="judge mtbench")
    per: list[dict[int, Verdict]] = [{} for _ in items]
    for (i, t, _), v in zip(plan, verdicts):
        acc = per[i].setdefault(t, Verdict())
        acc.values += v.values
        acc.replies += v.replies
        acc.unparseable += v.unparseable
        acc.errors += v.errors
    rows = []
    for e, turns in zip(items, per):
        turn_means = {t: v.mean for t, v in sorted(turns.items())}
        used = [m for m in turn_means.values() if m is not None]
        rating = sum(used) / len(used) if used else None
        rows.append(_row(e.meta["category"], rating / 10 if rating is not None else None, list(turns.values()), judge,
                         rating=rating, **{f"turn_{t + 1}": m for t, m in turn_means.items()},
                         reference=bool(e.meta.get("reference")) or e.meta["category"] not in REFERENCE_CATEGORIES))
    return rows


def _row(category: str, score: float | None, verdicts: list[Verdict], judge: Judge, **extra) -> dict:
    """One item's score dict. An item without any parsed judgement is marked `excluded`: its stored score is 0 only
    because the store needs a number; the task's summary leaves it out of the mean and counts it."""
    return {
        "score": 0.0 if score is None else score, "excluded": score is None, "category": category, **extra,
        "judged": sum(len(v.values) for v in verdicts), "unparseable": sum(v.unparseable for v in verdicts),
        "failed": sum(len(v.errors) for v in verdicts), "judge": judge.name,
        "judgements": [r[:400] for v in verdicts for r in v.replies], "errors": [x for v in verdicts for x in v.errors][:3],
    }


def judged_summary(rows: list[dict], metric: str = "score") -> dict[str, float]:
    """The mean over items with a parsed judgement, per-category means, and the counts that say how much of the task
    was really judged. Rows are score dicts or stored rows (score + details)."""
    flat = [{**r, **(r.get("details") or {})} for r in rows]
    used = [r for r in flat if not r.get("excluded")]
    out = {metric: sum(r["score"] for r in used) / len(used) if used else 0.0, "items": float(len(flat)),
           "judged_items": float(len(used)), "unjudged_items": float(len(flat) - len(used)),
           "judgements": float(sum(r.get("judged", 0) for r in flat)),
           "unparseable": float(sum(r.get("unparseable", 0) for r in flat)),
           "failed": float(sum(r.get("failed", 0) for r in flat))}
    ratings = [r["rating"] for r in used if r.get("rating") is not None]
    if ratings:
        out["rating"] = sum(ratings) / len(ratings)  # MT-Bench's own 1-10 scale
    cats: dict[str, list[float]] = {}
    for r in used:
        cats.setdefault(str(r.get("category", "")), []).append(r["score"])
    for c, xs in sorted(cats.items()):
        out[f"category:{c}"] = sum(xs) / len(xs)
    judge = next((r["judge"] for r in flat if r.get("judge")), None)
    if judge:  # the report names the judge beside its scores
        out["judge"] = judge
    return out


# -------------------------------------------------------------------------------------------------------- BELLE


def load_belle(path: str | Path, prompts_path: str | Path, limit: int | None = None) -> tuple[list[Example], dict]:
    """BELLE's eval_set.json ({id?, question, std_answer, class} per line or as a list) and eval_prompt.json
    ({class, prompt} per line, or one {class: prompt} object). Classes match case-insensitively."""
    prompts: dict[str, str] = {}
    for i, (line, r) in enumerate(_read_records(prompts_path, "judge prompt")):
        where = _where(prompts_path, line, i)
        if isinstance(r, dict) and "class" in r and "prompt" in r:
            prompts[str(r["class"]).strip().lower()] = str(r["prompt"])
        elif isinstance(r, dict) and all(isinstance(v, str) for v in r.values()):
            prompts.update({str(k).strip().lower(): v for k, v in r.items()})
        else:
            raise DataError(f"{where}: expected {{\"class\": ..., \"prompt\": ...}} or an object of class -> prompt")
    items = []
    for i, (line, r) in enumerate(_read_records(path, "BELLE eval")):
        where = _where(path, line, i)
        if not isinstance(r, dict) or not all(k in r for k in ("question", "class")):
            raise DataError(f"{where}: expected an object with question, std_answer and class")
        cls = str(r["class"]).strip()
        if cls.lower() not in prompts:
            raise DataError(f"{where}: class {cls!r} has no judge prompt in {prompts_path} "
                            f"(it has {', '.join(sorted(prompts)) or 'none'})")
        items.append(Example([{"role": "user", "content": str(r["question"])}], {
            "id": str(r.get("id", i)), "source": "belle", "ability": "general", "category": cls,
            "std_answer": str(r.get("std_answer") or ""), "answer": str(r.get("std_answer") or ""),
        }))
        if limit and len(items) >= limit:
            break
    if not items:
        raise DataError(f"{path}: no BELLE eval items")
    return items, prompts


def belle_prompt(template: str, item: Example, answer: str) -> list[dict]:
    """A template with {question}/{std_answer}/{answer} is filled; BELLE's own prompts get the question, reference
    and answer appended in BELLE's layout ("问题: ... 标准回答: ... 模型回答: ...")."""
    q, ref = item.prompt_messages[-1]["content"], item.meta["std_answer"]
    if "{answer}" in template:
        text = template.replace("{question}", q).replace("{std_answer}", ref).replace("{answer}", answer)
    else:
        text = f"{template}问题:{q} 标准回答: {ref} 模型回答:{answer}"
    return [{"role": "user", "content": text}]


def score_belle(items: list[Example], completions: list[list[str]], judge: Judge, prompts: dict) -> list[dict]:
    plan = [(i, belle_prompt(prompts[e.meta["category"].lower()], e, c))
            for i, (e, preds) in enumerate(zip(items, completions)) for c in preds]
    verdicts = judge.run([m for _, m in plan], parse_unit_score, desc="judge belle")
    per: list[list[Verdict]] = [[] for _ in items]
    for (i, _), v in zip(plan, verdicts):
        per[i].append(v)
    rows = []
    for e, vs in zip(items, per):
        values = [x for v in vs for x in v.values]
        rows.append(_row(e.meta["category"], sum(values) / len(values) if values else None, vs, judge))
    return rows


# -------------------------------------------------------------------------------------------------------- tasks


JUDGE_KEY_FIELDS = ("model", "base_url", "n", "temperature", "top_p", "max_tokens", "seed")


@dataclass
class JudgedTask(Task):
    """A task scored by an LLM judge: its headline leaves out items no judgement could be parsed for."""

    judge: Judge | None = field(default=None, repr=False, compare=False)

    def summary(self, rows: list[dict]) -> dict[str, float]:
        return judged_summary(rows, self.metric)

    def key(self) -> dict:
        # Only what changes a judgement identifies the evaluation; concurrency, retries or the cache file do not.
        k = super().key()
        params = k["params"]
        params.pop("cache", None)
        if self.judge is not None:  # the validated config: defaults spelled out, so `n: 1` and no n key the same
            params["judge"] = {f: getattr(self.judge.cfg, f) for f in JUDGE_KEY_FIELDS}
            params["judge"]["base_url"] = params["judge"]["base_url"].rstrip("/")
        return k


@dataclass
class MTBenchTask(JudgedTask):
    def respond(self, generate_fn, items: list[Example]) -> list[list[str]]:
        """Two rounds of generation (see mtbench_respond); the study's runner calls this instead of generating once."""
        return mtbench_respond(generate_fn, items, self.gen)


def _judge_for(judge, cache) -> Judge:
    return judge if isinstance(judge, Judge) else Judge(judge_config(judge), cache=cache)


@task("mtbench")
def mtbench(limit: int | None = None, path: str | None = None, judge_prompts: str | None = None,
            references: str | None = None, categories: list[str] | None = None, judge=None, cache: str | None = None,
            max_new_tokens: int = 1024) -> Task:
    """MT-Bench from FastChat's question.jsonl: two turns answered in order, each graded 1-10 by an LLM judge
    (reference-guided for math, reasoning and coding); score = mean rating / 10."""
    if not path:
        raise SftmixError("task mtbench needs params.path: FastChat's mt_bench question.jsonl")
    items = load_mtbench(path, references, limit, categories)
    prompts = load_judge_prompts(judge_prompts) if judge_prompts else MTBENCH_PROMPTS
    j = _judge_for(judge, cache)
    return MTBenchTask("mtbench", "general", "judge_rating", items, lambda i, c: score_mtbench(i, c, j, prompts),
                       gen=GenSettings(max_new_tokens=max_new_tokens), domain="general",
                       params={"path": str(path), "judge_prompts": judge_prompts, "references": references,
                               "categories": categories}, judge=j)


@task("belle")
def belle(limit: int | None = None, path: str | None = None, prompts: str | None = None, judge=None,
          cache: str | None = None, max_new_tokens: int = 512) -> Task:
    """BELLE's eval set scored 0-1 per answer by an LLM judge with the per-category prompts of eval_prompt.json."""
    if not path or not prompts:
        raise SftmixError("task belle needs params.path (BELLE's eval_set.json) and params.prompts (eval_prompt.json)")
    items, templates = load_belle(path, prompts, limit)
    j = _judge_for(judge, cache)
    return JudgedTask("belle", "general", "judge_score", items, lambda i, c: score_belle(i, c, j, templates),
                      gen=GenSettings(max_new_tokens=max_new_tokens), domain="general",
                      params={"path": str(path), "prompts": str(prompts)}, judge=j)
