"""Expand a study into runs, their stages and the evaluations to do.

study = models x data design cells x strategies (x swept params) x seeds; each run is a chain of stages. A stage's id
hashes what it starts from (its parent, or the base model's fingerprint), its mixture's content, its hyperparameters,
its seed and the trainer version, so runs that share a prefix (sequential curricula, DMT with different k) share
those stages and they are trained once. Evaluations are of checkpoints (a stage, or a base model), so a checkpoint
that several runs reach is evaluated once too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from ..config import StudyFile
from ..data import design
from ..data.example import Example
from ..data.mixture import Mixture, amount_label, build_mixture
from ..errors import DataError, StudyError
from ..evaluate.tasks import Task, make_task
from ..train import TRAINER_VERSION
from ..train.strategies import PER_SOURCE, StrategyError, expand_sweeps, stage_specs


# How a stage is run, not what it produces: the same stage on 1 or 8 GPUs, with or without checkpointing, is reused.
NOT_IN_STAGE_ID = {"accelerate_config", "gradient_checkpointing"}


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
    index: int = 0  # position in its chain (0 = first stage)

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
    amount: float  # the cell's value along its design axis (the x of a curve)
    seed: int
    stages: list[Stage] = field(default_factory=list)
    cell: dict = field(default_factory=dict)  # source -> {amount, unit, rows}
    axis: str = "amount"
    params: dict = field(default_factory=dict)
    base_id: str = ""  # checkpoint id of the model before SFT

    @property
    def checkpoint(self) -> Stage | None:
        return self.stages[-1] if self.stages else None

    @property
    def checkpoint_id(self) -> str:
        return self.stages[-1].stage_id if self.stages else self.base_id


@dataclass
class Plan:
    runs: list[Run]
    stages: dict[str, Stage]  # unique, in training order (parents first)
    sources: dict[str, list[Example]]
    tasks: list[Task] = field(default_factory=list)
    prep: dict = field(default_factory=dict)  # source -> what loading, filters, dedup, decontamination did
    after_each_stage: bool = False
    backend: str = "engine"  # generation backend; part of every evaluation's key

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

    def checkpoints(self) -> dict[str, Run]:
        """Checkpoint id -> a run that reaches it (for loading); every run's last stage, and with after_each_stage
        its intermediate stages too."""
        out: dict[str, Run] = {}
        for r in self.runs:
            out.setdefault(r.checkpoint_id, r)
            if self.after_each_stage:
                for st in r.stages[:-1]:
                    out.setdefault(st.stage_id, r)
        return out


# ------------------------------------------------------------------------------------------------------ sources


def build_tasks(sf: StudyFile) -> list[Task]:
    s = sf.study
    tasks = []
    for i, t in enumerate(s.evaluation.tasks):
        params = dict(t.params)
        max_new = t.max_new_tokens
        if "max_new_tokens" in params:  # written inside params: the same setting as the task's own max_new_tokens
            inner = params.pop("max_new_tokens")
            where = ("evaluation", "tasks", i, "params", "max_new_tokens")
            if max_new is not None:
                raise sf.error(where, "max_new_tokens is given twice, beside params and inside; keep one")
            if isinstance(inner, bool) or not isinstance(inner, int) or inner < 1:
                raise sf.error(where, f"expected a positive integer, got {inner!r}")
            max_new = inner
        # A built-in task evaluates at the difficulty its built-in source was trained at, unless told otherwise.
        for src in s.sources.values():
            if src.builtin == t.name:
                params.setdefault("difficulty", src.difficulty)
        if t.name in ("code", "humaneval", "mbpp"):
            params.setdefault("timeout", s.evaluation.code_timeout)
        if getattr(s.evaluation, "judge", None) is not None and t.name in ("mtbench", "belle"):
            params.setdefault("judge", s.evaluation.judge.model_dump())
        tasks.append(make_task(t.name, limit=t.limit or s.evaluation.limit, max_new_tokens=max_new, **params))
    return tasks


def load_sources(sf: StudyFile, tasks: list[Task] | None = None) -> tuple[dict[str, list[Example]], dict]:
    """Each source's rows after loading, labels and filters; then dedup and decontamination over all of them.
    Returns the rows and, per source, what each step did (for the manifests)."""
    from ..data.builtin import generate
    from ..data.formats import load_file, load_hf

    out: dict[str, list[Example]] = {}
    prep: dict[str, dict] = {}
    for name, src in sf.study.sources.items():
        ability = src.ability or (src.builtin or name)
        info: dict = {}
        if src.builtin:
            rows = generate(src.builtin, "train", src.size, seed=sf.study.data_seed, difficulty=src.difficulty)
            for e in rows:
                e.meta["source"], e.meta["ability"] = name, ability
        elif src.path:
            rows = _load(load_file, info, src.path, fmt=src.format, source=name, ability=ability, limit=src.limit,
                         on_error=src.on_error)
        else:
            rows = _load(load_hf, info, src.hf, split=src.split, name=src.hf_name, fmt=src.format, source=name,
                         ability=ability, on_error=src.on_error)
        info["rows_loaded"] = len(rows)
        if src.labels or src.filters:
            from ..data import filters

            if src.labels:
                info["labelled"] = filters.apply_labels(rows, src.labels)
            if src.filters:
                rows, removed = filters.apply_filters(rows, src.filters)
                info["filtered"] = removed
        prep[name] = info
        out[name] = rows
    out = _dedup_and_decontaminate(sf, out, prep, tasks or [])
    for name, rows in out.items():
        prep[name]["rows"] = len(rows)
        if not rows:
            raise sf.error(("sources", name), "the source has no rows left after loading, filters, dedup and "
                                              "decontamination")
    return out, prep


def _load(fn, info: dict, *args, **kw) -> list[Example]:
    """A loader with a report: skipped bad rows (on_error: skip) are counted in the manifest and said once."""
    from ..data.formats import LoadReport

    report = LoadReport()
    rows = fn(*args, report=report, **kw)
    info["load"] = report.to_dict()
    if report.skipped:
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True, highlight=False).print(escape(report.summary(kw.get("source", ""))))
    return rows


def _dedup_and_decontaminate(sf: StudyFile, sources: dict, prep: dict, tasks: list[Task]) -> dict:
    from ..data import dedup

    dcfg, ccfg = sf.study.data.dedup, sf.study.data.decontaminate
    # The study's source order decides which copy of a duplicate is kept (the first).
    groups, removed = dedup.dedup(list(sources.items()), dcfg)
    for rec in removed:
        prep[rec["source"]].setdefault("duplicates", {}).setdefault(rec["reason"], 0)
        prep[rec["source"]]["duplicates"][rec["reason"]] += 1
    if ccfg.enabled and tasks:
        from ..data.builtin import BUILTIN_SOURCES

        evals = {t.name: [(e.id, " ".join(m["content"] for m in e.messages)) for e in t.items] for t in tasks}
        # A built-in source and the built-in task of the same name are disjoint by construction (split by a hash of
        # each row's key), and their shared instruction templates would be flagged by any n-gram test; they are
        # still checked against every other task.
        builtin = {n: src.builtin for n, src in sf.study.sources.items() if src.builtin}
        contaminated = []
        kept = []
        for name, rows in groups:
            own = {k: v for k, v in evals.items() if not (name in builtin and k == builtin[name] in BUILTIN_SOURCES)}
            if name in builtin:
                prep[name]["decontamination"] = f"built-in: disjoint from the built-in {builtin[name]} task by construction"
            part, recs = dedup.decontaminate([(name, rows)], own, ccfg) if own else ([(name, rows)], [])
            kept += part
            contaminated += recs
        groups = kept
        for rec in contaminated:
            info = prep[rec["source"]]
            info["contaminated"] = info.get("contaminated", 0) + 1
            info.setdefault("contaminated_rows", [])
            if len(info["contaminated_rows"]) < 50:  # the manifest lists what was removed and why; the count is exact
                info["contaminated_rows"].append(rec)
    return dict(groups)


# -------------------------------------------------------------------------------------------------------- cells


def cells(sf: StudyFile, sources: dict[str, list[Example]]) -> list[design.Cell]:
    s = sf.study
    names = list(s.sources)
    sizes = {n: len(rows) for n, rows in sources.items()}
    if isinstance(s.amounts, list):
        return design.grid(names, s.amounts, s.amount_unit)
    if isinstance(s.amounts, dict):
        return design.per_source(names, s.amounts, s.amount_unit, s.combine)
    if s.mix is not None:
        return design.shares(names, sizes, s.mix.total, s.mix.shares, s.mix.rest, s.mix.unit)
    return design.pool(s.pool.sources or names, sizes, s.pool.totals, s.pool.unit)


def _token_counter(model, cache: dict):
    from ..train.tokenize import render

    key = (model.name, model.chat_template)
    if key not in cache:
        from ..models import load_tokenizer

        tok = load_tokenizer(model.name, model.chat_template)
        memo: dict[str, int] = {}

        def count(e: Example) -> int:
            h = e.content_hash()
            if h not in memo:
                memo[h] = len(tok(render(tok, e.messages), add_special_tokens=False)["input_ids"])
            return memo[h]

        cache[key] = count
    return cache[key]


def _strategy_label(name: str, params: dict) -> str:
    if name == "dmt":
        return f"dmt k={amount_label(float(params.get('k', 1 / 256)))}"
    return name


def _ambiguous(strategies, i: int) -> bool:
    """A run's label names its sources when another unlabelled entry of the same strategy uses other sources."""
    st = strategies[i]
    if not st.sources or st.label:
        return False
    return any(o.name == st.name and not o.label and sorted(o.sources or []) != sorted(st.sources)
               for j, o in enumerate(strategies) if j != i)


