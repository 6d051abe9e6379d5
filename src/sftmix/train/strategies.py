"""SFT strategies. A strategy is a plain function from the study's sources (and an amount) to an ordered list of
stage specs; each stage is one fine-tuning pass on one mixture, started from the previous stage's weights.

Adding a strategy = writing one function and registering it: sequential, mixed sequential and DMT are a few lines
on top of `Part` and `StageSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Part:
    """`amount` of one source, in the study's amount unit (fraction of the source, or a row count)."""

    source: str
    amount: float


@dataclass(frozen=True)
class StageSpec:
    parts: tuple[Part, ...]
    name: str = ""
    # per-stage training overrides (e.g. a different number of epochs for a second stage)
    overrides: dict = field(default_factory=dict, hash=False, compare=False)


Strategy = Callable[..., list[StageSpec]]
STRATEGIES: dict[str, Strategy] = {}
# Strategies that train on each source on its own: the planner makes one run per source.
PER_SOURCE = {"single"}


def strategy(name: str):
    def register(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        return fn

    return register


@strategy("single")
def single(sources: list[str], amount: float) -> list[StageSpec]:
    """One source alone (the RQ1 scaling curve)."""
    if len(sources) != 1:
        raise ValueError(f"single takes exactly one source, got {sources}")
    return [StageSpec((Part(sources[0], amount),), name=sources[0])]


@strategy("multitask")
def multitask(sources: list[str], amount: float) -> list[StageSpec]:
    """One SFT on the union of all sources at the same amount (RQ2 conflict, RQ4 baseline)."""
    return [StageSpec(tuple(Part(s, amount) for s in sources), name="+".join(sources))]


def stage_specs(name: str, sources: list[str], amount: float, params: dict | None = None) -> list[StageSpec]:
    return STRATEGIES[name](sources, amount, **(params or {}))
