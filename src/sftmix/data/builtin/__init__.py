"""Built-in synthetic data sources that need no download: `math`, `code` and `general` (verifiable instructions).

Each source module exposes `MAX_DIFFICULTY` and `draw(rng, difficulty) -> (split_key, Example) | None`, a
candidate built from a seeded random stream (None when the candidate had to be thrown away). This module turns
candidates into a split:

* a candidate belongs to "eval" or "train" by a hash of its split key (never of the seed), so the two splits can
  never share a prompt, whatever n or seed is asked for; the key is chosen by each source to be coarser than the
  prompt where that matters (e.g. code keys on family + constants, so eval functions use unseen constants);
* each split reads its own stream and keeps candidates of its bucket in order, skipping repeated prompts, so that
  `generate(n=10)` is exactly the first ten rows of `generate(n=50)`.
"""

from __future__ import annotations

import hashlib
import random

from sftmix.data.builtin import code as _code
from sftmix.data.builtin import general as _general
from sftmix.data.builtin import math as _math
from sftmix.data.example import Example
from sftmix.errors import DataError

BUILTIN_SOURCES = ("math", "code", "general")
SPLITS = ("train", "eval")
EVAL_FRACTION = 0.15
# Candidates rejected in a row before we decide the space of distinct prompts is used up. Far above what a healthy
# source needs (eval rejects ~85% of candidates), low enough to fail in well under a second.
MAX_MISSES = 20_000

_MODULES = {"math": _math, "code": _code, "general": _general}


class BuiltinSourceError(DataError, ValueError):
    """Bad arguments for a built-in source. A ValueError for callers, a DataError for the CLI's clean message."""


def max_difficulty(name: str) -> int:
    _check_name(name)
    return _MODULES[name].MAX_DIFFICULTY


def split_of(key: str) -> str:
    """The split a split key belongs to: a fixed ~15% of the key space is eval."""
    h = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    return "eval" if h < EVAL_FRACTION * 2**64 else "train"


def _check_name(name: str) -> None:
    if name not in _MODULES:
        raise BuiltinSourceError(f"unknown built-in source {name!r}; choose one of: {', '.join(BUILTIN_SOURCES)}")


def _check_args(name: str, split: str, n: int, seed: int, difficulty: int) -> None:
    _check_name(name)
    if split not in SPLITS:
        raise BuiltinSourceError(f"unknown split {split!r} for built-in source {name!r}; choose one of: train, eval")
    top = _MODULES[name].MAX_DIFFICULTY
    if isinstance(difficulty, bool) or not isinstance(difficulty, int) or not 1 <= difficulty <= top:
        allowed = ", ".join(str(d) for d in range(1, top + 1))
        raise BuiltinSourceError(
            f"difficulty for built-in source {name!r} must be one of {allowed}; got {difficulty!r}"
        )
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise BuiltinSourceError(f"n (number of examples) must be a non-negative integer; got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise BuiltinSourceError(f"seed must be an integer; got {seed!r}")


def generate(name: str, split: str, n: int, seed: int = 0, difficulty: int = 1) -> list[Example]:
    """`n` examples of built-in source `name` ("math", "code", "general") for `split` ("train" or "eval")."""
    _check_args(name, split, n, seed, difficulty)
    module = _MODULES[name]
    # A string seed is hashed with SHA-512 by `random`, so streams are stable across processes and Python versions.
    rng = random.Random(f"sftmix-builtin|{name}|{split}|{seed}|{difficulty}")
    seen: set[str] = set()
    out: list[Example] = []
    misses = 0
    while len(out) < n:
        candidate = module.draw(rng, difficulty)
        if candidate is not None:
            key, ex = candidate
            prompt = ex.prompt_messages[-1]["content"]
            if split_of(f"{name}|{key}") == split and prompt not in seen:
                seen.add(prompt)
                row_id = f"{name}-{split}-{difficulty}-{seed}-{len(out)}"
                ex.meta.update(id=row_id, source=name, ability=name, split=split, difficulty=difficulty)
                if name == "code":
                    # HumanEval tooling expects a task_id; only known once the row has its index.
                    ex.meta["task_id"] = f"sftmix/{row_id}"
                out.append(ex)
                misses = 0
                continue
        misses += 1
        if misses > MAX_MISSES:
            raise BuiltinSourceError(
                f"built-in source {name!r} ran out of distinct {split} examples at difficulty {difficulty} after "
                f"{len(out)} rows (asked for {n}); ask for fewer rows or a higher difficulty"
            )
    return out


__all__ = ["BUILTIN_SOURCES", "SPLITS", "BuiltinSourceError", "generate", "max_difficulty", "split_of"]
