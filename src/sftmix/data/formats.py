"""Reading and writing the SFT data formats people actually publish.

Every reader turns a row into an `Example` (a chat plus metadata) or raises a `DataError` whose message names the
file, the row (and the line for JSONL) and what was expected, because the CLI shows that message alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from sftmix.atomic import atomic_write
from sftmix.data.example import Example, code_example
from sftmix.errors import DataError

FORMATS = ("alpaca", "sharegpt", "messages", "prompt_completion", "gsm8k", "humaneval")
EXPORT_FORMATS = ("messages", "alpaca", "sharegpt")
SUPPORTED_EXTENSIONS = (".json", ".jsonl", ".parquet")

# A top-level JSON object is accepted when it wraps the rows under one of these keys (HF-style dumps do this).
_JSON_WRAPPER_KEYS = ("data", "rows", "train")

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "system": "system",
}
MESSAGE_ROLES = ("system", "user", "assistant")


def _present(record: dict, key: str) -> bool:
    # Parquet files and `datasets` unify the schema across rows, filling absent keys with None; treating None as
    # absent keeps detection the same whichever container the rows came from.
    return record.get(key) is not None


# Detection order matters: humaneval rows also carry `prompt`, and chat datasets such as UltraChat carry both
# `prompt` and `messages`, so the more specific signatures are tried first.
_SIGNATURES: dict[str, tuple[Callable[[dict], bool], str]] = {
    "humaneval": (
        lambda r: all(_present(r, k) for k in ("task_id", "prompt", "canonical_solution", "test", "entry_point")),
        "task_id, prompt, canonical_solution, test, entry_point",
    ),
    "messages": (lambda r: _present(r, "messages"), "messages"),
    "sharegpt": (lambda r: _present(r, "conversations"), "conversations"),
    "alpaca": (lambda r: _present(r, "instruction") and _present(r, "output"), "instruction, output[, input]"),
    "gsm8k": (lambda r: _present(r, "question") and _present(r, "answer"), "question, answer"),
    "prompt_completion": (
        lambda r: _present(r, "prompt") and (_present(r, "completion") or _present(r, "response")),
        "prompt, completion|response",
    ),
}


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""


def _describe_formats() -> str:
    return ", ".join(f"{fmt} ({_SIGNATURES[fmt][1]})" for fmt in FORMATS)


def _type_name(value) -> str:
    return "null" if value is None else type(value).__name__


# ---------------------------------------------------------------------------------------------------------------
# Reading files into records


def _read_located(path: Path) -> tuple[list[dict], list[int | None]]:
    """Records plus, for each, its 1-based line number when the format has one (JSONL), else None."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory; expected a {'/'.join(SUPPORTED_EXTENSIONS)} file")
    ext = path.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise DataError(
            f"{path}: unsupported file type '{path.suffix or '(none)'}'; supported: {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty; expected rows")

    if ext == ".parquet":
        records, lines = _read_parquet(path), None
    else:
        text = _read_text(path)
        if not text.strip():
            raise DataError(f"{path}: file is empty; expected rows")
        if ext == ".jsonl":
            records, lines = _parse_jsonl(path, text)
        else:
            records, lines = _parse_json(path, text), None

    if not records:
        raise DataError(f"{path}: file contains no rows")
    return records, lines or [None] * len(records)


def _read_text(path: Path) -> str:
    try:
        # utf-8-sig so that files saved by Windows tools with a BOM still parse.
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from e


def _parse_jsonl(path: Path, text: str) -> tuple[list[dict], list[int]]:
    records, lines = [], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            # The decoder's own "line 1 column N" is misleading here, so report the file's line and the column only.
            raise DataError(f"{path} line {lineno}: invalid JSON ({e.msg} at column {e.colno})") from e
        if not isinstance(obj, dict):
            raise DataError(f"{path} line {lineno}: expected a JSON object per line, found {_type_name(obj)}")
        records.append(obj)
        lines.append(lineno)
    return records, lines


