"""IFEval (Zhou et al., 2023, "Instruction-Following Evaluation for Large Language Models") from a user's copy of
Google's `input_data.jsonl`: one prompt per row with the ids and kwargs of the verifiable instructions it holds.

    evaluation:
      tasks:
        - {name: ifeval, params: {path: data/ifeval/input_data.jsonl}}

Scores: prompt-level strict accuracy is the headline metric; prompt-level loose and instruction-level strict and
loose come with it (`instructions/score.py`, shared with the built-in `general` task). The 25 instruction checkers
are in `instructions/checkers.py`. A file with an unknown instruction id or kwargs that do not fit it is refused
with the file and line named, before anything is generated.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data.example import Example, chat
from ..errors import DataError, SftmixError
from .instructions import checkers
from .instructions.score import first_completions, score_reply, summarize
from .settings import GenSettings
from .tasks import Task, prompts_of, task

# lm-evaluation-harness's IFEval budget: the longest instructions ask for 300-800 words.
MAX_NEW_TOKENS = 1280


@dataclass
class InstructionTask(Task):
    """A Task whose summary carries IFEval's four accuracies, not just the mean item score."""

    def summary(self, rows: list[dict]) -> dict[str, float]:
        return summarize(rows)


def _row_to_example(record: dict, where: str, row: int) -> Example:
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError(f"{where}: field 'prompt' must be a non-empty string")
    ids = record.get("instruction_id_list")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise DataError(f"{where}: field 'instruction_id_list' must be a non-empty list of instruction ids")
    kwargs = record.get("kwargs", [{} for _ in ids])
    if not isinstance(kwargs, list) or len(kwargs) != len(ids):
        raise DataError(f"{where}: field 'kwargs' must be a list with one object per instruction "
                        f"({len(ids)} instruction ids, got {kwargs!r:.80})")
    instructions = []
    for n, (iid, kw) in enumerate(zip(ids, kwargs)):
        try:
            instructions.append({"id": iid, "kwargs": checkers.clean_kwargs(iid, kw)})
        except ValueError as e:
            raise DataError(f"{where}: instruction {n}: {e}") from None
    key = record.get("key", row)  # Google's rows all carry a key; a hand-made file may not
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise DataError(f"{where}: field 'key' must be an integer or a string, got {key!r}")
    key = str(key)
    return chat(prompt, None, id=f"ifeval-{key}", key=key, task_id=key, instructions=instructions, source="ifeval",
                ability="general")


def load_ifeval(path: str, limit: int | None = None) -> list[Example]:
    """Items from a file in IFEval's layout (.jsonl as Google ships it; .json or .parquet rows work too)."""
    from ..data.formats import iter_records

    items: list[Example] = []
    seen: set[str] = set()
    for row, where, record in iter_records(path, limit=limit):
        e = _row_to_example(record, where, row)
        if e.meta["key"] in seen:
            raise DataError(f"{where}: key {e.meta['key']!r} repeats the key of an earlier row")
        seen.add(e.meta["key"])
        items.append(e)
    return items


def instruction_checks(instructions: list[dict]) -> list:
    return [(ins["id"], lambda text, ins=ins: checkers.check(ins["id"], ins["kwargs"], text)) for ins in instructions]


def _repeat_prefix(instructions: list[dict]) -> str:
    return next((i["kwargs"]["prompt_to_repeat"] for i in instructions if i["id"] == "combination:repeat_prompt"), "")


def score_ifeval(items: list[Example], completions: list) -> list[dict]:
    """Per item: strict and loose verdicts for each instruction, prompt-level strict as the score."""
    rows = []
    for e, reply in zip(items, first_completions(completions)):
        ins = e.meta["instructions"]
        rows.append(score_reply(instruction_checks(ins), reply, prompts_of(e), _repeat_prefix(ins)))
    return rows


@task("ifeval")
def ifeval(limit: int | None = None, path: str | None = None) -> InstructionTask:
    """IFEval's 25 verifiable instruction types from Google's input_data.jsonl (params.path); greedy, one reply per
    prompt; prompt- and instruction-level accuracy, strict and loose."""
    if not path:
        raise SftmixError("task ifeval needs params.path: Google's IFEval input_data.jsonl "
                          "(rows with key, prompt, instruction_id_list, kwargs)")
    items = load_ifeval(path, limit)
    return InstructionTask("ifeval", "general", "prompt_strict", items, score_ifeval,
                           GenSettings(max_new_tokens=MAX_NEW_TOKENS), params={"path": path})