def make_plan(sf: StudyFile, sources: dict[str, list[Example]] | None = None, with_tasks: bool = True) -> Plan:
    from ..models import fingerprint

    s = sf.study
    tasks = build_tasks(sf) if with_tasks else []
    prep: dict = {}
    if sources is None:
        sources, prep = load_sources(sf, tasks)
    grid = cells(sf, sources)
    upsample = {n for n, src in s.sources.items() if src.upsample}
    counters: dict = {}
    runs: list[Run] = []
    seen_runs: set[str] = set()
    stages: dict[str, Stage] = {}
    for mi, model in enumerate(s.models):
        base = _hash(["base", fingerprint(model.name, model.revision, model.dtype),
                      model.model_dump(exclude={"chat_template"})])
        base_id = f"base-{base[:12]}"
        if s.evaluation.base:
            runs.append(Run(base_id, f"base {model.name}" if len(s.models) == 1 else f"{model.name}: base",
                            model, "base", [], 0.0, 0, base_id=base_id))
        count = _token_counter(model, counters)  # token budgets, and every manifest's token counts under this model
        for si, strat in enumerate(s.strategies):
            names = strat.sources or list(s.sources)
            params_all = dict(strat.params) | ({"stages": strat.stages} if strat.stages is not None else {})
            name_sources = _ambiguous(s.strategies, si)
            for params in expand_sweeps(strat.name, params_all):
                groups = [[n] for n in names] if strat.name in PER_SOURCE else [names]
                for group in groups:
                    for cell in grid:
                        c = cell.restrict(group)
                        if not c.parts or (strat.name in PER_SOURCE and len(c.parts) != len(group)):
                            continue
                        if strat.amounts is not None and c.x not in strat.amounts:
                            continue
                        for seed in s.seeds:
                            try:
                                specs = stage_specs(strat.name, c.parts, params)
                            except StrategyError as e:
                                raise sf.error(("strategies", si), str(e)) from None
                            parent, chain = None, []
                            for idx, spec in enumerate(specs):
                                try:
                                    mix = build_mixture(spec.parts, sources, s.data_seed, upsample, count, prep, model.name)
                                except DataError as e:
                                    raise StudyError(f"{sf.path or 'study'}: {c.label}, stage {idx + 1} of "
                                                     f"{strat.name}: {e}") from None
                                training = s.training.model_copy(update=spec.overrides)
                                sid = _hash([parent or base, mix.hash, training.model_dump(exclude=NOT_IN_STAGE_ID), seed,
                                             TRAINER_VERSION])
                                st = stages.get(sid) or Stage(sid, parent, model, mix, training, seed, spec.name, idx)
                                stages[sid] = st
                                chain.append(st)
                                parent = sid
                            label = f"{strat.label or _strategy_label(strat.name, params)}"
                            if strat.name in PER_SOURCE:
                                (part,) = c.parts.values()
                                label += f" {part.source} {amount_label(part.amount, part.unit)}"
                            else:
                                label += (f" {'+'.join(group)}" if name_sources else "") + f" {c.label}"
                            if len(s.seeds) > 1:
                                label += f" seed {seed}"
                            if len(s.models) > 1:
                                label = f"{model.name}: {label}"
                            rid = _hash([base, strat.name, params, group, chain[-1].stage_id, seed, label])[:12]
                            if rid in seen_runs:
                                continue
                            seen_runs.add(rid)
                            cell_info = {n: {"amount": p.amount, "unit": p.unit} for n, p in c.parts.items()}
                            runs.append(Run(rid, label, model, strat.name, group, c.x, seed, chain, cell_info, c.axis,
                                            {k: v for k, v in params.items() if k != "stages"}, base_id))
    return Plan(runs, stages, sources, tasks, prep, s.evaluation.after_each_stage, s.evaluation.backend)