def _parse_json(path: Path, text: str) -> list[dict]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path} line {e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from e
    if isinstance(obj, dict):
        lists = [k for k in _JSON_WRAPPER_KEYS if isinstance(obj.get(k), list)]
        if len(lists) != 1:
            raise DataError(
                f"{path}: expected a JSON list of objects, or an object with one list under "
                f"{' / '.join(repr(k) for k in _JSON_WRAPPER_KEYS)}; found an object with keys [{', '.join(map(str, obj))}]"
            )
        obj = obj[lists[0]]
    if not isinstance(obj, list):
        raise DataError(f"{path}: expected a JSON list of objects, found {_type_name(obj)}")
    for i, row in enumerate(obj):
        if not isinstance(row, dict):
            raise DataError(f"{path} row {i}: expected a JSON object, found {_type_name(row)}")
    return obj


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: cannot read as Parquet ({e})") from e


def read_records(path: str | Path) -> list[dict]:
    """The rows of a .json, .jsonl or .parquet file as dicts."""
    return _read_located(Path(path))[0]


# ---------------------------------------------------------------------------------------------------------------
# Rows to examples


def detect_format(record: dict, where: str = "") -> str:
    """Which of FORMATS a row is, judged by its keys."""
    if not isinstance(record, dict):
        raise DataError(f"{_prefix(where)}expected an object (a row), found {_type_name(record)}")
    for fmt, (matches, _) in _SIGNATURES.items():
        if matches(record):
            return fmt
    keys = ", ".join(sorted(map(str, record)))
    raise DataError(
        f"{_prefix(where)}cannot tell the format of a row with keys [{keys}]; expected one of: {_describe_formats()}"
    )


def _field(record: dict, key: str, where: str, *, optional: bool = False) -> str | None:
    value = record.get(key)
    if value is None:
        if optional:
            return None
        raise DataError(f"{_prefix(where)}missing field '{key}'")
    if not isinstance(value, str):
        raise DataError(f"{_prefix(where)}field '{key}' must be a string, found {_type_name(value)}")
    return value


def _turns(record: dict, key: str, role_key: str, content_key: str, where: str) -> list[tuple[str, object, int]]:
    """The raw (role, content, index) triples of a list-of-turns field, with its shape checked."""
    turns = record.get(key)
    if turns is None:
        raise DataError(f"{_prefix(where)}missing field '{key}'")
    if not isinstance(turns, list):
        raise DataError(f"{_prefix(where)}field '{key}' must be a list of turns, found {_type_name(turns)}")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise DataError(f"{_prefix(where)}{key}[{i}] must be an object, found {_type_name(turn)}")
        for k in (role_key, content_key):
            value = turn.get(k)
            if value is None:
                raise DataError(f"{_prefix(where)}{key}[{i}] is missing field '{k}'")
            if not isinstance(value, str):
                raise DataError(f"{_prefix(where)}{key}[{i}] field '{k}' must be a string, found {_type_name(value)}")
        out.append((turn[role_key], turn[content_key], i))
    return out


def _sharegpt_messages(record: dict, where: str) -> list[dict[str, str]]:
    messages = []
    for role, content, i in _turns(record, "conversations", "from", "value", where):
        mapped = SHAREGPT_ROLES.get(role.lower())
        if mapped is None:
            raise DataError(
                f"{_prefix(where)}conversations[{i}] has unknown role '{role}'; "
                f"expected one of: {', '.join(SHAREGPT_ROLES)}"
            )
        messages.append({"role": mapped, "content": content})
    # Some ShareGPT dumps keep the system prompt beside the conversation rather than inside it.
    system = _field(record, "system", where, optional=True)
    if system and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": system})
    return messages


def _chat_messages(record: dict, where: str) -> list[dict[str, str]]:
    messages = []
    for role, content, i in _turns(record, "messages", "role", "content", where):
        if role not in MESSAGE_ROLES:
            raise DataError(
                f"{_prefix(where)}messages[{i}] has unsupported role '{role}'; expected one of: {', '.join(MESSAGE_ROLES)}"
            )
        messages.append({"role": role, "content": content})
    return messages


def _single_turn(user: str, assistant: str, system: str | None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def _check_conversation(messages: list[dict[str, str]], where: str) -> None:
    # Training masks everything but assistant turns, so a row without a final answer teaches nothing and a row
    # without a user turn has no prompt to condition on.
    if not any(m["role"] == "user" for m in messages):
        raise DataError(f"{_prefix(where)}conversation has no user turn")
    last = messages[-1]
    if last["role"] != "assistant":
        raise DataError(f"{_prefix(where)}conversation must end with an assistant turn, but ends with '{last['role']}'")
    if not last["content"].strip():
        raise DataError(f"{_prefix(where)}the final assistant turn is empty")


def _gsm8k_answer(answer: str, where: str) -> str:
    # GSM8K puts the final number after "####"; rows without the marker are taken to hold just the number.
    final = answer.rsplit("####", 1)[-1]
    final = final.replace(",", "").strip()
    if not final:
        raise DataError(f"{_prefix(where)}field 'answer' has no final answer after '####'")
    return final


def to_example(record: dict, fmt: str, where: str = "") -> Example:
    """Convert one row of a known format into an Example (meta holds only what the format itself carries)."""
    if not isinstance(record, dict):
        raise DataError(f"{_prefix(where)}expected an object (a row), found {_type_name(record)}")
    meta: dict = {}
    if fmt == "alpaca":
        instruction = _field(record, "instruction", where)
        extra = _field(record, "input", where, optional=True)
        user = "\n\n".join(part for part in (instruction, extra) if part and part.strip())
        if not user:
            raise DataError(f"{_prefix(where)}fields 'instruction' and 'input' are both empty")
        output = _field(record, "output", where)
        messages = _single_turn(user, output, _field(record, "system", where, optional=True))
    elif fmt == "sharegpt":
        messages = _sharegpt_messages(record, where)
    elif fmt == "messages":
        messages = _chat_messages(record, where)
    elif fmt == "prompt_completion":
        key = "response" if _present(record, "response") and not _present(record, "completion") else "completion"
        messages = _single_turn(
            _field(record, "prompt", where),
            _field(record, key, where),
            _field(record, "system", where, optional=True),
        )
    elif fmt == "gsm8k":
        question = _field(record, "question", where)
        answer = _field(record, "answer", where)
        messages = _single_turn(question, answer, None)
        meta = {"answer": _gsm8k_answer(answer, where), "question": question}
    elif fmt == "humaneval":
        fields = {k: _field(record, k, where) for k in ("task_id", "prompt", "canonical_solution", "test", "entry_point")}
        ex = code_example(
            fields["prompt"],
            fields["canonical_solution"],
            task_id=fields["task_id"],
            canonical_solution=fields["canonical_solution"],
            test=fields["test"],
            entry_point=fields["entry_point"],
        )
        messages, meta = ex.messages, ex.meta
    else:
        raise DataError(f"{_prefix(where)}unknown format '{fmt}'; expected one of: {', '.join(FORMATS)}")
    if not messages:
        raise DataError(f"{_prefix(where)}conversation is empty")
    _check_conversation(messages, where)
    return Example(messages, meta)


def _check_fmt(fmt: str) -> None:
    if fmt != "auto" and fmt not in FORMATS:
        raise DataError(f"unknown data format '{fmt}'; expected 'auto' or one of: {', '.join(FORMATS)}")


def _convert(records: list[dict], wheres: list[str], fmt: str, source: str, ability: str) -> list[Example]:
    """Shared by files and HF datasets: detect (from the first row), convert, and stamp the metadata."""
    if fmt == "auto":
        fmt = detect_format(records[0], wheres[0])
        matches, expected = _SIGNATURES[fmt]
        for record, where in zip(records, wheres):
            # Checking the signature first gives "this row looks different" rather than an obscure missing field.
            if not isinstance(record, dict) or not matches(record):
                keys = ", ".join(sorted(map(str, record))) if isinstance(record, dict) else _type_name(record)
                raise DataError(
                    f"{where}: expected the {fmt} format ({expected}) detected from the first row, "
                    f"but found keys [{keys}]"
                )
    examples = []
    for row, (record, where) in enumerate(zip(records, wheres)):
        ex = to_example(record, fmt, where)
        ex.meta = {**ex.meta, "id": f"{source}-{row}", "source": source, "ability": ability, "row": row, "format": fmt}
        examples.append(ex)
    return examples


def load_file(
    path: str | Path,
    fmt: str = "auto",
    source: str = "",
    ability: str = "",
    limit: int | None = None,
) -> list[Example]:
    """Read a data file into Examples; with fmt="auto" the first row decides the format for the whole file."""
    _check_fmt(fmt)
    if limit is not None and limit < 0:
        raise DataError(f"{path}: limit must be >= 0, got {limit}")
    path = Path(path)
    records, lines = _read_located(path)
    if limit is not None:
        records, lines = records[:limit], lines[:limit]
        if not records:
            return []
    wheres = [f"{path} row {i}" + (f" (line {ln})" if ln else "") for i, ln in enumerate(lines)]
    return _convert(records, wheres, fmt, source or path.stem, ability)


def load_hf(
    path: str,
    split: str = "train",
    name: str | None = None,
    data_files=None,
    fmt: str = "auto",
    source: str = "",
    ability: str = "",
) -> list[Example]:
    """Load through `datasets.load_dataset`: hub ids (with split slicing such as "train[:1000]") when online, or the
    "json"/"parquet" builders over local `data_files` offline."""
    _check_fmt(fmt)
    label = f"dataset '{path}'" + (f" (config '{name}')" if name else "") + f" split '{split}'"
    try:
        import datasets

        ds = datasets.load_dataset(path, name, split=split, data_files=data_files)
        records = ds.to_list()
    # `load_dataset` raises a zoo of types (ConnectionError, FileNotFoundError, ValueError, hub errors, ...); all of
    # them mean "this dataset cannot be read as declared" to the user.
    except Exception as e:
        raise DataError(f"cannot load {label}: {type(e).__name__}: {e}") from e
    if not records:
        raise DataError(f"{label} has no rows")
    if not source:
        # For the generic builders the dataset id is just "json"; the data file's name says more.
        source = Path(data_files).stem if isinstance(data_files, (str, Path)) else path.rstrip("/").split("/")[-1]
    origin = str(data_files) if isinstance(data_files, (str, Path)) else path
    wheres = [f"{origin} [{split}] row {i}" for i in range(len(records))]
    return _convert(records, wheres, fmt, source, ability)


# ---------------------------------------------------------------------------------------------------------------
# Writing


def _export_row(ex: Example, fmt: str, index: int) -> dict:
    where = f"example {index} (id {ex.id})"
    messages = ex.messages
    if not messages or messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        raise DataError(f"{where}: cannot export for training: it does not end with a non-empty assistant turn")
    if fmt == "messages":
        return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}
    if fmt == "sharegpt":
        to_from = {"system": "system", "user": "human", "assistant": "gpt"}
        return {"conversations": [{"from": to_from[m["role"]], "value": m["content"]} for m in messages]}
    # alpaca: exactly [system?] user assistant.
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    rest = messages[1:] if system is not None else messages
    if [m["role"] for m in rest] != ["user", "assistant"]:
        raise DataError(
            f"{where}: alpaca holds a single user/assistant exchange, but this conversation has {len(rest)} turns "
            f"({', '.join(m['role'] for m in rest)}); export it as messages or sharegpt"
        )
    row = {"instruction": rest[0]["content"], "input": "", "output": rest[1]["content"]}
    if system:
        row["system"] = system
    return row


def write_jsonl(examples: Iterable[Example], path: str | Path, fmt: str = "messages") -> Path:
    """Write train-ready JSONL in messages, alpaca or sharegpt shape, atomically."""
    if fmt not in EXPORT_FORMATS:
        raise DataError(f"cannot export as '{fmt}'; expected one of: {', '.join(EXPORT_FORMATS)}")
    rows = [json.dumps(_export_row(ex, fmt, i), ensure_ascii=False) + "\n" for i, ex in enumerate(examples)]
    return atomic_write(path, "".join(rows))
