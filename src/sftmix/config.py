"""The study file: a YAML document validated into `Study`, with `key=value` overrides from the command line.

Every error names the file, the line (when the YAML has one for it) and the field's dotted path, e.g.
`study.yaml:14: training.learning_rate: must be > 0 (got -0.1)`.
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from .data.dedup import DecontamConfig, DedupConfig
from .data.filters import FilterRule, LabelRule
from .errors import StudyError

BUILTIN_MODELS = ("tiny", "smollm2-135m-instruct")
CHAT_TEMPLATES = ("auto", "chatml", "vicuna", "alpaca")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _parse_amount(v: Any) -> Any:
    # "1/64" reads better in a study file than 0.015625.
    if isinstance(v, str) and re.fullmatch(r"\s*\d+\s*/\s*\d+\s*", v):
        num, den = (int(x) for x in v.split("/"))
        if den == 0:
            raise ValueError(f"division by zero in amount {v!r}")
        return float(Fraction(num, den))
    return v


Amount = Annotated[float, BeforeValidator(_parse_amount)]


class SourceConfig(_Strict):
    builtin: Literal["math", "code", "general"] | None = None
    path: str | None = None
    hf: str | None = None
    hf_name: str | None = None
    split: str = "train"
    format: Literal["auto", "alpaca", "sharegpt", "messages", "prompt_completion", "gsm8k", "humaneval"] = "auto"
    ability: str | None = None
    size: int = Field(1000, gt=0, description="rows to generate (builtin sources)")
    difficulty: int = Field(1, ge=1, le=5)
    limit: int | None = Field(None, gt=0, description="read at most this many rows (files)")
    upsample: bool = Field(False, description="allow amounts above the source's size (rows repeat)")
    on_error: Literal["raise", "skip"] = Field("raise", description="bad rows: stop with an error, or skip and count them")
    filters: list[FilterRule] = Field(default_factory=list, description="keep/drop rules, e.g. [drop: code, drop: math]")
    labels: list[LabelRule] = Field(default_factory=list, description="ability labels by rule (data/filters.py)")

    @model_validator(mode="after")
    def _one_origin(self):
        given = [k for k in ("builtin", "path", "hf") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of builtin, path or hf (got {given or 'none'})")
        return self


class LoraConfig(_Strict):
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | str = "all-linear"


class ModelConfig(_Strict):
    name: str
    finetune: Literal["lora", "full", "qlora"] = Field(
        "lora", description="qlora: LoRA on a 4-bit (NF4) base; needs bitsandbytes and a CUDA GPU")
    lora: LoraConfig = LoraConfig()
    chat_template: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    revision: str | None = Field(None, description="hub revision (branch, tag or commit) of an HF id")

    @field_validator("chat_template")
    @classmethod
    def _template(cls, v: str) -> str:
        if v not in CHAT_TEMPLATES:
            raise ValueError(f"unknown chat template {v!r}; expected one of {', '.join(CHAT_TEMPLATES)}")
        return v

    @property
    def key(self) -> str:
        return self.name


class TrainingConfig(_Strict):
    epochs: float = Field(3.0, gt=0)
    # None: 2e-5 for full fine-tuning (DMT), 2e-4 for LoRA / QLoRA (adapters need a ~10x larger step)
    learning_rate: float | None = Field(None, gt=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    batch_size: int = Field(16, gt=0)
    grad_accum: int = Field(1, gt=0)
    max_length: int = Field(1024, gt=8)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0)
    packing: bool = Field(True, description="lay each micro-batch end to end in one row, no attention across examples")
    truncation: Literal["drop", "keep"] = Field(
        "drop", description="rows longer than max_length: drop them, or keep them cut (their answer loses its end)")
    gradient_checkpointing: bool = False
    accelerate_config: str | None = Field(
        None, description="an `accelerate config` YAML (DDP, FSDP, DeepSpeed): each stage runs under `accelerate launch`")


class StrategyConfig(_Strict):
    name: str
    sources: list[str] | None = None
    params: dict[str, Any] = {}
    stages: list[dict[str, Any]] | None = Field(None, description="for name: stages, the curriculum")
    label: str | None = None
    amounts: list[Amount] | None = Field(
        None, min_length=1, description="run this strategy only at these of the study's amounts (e.g. strategies compared at the "
                          "full amount while single and multitask sweep all of them)")

    @field_validator("params")
    @classmethod
    def _fractions(cls, v: dict) -> dict:
        # `k: 1/256` and `k: [0, 1/64]` read as numbers, as amounts do.
        return {k: [_parse_amount(x) for x in x_] if isinstance((x_ := val), list) else _parse_amount(val)
                for k, val in v.items()}


class MixDesign(_Strict):
    """Fixed total with proportions (Zhang et al.): `shares` of the varied source(s); the rest split by `rest`."""

    total: Amount = Field(gt=0)
    unit: Literal["count", "tokens"] = "count"
    shares: dict[str, list[Amount]] = Field(min_length=1)
    rest: Literal["equal", "proportional"] = "equal"


class PoolDesign(_Strict):
    """The union of sources scaled as a whole, its own composition kept (BELLE)."""

    totals: list[Amount] = Field(min_length=1)
    unit: Literal["count", "tokens"] = "count"
    sources: list[str] | None = None


class DataPrepConfig(_Strict):
    """Dedup and decontamination applied to every source before mixtures are drawn."""

    dedup: DedupConfig = DedupConfig()
    decontaminate: DecontamConfig = DecontamConfig()


class TaskConfig(_Strict):
    name: str
    limit: int | None = Field(None, gt=0)
    max_new_tokens: int | None = Field(None, gt=0)
    params: dict[str, Any] = {}


class JudgeConfig(_Strict):
    """An LLM judge behind any OpenAI-compatible endpoint (MT-Bench, BELLE). The key is read from the environment
    variable named by api_key_env at run time; it is never stored."""

    model: str = Field(description="the judge model's name at the endpoint")
    base_url: str = "https://api.openai.com/v1"
    api_key_env: str | None = Field("OPENAI_API_KEY", description="environment variable holding the key (None: no key)")
    n: int = Field(1, gt=0, le=16, description="judgements per answer, averaged")
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int = Field(1024, gt=0)
    seed: int | None = Field(None, description="sent as seed + judgement index, where the endpoint honours seeds")
    concurrency: int = Field(8, gt=0, le=256)
    max_retries: int = Field(5, ge=0, le=20)
    backoff: float = Field(1.0, ge=0, description="first retry waits this many seconds, doubling each time")
    timeout: float = Field(120.0, gt=0, description="seconds per request")
    cache: str | None = Field(None, description="SQLite file of judgements (default: $SFTMIX_CACHE/judge.sqlite)")


class EvaluationConfig(_Strict):
    tasks: list[TaskConfig] = Field(default_factory=lambda: [TaskConfig(name=n) for n in ("math", "code", "general")])
    limit: int | None = Field(100, gt=0, description="items per task (None: all)")
    batch_size: int = Field(128, gt=0, description="sequences decoded at once (the engine lowers it to fit its cache)")
    backend: Literal["engine", "hf", "vllm"] = Field(
        "engine", description="sftmix's engine; plain HF generate (the baseline); vLLM (installed, on a GPU)")
    base: bool = Field(True, description="also evaluate each model before SFT")
    code_timeout: float = Field(5.0, gt=0)
    after_each_stage: bool = Field(False, description="also evaluate every intermediate stage (forgetting)")
    judge: JudgeConfig | None = Field(None, description="the LLM judge for judged tasks (mtbench, belle)")

    @field_validator("backend")
    @classmethod
    def _installed(cls, v):
        import importlib.util

        # Checked now, not after every stage has trained.
        if v == "vllm" and importlib.util.find_spec("vllm") is None:
            raise ValueError("backend vllm needs vLLM installed (pip install vllm; a CUDA GPU)")
        return v

    @field_validator("tasks", mode="before")
    @classmethod
    def _names(cls, v):
        if not isinstance(v, list):
            return v
        from .evaluate.tasks import SUITES  # `reasoning` stands for the 12 tasks of Zhang et al.'s suite

        out = []
        for t in v:
            if isinstance(t, str) and t in SUITES:
                out.extend({"name": n} for n in SUITES[t])
            else:
                out.append({"name": t} if isinstance(t, str) else t)
        return out


class SlurmConfig(_Strict):
    partition: str | None = None
    time_min: int = Field(240, gt=0, description="wall time per job, minutes")
    gpus_per_node: int = Field(0, ge=0)
    cpus_per_task: int = Field(4, gt=0)
    mem_gb: float | None = Field(None, gt=0)
    array_parallelism: int = Field(32, gt=0, description="jobs of one array running at once")
    folder: str | None = Field(None, description="submitit logs; default OUTPUT_DIR/slurm (must be on a shared filesystem)")
    local: bool = Field(False, description="submitit's local executor (no Slurm): for tests and single machines")
    extra: dict[str, Any] = Field(default_factory=dict, description="more submitit slurm_* parameters")


class ExecutorConfig(_Strict):
    kind: Literal["local", "ray", "slurm"] = "local"
    workers: int = Field(1, gt=0, description="units run at once (local: processes; ray: tasks in flight)")
    threads_per_worker: int | None = Field(None, gt=0, description="torch threads per worker; default cores / workers")
    gpus_per_worker: float = Field(0, ge=0, description="GPUs each unit asks for (ray, slurm); local: one per worker")
    address: str | None = Field(None, description="ray: an existing cluster (ray.init(address=...)); else a local one")
    slurm: SlurmConfig = SlurmConfig()


class Study(_Strict):
    name: str = "study"
    description: str = ""
    output_dir: str | None = None
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    data_seed: int = 0
    models: list[ModelConfig] = Field(min_length=1)
    sources: dict[str, SourceConfig] = Field(min_length=1)
    amount_unit: Literal["fraction", "count", "tokens"] = "fraction"
    amounts: list[Amount] | dict[str, list[Amount]] | None = None
    combine: Literal["product", "zip"] = "product"
    mix: MixDesign | None = None
    pool: PoolDesign | None = None
    data: DataPrepConfig = DataPrepConfig()
    strategies: list[StrategyConfig] = Field(default_factory=lambda: [StrategyConfig(name="multitask")])
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    executor: ExecutorConfig = ExecutorConfig()
    report_to: list[str] = Field(default_factory=list, description="log stages and scores to mlflow and/or "
                                 "tensorboard (a list or one name; none: nowhere), as in HF's TrainingArguments")

    @field_validator("models", mode="before")
    @classmethod
    def _model_names(cls, v):
        return [{"name": m} if isinstance(m, str) else m for m in v] if isinstance(v, list) else v

    @field_validator("strategies", mode="before")
    @classmethod
    def _strategy_names(cls, v):
        return [{"name": s} if isinstance(s, str) else s for s in v] if isinstance(v, list) else v

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v):
        return [v] if isinstance(v, int) else v

    @field_validator("report_to", mode="before")
    @classmethod
    def _report_to(cls, v):
        if v is None:
            return []
        return [b.strip() for b in v.split(",") if b.strip()] if isinstance(v, str) else v


# ---------------------------------------------------------------------------------------------- loading and errors


def _line_map(text: str) -> dict[tuple, int]:
    """Dotted path (as a tuple of keys / indices) -> 1-based line in the YAML text."""
    lines: dict[tuple, int] = {}

    def walk(node, path):
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                p = path + (k.value,)
                lines[p] = k.start_mark.line + 1
                walk(v, p)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


class StudyFile:
    """A study with where it came from, so later checks (files, registries) can point at lines too."""

    def __init__(self, study: Study, path: Path | None, lines: dict[tuple, int]):
        self.study, self.path, self.lines = study, path, lines

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def error(self, loc: tuple, msg: str) -> StudyError:
        return StudyError(_format(self.path, self.lines, loc, msg))


def _format(path: Path | None, lines: dict[tuple, int], loc: tuple, msg: str) -> str:
    where = str(path) if path else "study"
    line = None
    for i in range(len(loc), -1, -1):  # the deepest part of the path that the YAML spells out
        if loc[:i] in lines:
            line = lines[loc[:i]]
            break
    field = ".".join(str(p) for p in loc) or "(top level)"
    return f"{where}{f':{line}' if line else ''}: {field}: {msg}"


def _pydantic_message(err: dict) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    msg = re.sub(r"^(Value|Assertion) error, ", "", msg)
    if "input" in err and kind not in ("model_type", "dict_type"):
        shown = repr(err["input"])
        msg += f" (got {shown if len(shown) < 60 else shown[:57] + '...'})"
    return msg


def _clean_loc(loc: tuple) -> tuple:
    # pydantic puts union branch names (e.g. 'str', 'list[str]') into the path; they mean nothing to a user.
    return tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in ("str", "int", "float"))))


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise StudyError(f"override {item!r}: expected key=value, e.g. training.epochs=1")
    key, _, raw = item.partition("=")
    key = key.strip()
    if key == "out_dir":  # the name HF users type; the study field is output_dir
        key = "output_dir"
    if not key or not re.fullmatch(r"[A-Za-z_][\w\-]*(\.[\w\-]+)*", key):
        raise StudyError(f"override {item!r}: bad key {key!r}; use a dotted path like training.epochs")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise StudyError(f"override {item!r}: value is not valid YAML ({e.problem})") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            if isinstance(node, list) and k.isdigit() and int(k) < len(node):
                node = node[int(k)]
                continue
            if not isinstance(node, dict):
                raise StudyError(f"override {item!r}: {k!r} is inside a value that is not a mapping")
            node = node.setdefault(k, {})
        last = keys[-1]
        if isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise StudyError(f"override {item!r}: cannot set {last!r} on a value that is not a mapping")
    return data


def load_study(path: str | Path | None, overrides: list[str] | None = None, text: str | None = None,
               base_dir: Path | None = None) -> StudyFile:
    """Read, override and validate a study. Raises StudyError with file:line: field: message."""
    p = Path(path) if path else None
    if text is None:
        if p is None:
            raise StudyError("no study file given")
        if not p.exists():
            raise StudyError(f"{p}: study file not found")
        if p.is_dir():
            raise StudyError(f"{p}: is a directory, expected a YAML study file")
        try:
            text = p.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            raise StudyError(f"{p}: not UTF-8 text (byte {e.start}: {e.reason}); save the study file as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p or 'study'}:{mark.line + 1}" if mark else str(p or "study")
        raise StudyError(f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise StudyError(f"{p or 'study'}: expected a mapping of study fields at the top level, got {type(data).__name__}")
    lines = _line_map(text)
    data = apply_overrides(data, overrides or [])
    try:
        study = Study.model_validate(data)
    except ValidationError as e:
        msgs = [_format(p, lines, _clean_loc(tuple(err["loc"])), _pydantic_message(err)) for err in e.errors()]
        raise StudyError("\n".join(msgs)) from None
    sf = StudyFile(study, p, lines)
    _resolve_paths(sf, cli_output="output_dir" in _override_keys(overrides or []), base_dir=base_dir)
    check_study(sf)
    return sf


def _override_keys(overrides: list[str]) -> set[str]:
    return {".".join(parse_override(o)[0]) for o in overrides}


def _resolve_paths(sf: StudyFile, cli_output: bool, base_dir: Path | None) -> None:
    """Every path is made absolute once, here: a path written in the study file is relative to that file, one given
    on the command line (out_dir=...) to the current directory, like any command-line path. Built-in studies live
    inside the package, so their paths are relative to the current directory."""
    s = sf.study
    base = base_dir or sf.base_dir
    for src in s.sources.values():
        if src.path is not None:
            src.path = str(_absolute(base, src.path))
    for t in s.evaluation.tasks:
        for key in ("path", "judge_prompts", "prompts", "references"):
            if isinstance(t.params.get(key), str):
                t.params[key] = str(_absolute(base, t.params[key]))
    if s.training.accelerate_config:
        s.training.accelerate_config = str(_absolute(base, s.training.accelerate_config))
    out = s.output_dir or f"runs/{s.name}"
    s.output_dir = str(_absolute(Path.cwd() if cli_output else base, out))


def _absolute(base: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return (p if p.is_absolute() else base / p).resolve()


def check_study(sf: StudyFile) -> None:
    """Checks that need more than types: registries, files on disk, cross-references."""
    from .evaluate.tasks import TASKS
    from .train.strategies import STRATEGIES

    s = sf.study
    for name, src in s.sources.items():
        if src.path is not None:
            f = Path(src.path)
            if not f.exists():
                raise sf.error(("sources", name, "path"), f"file not found: {f}")
        if src.builtin is not None and src.difficulty > 3 and src.builtin != "math":
            raise sf.error(("sources", name, "difficulty"), f"builtin {src.builtin} has difficulties 1..3")
    _check_design(sf)
    for i, st in enumerate(s.strategies):
        if st.name not in STRATEGIES:
            raise sf.error(("strategies", i, "name"), f"unknown strategy {st.name!r}; expected one of {', '.join(sorted(STRATEGIES))}")
        for src in st.sources or []:
            if src not in s.sources:
                raise sf.error(("strategies", i, "sources"), f"unknown source {src!r}; the study defines {', '.join(s.sources)}")
        _check_strategy(sf, i, st)
        if st.amounts is not None:
            if not isinstance(s.amounts, list):
                raise sf.error(("strategies", i, "amounts"), "a strategy's amounts pick from the study's `amounts` "
                                                             "list; this study has no such list")
            for j, a in enumerate(st.amounts):
                if a not in s.amounts:
                    raise sf.error(("strategies", i, "amounts", j), f"{a:g} is not one of the study's amounts "
                                                                    f"({', '.join(f'{x:g}' for x in s.amounts)})")
    for i, t in enumerate(s.evaluation.tasks):
        if t.name not in TASKS:
            raise sf.error(("evaluation", "tasks", i, "name"), f"unknown task {t.name!r}; expected one of {', '.join(sorted(TASKS))}")
        if "path" in t.params:
            f = Path(t.params["path"])
            if not f.exists():
                raise sf.error(("evaluation", "tasks", i, "params", "path"), f"file not found: {f}")
    for i, m in enumerate(s.models):
        if m.name not in BUILTIN_MODELS and not Path(m.name).exists() and not re.fullmatch(r"[\w.\-]+/[\w.\-]+", m.name):
            raise sf.error(
                ("models", i, "name"),
                f"unknown model {m.name!r}; expected {' or '.join(BUILTIN_MODELS)}, a local directory or a Hugging Face id (org/name)",
            )
    if len(set(s.seeds)) != len(s.seeds):
        raise sf.error(("seeds",), "seeds repeat a value")
    _check_report_to(sf)


# report_to backend -> the PyPI package that provides its module
REPORT_TO = {"mlflow": "mlflow-skinny", "tensorboard": "tensorboard"}


def _check_report_to(sf: StudyFile) -> None:
    import importlib.util

    for i, b in enumerate(sf.study.report_to):
        if b != "none" and b not in REPORT_TO:
            raise sf.error(("report_to", i), f"unknown backend {b!r}; expected mlflow, tensorboard or none")
        # Checked here so a missing library stops the study before any training, not after it.
        if b in REPORT_TO and importlib.util.find_spec(b) is None:
            raise sf.error(("report_to", i), f"report_to {b} needs the {REPORT_TO[b]} package: "
                                             f"pip install 'sftmix[tracking]' (or pip install {REPORT_TO[b]})")


def _check_design(sf: StudyFile) -> None:
    s = sf.study
    given = [k for k in ("amounts", "mix", "pool") if getattr(s, k) is not None]
    if len(given) != 1:
        raise sf.error((given[1],) if len(given) > 1 else ("amounts",),
                       "give exactly one data design: amounts (a list, or a list per source), mix or pool"
                       + (f" (got {', '.join(given)})" if given else ""))
    if isinstance(s.amounts, list):
        lists = {None: s.amounts}
    elif isinstance(s.amounts, dict):
        for name in s.amounts:
            if name not in s.sources:
                raise sf.error(("amounts", name), f"unknown source {name!r}; the study defines {', '.join(s.sources)}")
        missing = [n for n in s.sources if n not in s.amounts]
        if missing:
            raise sf.error(("amounts",), f"per-source amounts must name every source; missing {', '.join(missing)}")
        if s.combine == "zip" and len({len(v) for v in s.amounts.values() if len(v) > 1}) > 1:
            raise sf.error(("combine",), "combine: zip needs the per-source lists that vary to have the same length")
        lists = dict(s.amounts)
    else:
        lists = {}
    for name, amounts in lists.items():
        loc = ("amounts",) if name is None else ("amounts", name)
        if not amounts:
            raise sf.error(loc, "needs at least one amount")
        for i, a in enumerate(amounts):
            if a <= 0:
                raise sf.error(loc + (i,), f"amount must be > 0 (got {a:g}); the base model is evaluated by evaluation.base")
            if s.amount_unit == "fraction" and a > 1:
                for src_name in ([name] if name else list(s.sources)):
                    if not s.sources[src_name].upsample:
                        raise sf.error(loc + (i,), f"fraction {a:g} of source {src_name!r} is above 1; "
                                                   f"set sources.{src_name}.upsample: true to repeat rows")
        if len(set(amounts)) != len(amounts):
            raise sf.error(loc, "amounts repeat a value")
    if s.mix is not None:
        for name, shares in s.mix.shares.items():
            if name not in s.sources:
                raise sf.error(("mix", "shares", name), f"unknown source {name!r}; the study defines {', '.join(s.sources)}")
            for i, x in enumerate(shares):
                if not 0 <= x <= 1:
                    raise sf.error(("mix", "shares", name, i), f"a share is in [0, 1] (got {x:g})")
        if len({len(v) for v in s.mix.shares.values()}) > 1:
            raise sf.error(("mix", "shares"), "the share lists of several sources are zipped: give them the same length")
        for i, combo in enumerate(zip(*s.mix.shares.values())):
            if sum(combo) > 1 + 1e-9:
                raise sf.error(("mix", "shares"), f"shares at position {i} add up to {sum(combo):g}, above 1")
    if s.pool is not None:
        for name in s.pool.sources or []:
            if name not in s.sources:
                raise sf.error(("pool", "sources"), f"unknown source {name!r}; the study defines {', '.join(s.sources)}")
        for i, t in enumerate(s.pool.totals):
            if t <= 0:
                raise sf.error(("pool", "totals", i), f"a total must be > 0 (got {t:g})")


def _check_strategy(sf: StudyFile, i: int, st: StrategyConfig) -> None:
    from .train.strategies import StrategyError, check_params

    params = dict(st.params)
    if st.stages is not None:
        if st.name != "stages":
            raise sf.error(("strategies", i, "stages"), f"`stages` belongs to strategy `stages`, not {st.name!r}")
        params["stages"] = st.stages
    try:
        check_params(st.name, params)
    except StrategyError as e:
        raise sf.error(("strategies", i, "params"), str(e)) from None
    if st.name == "dmt":
        ks = params.get("k", 1 / 256)
        for j, k in enumerate(ks if isinstance(ks, list) else [ks]):
            k = _parse_amount(k)
            if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 <= k <= 1:
                loc = ("strategies", i, "params", "k") + ((j,) if isinstance(ks, list) else ())
                raise sf.error(loc, f"k is the fraction of the stage-1 data replayed in stage 2: a number in [0, 1] (got {k!r})")
    if st.stages is not None:
        names = st.sources or list(sf.study.sources)
        for j, stage in enumerate(st.stages):
            parts = stage.get("parts")
            if not parts or not isinstance(parts, (list, dict)):
                raise sf.error(("strategies", i, "stages", j), "each stage needs parts: a list of source names or a "
                                                               "mapping source -> fraction of the cell's amount")
            for src in parts:
                if src not in names:
                    raise sf.error(("strategies", i, "stages", j, "parts"), f"unknown source {src!r}; expected one of {', '.join(names)}")
            unknown = set(stage) - {"parts", "training", "name"}
            if unknown:
                raise sf.error(("strategies", i, "stages", j, sorted(unknown)[0]), "unknown field; a stage has parts, training and name")
            try:
                TrainingConfig.model_validate({**sf.study.training.model_dump(), **(stage.get("training") or {})})
            except ValidationError as e:
                err = e.errors()[0]
                raise sf.error(("strategies", i, "stages", j, "training") + _clean_loc(tuple(err["loc"])),
                               _pydantic_message(err)) from None


def output_dir(sf: StudyFile) -> Path:
    return Path(sf.study.output_dir or f"runs/{sf.study.name}")  # absolute once loaded (see _resolve_paths)
