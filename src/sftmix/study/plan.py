"""Expand a study into runs and their stages.

study = models x amounts x strategies x seeds; each run is a chain of stages. A stage's id hashes its parent, its
mixture's content and its hyperparameters, so two runs that share a prefix (e.g. sequential curricula, DMT with
different k) share those stages and they are trained once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from ..config import StudyFile, resolve_path
from ..data.example import Example
from ..data.mixture import Mixture, amount_label, build_mixture
from ..train.strategies import PER_SOURCE, stage_specs


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Stage:
    stage_id: str
    parent_id: str | None
    model: object  # ModelConfig
    mixture: Mixture
    training: object  # TrainingConfig
    seed: int
    name: str

    @property
    def hparams(self) -> dict:
        return {"training": self.training.model_dump(), "seed": self.seed, "model": self.model.model_dump()}


@dataclass
class Run:
    run_id: str
    label: str
    model: object
    strategy: str
    sources: list[str]
    amount: float
    seed: int
    stages: list[Stage] = field(default_factory=list)

    @property
    def checkpoint(self) -> Stage | None:
        return self.stages[-1] if self.stages else None


@dataclass
class Plan:
    runs: list[Run]
    stages: dict[str, Stage]  # unique, in training order (parents first)
    sources: dict[str, list[Example]]

    @property
    def stage_uses(self) -> int:
        return sum(len(r.stages) for r in self.runs)

    def waves(self) -> list[list[Stage]]:
        """Stages grouped so that each group depends only on earlier groups: what a parallel executor runs at once."""
        depth: dict[str, int] = {}
        for sid, st in self.stages.items():
            depth[sid] = depth[st.parent_id] + 1 if st.parent_id else 0
        out: list[list[Stage]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for sid, d in depth.items():
            out[d].append(self.stages[sid])
        return out


def load_sources(sf: StudyFile) -> dict[str, list[Example]]:
    from ..data.builtin import generate
    from ..data.formats import load_file, load_hf

    out = {}
    for name, src in sf.study.sources.items():
        ability = src.ability or (src.builtin or name)
        if src.builtin:
            rows = generate(src.builtin, "train", src.size, seed=sf.study.data_seed, difficulty=src.difficulty)
            for e in rows:
                e.meta["source"], e.meta["ability"] = name, ability
        elif src.path:
            rows = load_file(resolve_path(sf, src.path), fmt=src.format, source=name, ability=ability, limit=src.limit)
        else:
            rows = load_hf(src.hf, split=src.split, name=src.hf_name, fmt=src.format, source=name, ability=ability)
        if not rows:
            raise sf.error(("sources", name), "the source has no rows")
        out[name] = rows
    return out


def make_plan(sf: StudyFile, sources: dict[str, list[Example]] | None = None) -> Plan:
    s = sf.study
    sources = sources if sources is not None else load_sources(sf)
    runs: list[Run] = []
    stages: dict[str, Stage] = {}
    for model in s.models:
        if s.evaluation.base:
            runs.append(Run(_hash(["base", model.model_dump()])[:12], f"base {model.name}", model, "base", [], 0.0, 0))
        root = _hash(["base", model.model_dump()])
        for strat in s.strategies:
            names = strat.sources or list(s.sources)
            groups = [[n] for n in names] if strat.name in PER_SOURCE else [names]
            for group in groups:
                for amount in s.amounts:
                    for seed in s.seeds:
                        parent, chain = None, []
                        for spec in stage_specs(strat.name, group, amount, strat.params):
                            mix = build_mixture(spec.parts, sources, s.amount_unit, s.data_seed)
                            training = s.training.model_copy(update=spec.overrides)
                            sid = _hash([parent or root, mix.hash, training.model_dump(), seed])
                            st = stages.get(sid) or Stage(sid, parent, model, mix, training, seed, spec.name)
                            stages[sid] = st
                            chain.append(st)
                            parent = sid
                        label = f"{strat.name} {'+'.join(group)} {amount_label(amount, s.amount_unit)}"
                        if len(s.seeds) > 1:
                            label += f" seed {seed}"
                        if len(s.models) > 1:
                            label = f"{model.name}: {label}"
                        rid = _hash([model.model_dump(), strat.name, group, amount, seed, chain[-1].stage_id])[:12]
                        runs.append(Run(rid, label, model, strat.name, group, amount, seed, chain))
    return Plan(runs, stages, sources)
