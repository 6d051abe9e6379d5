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
    finetune: Literal["lora", "full"] = "lora"
    lora: LoraConfig = LoraConfig()
    chat_template: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

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
    learning_rate: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    batch_size: int = Field(16, gt=0)
    grad_accum: int = Field(1, gt=0)
    max_length: int = Field(1024, gt=8)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0)


class StrategyConfig(_Strict):
    name: str
    sources: list[str] | None = None
    params: dict[str, Any] = {}


class TaskConfig(_Strict):
    name: str
    limit: int | None = Field(None, gt=0)
    max_new_tokens: int | None = Field(None, gt=0)
    params: dict[str, Any] = {}


class EvaluationConfig(_Strict):
    tasks: list[TaskConfig] = Field(default_factory=lambda: [TaskConfig(name=n) for n in ("math", "code", "general")])
    limit: int | None = Field(100, gt=0, description="items per task (None: all)")
    batch_size: int = Field(16, gt=0)
    base: bool = Field(True, description="also evaluate each model before SFT")
    code_timeout: float = Field(5.0, gt=0)

    @field_validator("tasks", mode="before")
    @classmethod
    def _names(cls, v):
        return [{"name": t} if isinstance(t, str) else t for t in v] if isinstance(v, list) else v


class ExecutorConfig(_Strict):
    kind: Literal["local"] = "local"


class Study(_Strict):
    name: str = "study"
    description: str = ""
    output_dir: str | None = None
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    data_seed: int = 0
    models: list[ModelConfig] = Field(min_length=1)
    sources: dict[str, SourceConfig] = Field(min_length=1)
    amount_unit: Literal["fraction", "count"] = "fraction"
    amounts: list[Amount] = Field(min_length=1)
    strategies: list[StrategyConfig] = Field(default_factory=lambda: [StrategyConfig(name="multitask")])
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    executor: ExecutorConfig = ExecutorConfig()

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


def load_study(path: str | Path | None, overrides: list[str] | None = None, text: str | None = None) -> StudyFile:
    """Read, override and validate a study. Raises StudyError with file:line: field: message."""
    p = Path(path) if path else None
    if text is None:
        if p is None:
            raise StudyError("no study file given")
        if not p.exists():
            raise StudyError(f"{p}: study file not found")
        if p.is_dir():
            raise StudyError(f"{p}: is a directory, expected a YAML study file")
        text = p.read_text()
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
    check_study(sf)
    return sf


def check_study(sf: StudyFile) -> None:
    """Checks that need more than types: registries, files on disk, cross-references."""
    from .evaluate.tasks import TASKS
    from .train.strategies import STRATEGIES

    s = sf.study
    for name, src in s.sources.items():
        if src.path is not None:
            f = resolve_path(sf, src.path)
            if not f.exists():
                raise sf.error(("sources", name, "path"), f"file not found: {f}")
        if s.amount_unit == "fraction" and not src.upsample:
            for i, a in enumerate(s.amounts):
                if a > 1:
                    raise sf.error(
                        ("amounts", i),
                        f"fraction {a:g} of source {name!r} is above 1; set sources.{name}.upsample: true to repeat rows",
                    )
        if src.builtin is not None and src.difficulty > 3 and src.builtin != "math":
            raise sf.error(("sources", name, "difficulty"), f"builtin {src.builtin} has difficulties 1..3")
    for i, a in enumerate(s.amounts):
        if a <= 0:
            raise sf.error(("amounts", i), f"amount must be > 0 (got {a:g}); the base model is evaluated by evaluation.base")
    if len(set(s.amounts)) != len(s.amounts):
        raise sf.error(("amounts",), "amounts repeat a value")
    for i, st in enumerate(s.strategies):
        if st.name not in STRATEGIES:
            raise sf.error(("strategies", i, "name"), f"unknown strategy {st.name!r}; expected one of {', '.join(sorted(STRATEGIES))}")
        for src in st.sources or []:
            if src not in s.sources:
                raise sf.error(("strategies", i, "sources"), f"unknown source {src!r}; the study defines {', '.join(s.sources)}")
    for i, t in enumerate(s.evaluation.tasks):
        if t.name not in TASKS:
            raise sf.error(("evaluation", "tasks", i, "name"), f"unknown task {t.name!r}; expected one of {', '.join(sorted(TASKS))}")
        if "path" in t.params:
            f = resolve_path(sf, t.params["path"])
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


def resolve_path(sf: StudyFile, path: str) -> Path:
    """Data paths in a study are relative to the study file, like includes in other config systems."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (sf.base_dir / p)


def output_dir(sf: StudyFile) -> Path:
    return Path(sf.study.output_dir or f"runs/{sf.study.name}")
