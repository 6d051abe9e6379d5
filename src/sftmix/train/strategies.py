"""SFT strategies. A strategy is a plain function from one cell of the data design (how much of each source) to an
ordered list of stage specs; each stage is one fine-tuning pass on one mixture, started from the previous stage's
weights. Stages that two runs share (the same parent, data and hyperparameters) are trained once by the planner.

    single            one source alone                                    (DMT RQ1)
    multitask         one SFT on the union                                (RQ2, RQ4 baseline)
    sequential        one stage per source, in `order`                    (RQ4: code -> math -> general)
    mixed_sequential  specialist sources mixed, then the general ones     (RQ4)
    dmt               specialists mixed; then general + fraction k of     (RQ4, DMT(k); k=0 is mixed_sequential)
                      the stage-1 data (a prefix of it, so k-runs nest)
    stages            any curriculum written in the study file

Adding a strategy = writing one function and registering it with `@strategy(name)`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

from ..data.mixture import Part  # noqa: F401  (re-exported: strategies are written in Parts)

@dataclass(frozen=True)
class StageSpec:
    parts: tuple[Part, ...]
    name: str = ""
    # per-stage training overrides (e.g. fewer epochs for a second stage)
    overrides: dict = field(default_factory=dict, hash=False, compare=False)


Cell = dict  # source name -> Part, in the study's source order
Strategy = Callable[..., list[StageSpec]]
STRATEGIES: dict[str, Strategy] = {}
# Strategies that train on each source on its own: the planner makes one run per source.
PER_SOURCE = {"single"}
# Parameters that may be given as a list in the study file: each value is one run (e.g. DMT's k).
SWEEPS: dict[str, tuple[str, ...]] = {}


class StrategyError(ValueError):
    """A strategy cannot be built from these sources/parameters; the planner turns it into a study error."""


def strategy(name: str, sweep: tuple[str, ...] = ()):
    def register(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        SWEEPS[name] = sweep
        return fn

    return register


def _general(cell: Cell, general) -> tuple[list[str], list[str]]:
    """Split the cell's sources into (specialists, general) by the `general` parameter."""
    names = list(cell)
    general = [general] if isinstance(general, str) else list(general or [])
    if not general:
        general = [n for n in names if n == "general"]
    unknown = [g for g in general if g not in cell]
    if unknown or not general:
        raise StrategyError(
            f"general source(s) {unknown or general} not among this strategy's sources {names}; "
            "set params.general to the name(s) of the general-ability source(s)"
        )
    special = [n for n in names if n not in general]
    if not special:
        raise StrategyError(f"no specialist source left besides general {general}")
    return special, general


@strategy("single")
def single(cell: Cell) -> list[StageSpec]:
    """One source alone (the RQ1 scaling curve)."""
    if len(cell) != 1:
        raise StrategyError(f"single takes exactly one source, got {list(cell)}")
    (name,) = cell
    return [StageSpec((cell[name],), name=name)]


@strategy("multitask")
def multitask(cell: Cell) -> list[StageSpec]:
    """One SFT on the union of all sources (RQ2 conflict, RQ4 baseline)."""
    return [StageSpec(tuple(cell.values()), name="+".join(cell))]


@strategy("sequential")
def sequential(cell: Cell, order: list[str] | None = None) -> list[StageSpec]:
    """One stage per source in `order` (default: the study's source order). DMT's is code -> math -> general."""
    order = list(order or cell)
    missing = [s for s in order if s not in cell]
    if missing or sorted(order) != sorted(cell):
        raise StrategyError(f"order {order} must name each of the sources {list(cell)} exactly once")
    return [StageSpec((cell[s],), name=s) for s in order]


@strategy("mixed_sequential")
def mixed_sequential(cell: Cell, general: str | list[str] | None = None) -> list[StageSpec]:
    """Specialist sources mixed in stage 1, the general source(s) in stage 2."""
    special, gen = _general(cell, general)
    return [StageSpec(tuple(cell[s] for s in special), name="+".join(special)),
            StageSpec(tuple(cell[g] for g in gen), name="+".join(gen))]


@strategy("dmt", sweep=("k",))
def dmt(cell: Cell, k: float = 1 / 256, general: str | list[str] | None = None) -> list[StageSpec]:
    """Dual-stage Mixed fine-Tuning: specialists first; then general plus the fraction k of the stage-1 data.

    The k part is a prefix of the stage-1 rows of each specialist (nested sampling), so the stage 2 data of a
    smaller k is a subset of a larger k's, and k = 0 is mixed_sequential exactly (same stage ids)."""
    if not isinstance(k, (int, float)) or isinstance(k, bool) or not 0 <= k <= 1:
        raise StrategyError(f"k must be a number in [0, 1], got {k!r}")
    special, gen = _general(cell, general)
    stage1 = StageSpec(tuple(cell[s] for s in special), name="+".join(special))
    replay = tuple(cell[s].scaled(k) for s in special) if k > 0 else ()
    name = "+".join(gen) + (f"+{k:g} replay" if k > 0 else "")
    return [stage1, StageSpec(tuple(cell[g] for g in gen) + replay, name=name)]


@strategy("stages")
def stages(cell: Cell, stages: list[dict] | None = None) -> list[StageSpec]:
    """A curriculum from the study file: each stage lists `parts` (source names, taking the cell's amount, or a
    mapping source -> fraction of the cell's amount) and optional `training` overrides."""
    if not stages:
        raise StrategyError("give `stages`: a list of {parts: [...], training: {...}}")
    out = []
    for i, st in enumerate(stages):
        parts = st.get("parts") if isinstance(st, dict) else None
        if not parts:
            raise StrategyError(f"stages[{i}]: needs parts (source names, or a mapping source -> fraction)")
        scale = parts if isinstance(parts, dict) else {p: 1.0 for p in parts}
        for src, f in scale.items():
            if src not in cell:
                raise StrategyError(f"stages[{i}].parts: unknown source {src!r}; expected one of {list(cell)}")
            if not isinstance(f, (int, float)) or isinstance(f, bool) or not 0 < f <= 1:
                raise StrategyError(f"stages[{i}].parts.{src}: fraction of the cell's amount must be in (0, 1], got {f!r}")
        out.append(StageSpec(tuple(cell[s].scaled(f) for s, f in scale.items()),
                             name=st.get("name") or "+".join(scale), overrides=dict(st.get("training") or {})))
    return out


def check_params(name: str, params: dict) -> None:
    """Reject parameters the strategy does not take, before any work starts."""
    fn = STRATEGIES[name]
    accepted = [p for p in inspect.signature(fn).parameters if p != "cell"]
    for key in params:
        if key not in accepted:
            raise StrategyError(
                f"strategy {name!r} takes no parameter {key!r}; "
                + (f"it takes {', '.join(accepted)}" if accepted else "it takes no parameters")
            )


def expand_sweeps(name: str, params: dict) -> list[dict]:
    """{k: [0, 1/256]} -> [{k: 0}, {k: 1/256}] for the parameters the strategy declares as sweepable."""
    out = [dict(params)]
    for key in SWEEPS.get(name, ()):
        if isinstance(params.get(key), list):
            out = [{**p, key: v} for p in out for v in params[key]]
    return out


def stage_specs(name: str, cell: Cell, params: dict | None = None) -> list[StageSpec]:
    return STRATEGIES[name](cell, **(params or {}))
