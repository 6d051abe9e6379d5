"""Reading and writing the SFT data formats people actually publish.

Every reader turns a row into an `Example` (a chat plus metadata) or reports a `RowError` whose message names the
file, the row (and the line for JSONL), the field and what was expected, because the CLI shows that message alone.

Bad rows. `on_error="raise"` (the default) stops at the first bad row with that message; `on_error="skip"` skips it,
counts it by kind in a `LoadReport` (with the first few problems verbatim) and carries on. Nothing is dropped
silently: when the caller passes no report, skipped rows are summarised on stderr once per file. Kinds:

  invalid_utf8, invalid_json, truncated_line (the file's last line is cut off), not_an_object, row_too_large
  (above `max_row_bytes`, default 4 MiB: a real SFT row is at most a few hundred KB), unknown_format,
  wrong_format (keys differ from the format detected from the first row), missing_field, null_field, wrong_type,
  unknown_role, role_order, no_user, no_assistant, empty_assistant, empty_turn, bad_value.

Roles: after one optional system turn first, user and assistant turns must alternate, starting with a user turn and
ending with a non-empty assistant turn. Real dumps break this (ShareGPT scrapes that open with the bot's greeting,
two user turns after a deleted reply); chat templates such as Llama's and Mistral's reject such conversations and
loss masking assumes every assistant turn answers a user turn, so they are errors (`role_order`), skippable.

Scale: `iter_examples` streams JSONL and Parquet (one row in memory at a time, plus the Parquet batch); JSON files
are a single document and are parsed whole. `iter_examples(..., rows={...})` converts only the chosen row numbers,
which is how a lean pipeline (see data/dedup.py `index_source`) materialises the rows it selected.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from sftmix.atomic import atomic_write_chunks
from sftmix.data.example import Example, code_example
from sftmix.errors import DataError

FORMATS = ("alpaca", "sharegpt", "messages", "prompt_completion", "gsm8k", "humaneval")
EXPORT_FORMATS = ("messages", "alpaca", "sharegpt")
SUPPORTED_EXTENSIONS = (".json", ".jsonl", ".parquet")
ON_ERROR = ("raise", "skip")
MAX_ROW_BYTES = 4 * 2**20

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

# Keys each format turns into the conversation; every other top-level scalar is kept in meta["fields"] so that
# filters can match on it (e.g. a `category` or `lang` column).
_CONSUMED = {
    "alpaca": {"instruction", "input", "output", "system"},
    "sharegpt": {"conversations", "system"},
    "messages": {"messages"},
    "prompt_completion": {"prompt", "completion", "response", "system"},
    "gsm8k": {"question", "answer"},
    "humaneval": {"task_id", "prompt", "canonical_solution", "test", "entry_point"},
}


class RowError(DataError):
    """One bad row; `kind` is one of the kinds in the module docstring, `where` is file/line/row."""

    def __init__(self, message: str, kind: str, where: str = ""):
        super().__init__(message)
        self.kind, self.where = kind, where


@dataclass
class Problem:
    where: str
    kind: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class LoadReport:
    """What one load did (use one report per file): rows read and kept, rows skipped by kind, and the first
    `max_problems` problems verbatim."""

    rows_read: int = 0
    rows_kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)
    format: str | None = None
    max_problems: int = 20

    def add(self, err: RowError) -> None:
        self.skipped[err.kind] += 1
        if len(self.problems) < self.max_problems:
            self.problems.append(Problem(err.where, err.kind, str(err)))

    @property
    def rows_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self, label: str = "") -> str:
        """One console line, e.g. `src.jsonl: 3 of 1000 rows skipped (2 invalid_json, 1 role_order); first: ...`."""
        head = f"{label}: " if label else ""
        if not self.skipped:
            return f"{head}{self.rows_kept} rows, none skipped"
        kinds = ", ".join(f"{n} {k}" for k, n in self.skipped.most_common())
        first = f"; first: {self.problems[0].message}" if self.problems else ""
        return f"{head}{self.rows_skipped} of {self.rows_read} rows skipped ({kinds}){first}"

    def to_dict(self) -> dict:
        return {
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "skipped": dict(self.skipped.most_common()),
            "problems": [{"where": p.where, "kind": p.kind, "message": p.message} for p in self.problems],
        }


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


def matching_formats(record: dict) -> list[str]:
    """Every format whose signature the row carries (detection takes the first; inspect shows them all)."""
    return [fmt for fmt, (matches, _) in _SIGNATURES.items() if matches(record)]


# ---------------------------------------------------------------------------------------------------------------
# Reading files into records, one at a time


def _check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise DataError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")


def _check_path(path: Path) -> str:
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
    return ext


def _read_text(path: Path) -> str:
    try:
        # utf-8-sig so that files saved by Windows tools with a BOM still parse.
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); re-save it as UTF-8") from None


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


# Each low-level reader yields (row number, where, record or RowError); the caller decides to raise or skip, so the
# row numbers (and therefore example ids) are the same whichever way bad rows are handled.
Located = tuple[int, str, "dict | RowError"]


def _parse_line(raw: bytes, where: str, last: bool) -> dict | RowError:
    try:
        obj = orjson.loads(raw)  # validates UTF-8 itself, so the common case needs no decode
    except orjson.JSONDecodeError:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            return RowError(f"{where}: not UTF-8 text (byte {e.start} of the line: {e.reason})", "invalid_utf8", where)
        # orjson is strict (no NaN, no big ints) and its messages are terse: ask the standard parser, which either
        # accepts the line or explains the problem with a column.
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            # The decoder's own "line 1 column N" is misleading here, so report the file's line and the column only.
            if last:
                return RowError(
                    f"{where}: truncated last line: the file ends inside a JSON value ({e.msg} at column {e.colno}); "
                    "was it cut off while writing or downloading?",
                    "truncated_line",
                    where,
                )
            return RowError(f"{where}: invalid JSON ({e.msg} at column {e.colno})", "invalid_json", where)
    if not isinstance(obj, dict):
        return RowError(f"{where}: expected a JSON object per line, found {_type_name(obj)}", "not_an_object", where)
    return obj


def _iter_jsonl(path: Path, wanted: Callable[[int], bool] | None, max_row_bytes: int) -> Iterator[Located]:
    row = -1
    with path.open("rb") as f:
        for lineno, line in enumerate(f, start=1):
            if lineno == 1:
                if line.startswith(b"\xef\xbb\xbf"):
                    line = line[3:]
                if line.startswith((b"\xff\xfe", b"\xfe\xff")):
                    raise DataError(f"{path}: not UTF-8 text (it starts with a UTF-16 byte order mark); re-save it as UTF-8")
            if not line or line.isspace():
                continue
            row += 1
            if wanted is not None:
                ok = wanted(row)
                if ok is None:
                    return
                if not ok:
                    continue
            if len(line) > max_row_bytes:
                where = f"{path} line {lineno}"
                item = RowError(
                    f"{where}: row is {_mib(len(line))}, above the {_mib(max_row_bytes)} limit (max_row_bytes); "
                    "split or drop it",
                    "row_too_large",
                    where,
                )
            else:
                item = _parse_line(line, f"{path} line {lineno}", last=not line.endswith(b"\n"))
            yield row, f"{path} row {row} (line {lineno})", item


def _iter_json(path: Path, wanted: Callable[[int], bool]) -> Iterator[Located]:
    text = _read_text(path)
    if not text.strip():
        raise DataError(f"{path}: file is empty; expected rows")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path} line {e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
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
    for i, item in enumerate(obj):
        ok = True if wanted is None else wanted(i)
        if ok is None:
            return
        if not ok:
            continue
        where = f"{path} row {i}"
        if not isinstance(item, dict):
            item = RowError(f"{where}: expected a JSON object, found {_type_name(item)}", "not_an_object", where)
        yield i, where, item


def _iter_parquet(path: Path, wanted: Callable[[int], bool]) -> Iterator[Located]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        row = -1
        for batch in pf.iter_batches(batch_size=2048):
            for record in batch.to_pylist():
                row += 1
                ok = True if wanted is None else wanted(row)
                if ok is None:
                    return
                if ok:
                    yield row, f"{path} row {row}", record
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: cannot read as Parquet ({e})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: a string column holds bytes that are not UTF-8 ({e.reason})") from None


def _selector(limit: int | None, rows: Collection[int] | None) -> Callable[[int], bool | None] | None:
    """True: read this row; False: pass it by; None: no row from here on is wanted (stop reading). No selector at
    all (None) when every row is wanted."""
    if limit is None and rows is None:
        return None
    chosen = None if rows is None else frozenset(rows)
    last = max(chosen) if chosen else -1

    def wanted(row: int) -> bool | None:
        if limit is not None and row >= limit:
            return None
        if chosen is None:
            return True
        if row > last:
            return None
        return row in chosen

    return wanted


def iter_records(
    path: str | Path,
    on_error: str = "raise",
    report: LoadReport | None = None,
    limit: int | None = None,
    rows: Collection[int] | None = None,
    max_row_bytes: int = MAX_ROW_BYTES,
) -> Iterator[tuple[int, str, dict]]:
    """(row number, where, record) for each readable row of a .json, .jsonl or .parquet file, streaming where the
    container allows. Bad rows raise a RowError, or with on_error="skip" are counted in `report`."""
    _check_on_error(on_error)
    path = Path(path)
    ext = _check_path(path)
    report = report if report is not None else LoadReport()
    wanted = _selector(limit, rows)
    if ext == ".jsonl":
        located = _iter_jsonl(path, wanted, max_row_bytes)
    elif ext == ".json":
        located = _iter_json(path, wanted)
    else:
        located = _iter_parquet(path, wanted)
    read = 0
    for row, where, item in located:
        read += 1
        report.rows_read += 1
        if isinstance(item, RowError):
            if on_error == "raise":
                raise item
            report.add(item)
            continue
        yield row, where, item
    if read == 0 and limit != 0 and rows is None:
        raise DataError(f"{path}: file contains no rows" if ext != ".jsonl" else f"{path}: file is empty; expected rows")


def read_records(path: str | Path) -> list[dict]:
    """The rows of a .json, .jsonl or .parquet file as dicts (any bad row is an error)."""
    return [record for _, _, record in iter_records(path)]


# ---------------------------------------------------------------------------------------------------------------
# Rows to examples


def detect_format(record: dict, where: str = "") -> str:
    """Which of FORMATS a row is, judged by its keys."""
    if not isinstance(record, dict):
        raise RowError(f"{_prefix(where)}expected an object (a row), found {_type_name(record)}", "not_an_object", where)
    found = matching_formats(record)
    if found:
        return found[0]
    keys = ", ".join(sorted(map(str, record)))
    raise RowError(
        f"{_prefix(where)}cannot tell the format of a row with keys [{keys}]; expected one of: {_describe_formats()}",
        "unknown_format",
        where,
    )


def _field(record: dict, key: str, where: str, *, optional: bool = False) -> str | None:
    value = record.get(key)
    if value is None:
        if optional:
            return None
        if key in record:
            raise RowError(f"{_prefix(where)}missing field '{key}' (it is null)", "null_field", where)
        raise RowError(f"{_prefix(where)}missing field '{key}'", "missing_field", where)
    if not isinstance(value, str):
        raise RowError(
            f"{_prefix(where)}field '{key}' must be a string, found {_type_name(value)}", "wrong_type", where
        )
    return value


class _Labels:
    """The field each turn came from (`conversations[3]`), built only when an error message needs one."""

    def __init__(self, key: str | None = None, names: tuple[str, ...] = ()):
        self.key, self.names = key, names

    def __getitem__(self, i: int) -> str:
        if i < 0:
            raise IndexError(i)  # labels[-1] is resolved by the caller with the length
        return self.names[i] if i < len(self.names) else f"{self.key}[{i - len(self.names)}]"


def _turns(record: dict, key: str, role_key: str, content_key: str, where: str) -> list[tuple[str, str, int]]:
    """The (role, content, index) triples of a list-of-turns field, with its shape checked."""
    turns = record.get(key)
    if turns is None:
        kind = "null_field" if key in record else "missing_field"
        raise RowError(f"{_prefix(where)}missing field '{key}'" + (" (it is null)" if key in record else ""), kind, where)
    if not isinstance(turns, list):
        raise RowError(
            f"{_prefix(where)}field '{key}' must be a list of turns, found {_type_name(turns)}", "wrong_type", where
        )
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise RowError(f"{_prefix(where)}{key}[{i}] must be an object, found {_type_name(turn)}", "wrong_type", where)
        for k in (role_key, content_key):
            value = turn.get(k)
            if value is not None and type(value) is str:
                continue
            label = f"{key}[{i}]"
            if value is None:
                kind = "null_field" if k in turn else "missing_field"
                raise RowError(f"{_prefix(where)}{label} is missing field '{k}'", kind, where)
            if not isinstance(value, str):
                raise RowError(
                    f"{_prefix(where)}{label} field '{k}' must be a string, found {_type_name(value)}",
                    "wrong_type",
                    where,
                )
        out.append((turn[role_key], turn[content_key], i))
    return out


Turns = tuple[list[dict[str, str]], _Labels]  # messages and, for each, the field it came from


def _sharegpt_messages(record: dict, where: str) -> Turns:
    messages = []
    for role, content, i in _turns(record, "conversations", "from", "value", where):
        mapped = SHAREGPT_ROLES.get(role) or SHAREGPT_ROLES.get(role.lower())
        if mapped is None:
            raise RowError(
                f"{_prefix(where)}conversations[{i}] has unknown role '{role}'; "
                f"expected one of: {', '.join(SHAREGPT_ROLES)}",
                "unknown_role",
                where,
            )
        messages.append({"role": mapped, "content": content})
    # Some ShareGPT dumps keep the system prompt beside the conversation rather than inside it.
    system = _field(record, "system", where, optional=True) if "system" in record else None
    if system and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": system})
        return messages, _Labels("conversations", ("system",))
    return messages, _Labels("conversations")


def _chat_messages(record: dict, where: str) -> Turns:
    messages = []
    for role, content, i in _turns(record, "messages", "role", "content", where):
        if role not in MESSAGE_ROLES:
            raise RowError(
                f"{_prefix(where)}messages[{i}] has unsupported role '{role}'; "
                f"expected one of: {', '.join(MESSAGE_ROLES)}",
                "unknown_role",
                where,
            )
        messages.append({"role": role, "content": content})
    return messages, _Labels("messages")


def _single_turn(user: str, assistant: str, system: str | None, keys: tuple[str, str]) -> Turns:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return messages, _Labels(None, (("system",) if system else ()) + keys)


def _blank(text: str | None) -> bool:
    # isspace() instead of strip(): no copy of what may be a long turn.
    return not text or text.isspace()


def _check_conversation(messages: list[dict[str, str]], labels: _Labels, where: str) -> None:
    # Training masks everything but assistant turns, so a row without a final answer teaches nothing and a row
    # without a user turn has no prompt to condition on.
    if (len(messages) == 2 and messages[0]["role"] == "user" and messages[1]["role"] == "assistant"
            and not _blank(messages[0]["content"]) and not _blank(messages[1]["content"])):
        return  # the common single exchange
    p = _prefix(where)
    if not messages:
        raise RowError(f"{p}conversation is empty", "no_user", where)
    if not any(m["role"] == "user" for m in messages):
        raise RowError(f"{p}conversation has no user turn", "no_user", where)
    last = messages[-1]
    if last["role"] != "assistant":
        raise RowError(
            f"{p}conversation must end with an assistant turn, but ends with '{last['role']}' ({labels[len(messages) - 1]})",
            "no_assistant",
            where,
        )
    start = 1 if messages[0]["role"] == "system" else 0
    expected = "user"
    for i in range(start, len(messages)):
        role = messages[i]["role"]
        if role == "system":
            raise RowError(
                f"{p}{labels[i]}: a system turn after the start; a system prompt must be the first turn",
                "role_order",
                where,
            )
        if role != expected:
            before = f"after {labels[i - 1]} ('{messages[i - 1]['role']}')" if i > start else "as the first turn"
            raise RowError(
                f"{p}{labels[i]}: '{role}' {before}; expected user and assistant turns to alternate, starting with user",
                "role_order",
                where,
            )
        if _blank(messages[i]["content"]):
            if role == "assistant":
                raise RowError(f"{p}{labels[i]}: the assistant turn is empty", "empty_assistant", where)
            raise RowError(f"{p}{labels[i]}: the user turn is empty", "empty_turn", where)
        expected = "assistant" if role == "user" else "user"


def _gsm8k_answer(answer: str, where: str) -> str:
    # GSM8K puts the final number after "####"; rows without the marker are taken to hold just the number.
    final = answer.rsplit("####", 1)[-1]
    final = final.replace(",", "").strip()
    if not final:
        raise RowError(f"{_prefix(where)}field 'answer' has no final answer after '####'", "bad_value", where)
    return final


def _extra_fields(record: dict, fmt: str) -> dict:
    consumed = _CONSUMED[fmt]
    return {
        k: v for k, v in record.items()
        if k not in consumed and isinstance(k, str) and isinstance(v, (str, int, float, bool))
    }


def to_example(record: dict, fmt: str, where: str = "", max_row_bytes: int | None = MAX_ROW_BYTES) -> Example:
    """Convert one row of a known format into an Example: meta holds what the format itself carries, plus the row's
    other top-level scalar fields under meta["fields"] (when there are any)."""
    if not isinstance(record, dict):
        raise RowError(f"{_prefix(where)}expected an object (a row), found {_type_name(record)}", "not_an_object", where)
    meta: dict = {}
    if fmt == "alpaca":
        instruction = _field(record, "instruction", where)
        extra = _field(record, "input", where, optional=True)
        user = "\n\n".join(part for part in (instruction, extra) if not _blank(part))
        if not user:
            raise RowError(f"{_prefix(where)}fields 'instruction' and 'input' are both empty", "empty_turn", where)
        output = _field(record, "output", where)
        messages, labels = _single_turn(user, output, _field(record, "system", where, optional=True),
                                        ("instruction", "output"))
    elif fmt == "sharegpt":
        messages, labels = _sharegpt_messages(record, where)
    elif fmt == "messages":
        messages, labels = _chat_messages(record, where)
    elif fmt == "prompt_completion":
        key = "response" if _present(record, "response") and not _present(record, "completion") else "completion"
        messages, labels = _single_turn(
            _field(record, "prompt", where),
            _field(record, key, where),
            _field(record, "system", where, optional=True),
            ("prompt", key),
        )
    elif fmt == "gsm8k":
        question = _field(record, "question", where)
        answer = _field(record, "answer", where)
        messages, labels = _single_turn(question, answer, None, ("question", "answer"))
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
        messages, meta, labels = ex.messages, ex.meta, _Labels(None, ("prompt", "canonical_solution"))
    else:
        raise DataError(f"{_prefix(where)}unknown format '{fmt}'; expected one of: {', '.join(FORMATS)}")
    size = 0 if max_row_bytes is None else sum(len(m["content"]) for m in messages)
    if max_row_bytes is not None and size > max_row_bytes:
        raise RowError(
            f"{_prefix(where)}row holds {_mib(size)} of text, above the {_mib(max_row_bytes)} limit (max_row_bytes)",
            "row_too_large",
            where,
        )
    _check_conversation(messages, labels, where)
    extra = _extra_fields(record, fmt)
    if extra:
        meta["fields"] = extra
    return Example(messages, meta)


def _check_fmt(fmt: str) -> None:
    if fmt != "auto" and fmt not in FORMATS:
        raise DataError(f"unknown data format '{fmt}'; expected 'auto' or one of: {', '.join(FORMATS)}")


def _convert(
    located: Iterable[tuple[int, str, dict]],
    fmt: str,
    source: str,
    ability: str,
    on_error: str,
    report: LoadReport,
    max_row_bytes: int | None,
) -> Iterator[Example]:
    """Shared by files and HF datasets: detect (from the first good row), convert, and stamp the metadata.
    `max_row_bytes=None`: the container already checked row sizes (JSONL checks each line's bytes)."""
    detected = None if fmt == "auto" else fmt
    report.format = detected
    for row, where, record in located:
        try:
            if detected is None:
                detected = report.format = detect_format(record, where)
            try:
                ex = to_example(record, detected, "", max_row_bytes)
            except RowError:
                # Only now build the location into the message (for every row it costs more than redoing the rare
                # bad one), and say "this row looks different" rather than an obscure missing field when it does.
                # (A row that converts always carries its format's signature, so good rows skip this check.)
                matches, expected = _SIGNATURES[detected]
                if fmt == "auto" and isinstance(record, dict) and not matches(record):
                    keys = ", ".join(sorted(map(str, record)))
                    raise RowError(
                        f"{where}: expected the {detected} format ({expected}) detected from the first row, "
                        f"but found keys [{keys}]",
                        "wrong_format",
                        where,
                    ) from None
                ex = to_example(record, detected, where, max_row_bytes)
        except RowError as e:
            if on_error == "raise":
                raise
            report.add(e)
            continue
        ex.meta.update(id=f"{source}-{row}", source=source, ability=ability, row=row, format=detected)
        report.rows_kept += 1
        yield ex


def _finish(label: str, report: LoadReport, own_report: bool) -> None:
    if report.rows_read and not report.rows_kept:
        raise DataError(f"{label}: none of its {report.rows_read} rows could be used: {report.summary()}")
    if own_report and report.skipped:
        # The caller keeps no report, so this line is the only trace of the skipped rows: never skip silently.
        print(f"warning: {report.summary(label)}", file=sys.stderr)


def iter_examples(
    path: str | Path,
    fmt: str = "auto",
    source: str = "",
    ability: str = "",
    limit: int | None = None,
    on_error: str = "raise",
    report: LoadReport | None = None,
    rows: Collection[int] | None = None,
    max_row_bytes: int = MAX_ROW_BYTES,
) -> Iterator[Example]:
    """Stream a data file as Examples; with fmt="auto" the first good row decides the format for the whole file.

    `limit` reads only the first rows; `rows` converts only those row numbers (meta["row"], 0-based over the file's
    rows, bad ones included), so ids (`{source}-{row}`) do not depend on what was skipped or selected."""
    _check_fmt(fmt)
    _check_on_error(on_error)
    if limit is not None and limit < 0:
        raise DataError(f"{path}: limit must be >= 0, got {limit}")
    path = Path(path)
    own = report is None
    report = LoadReport() if own else report
    located = iter_records(path, on_error, report, limit, rows, max_row_bytes)
    checked = path.suffix.lower() == ".jsonl"
    yield from _convert(located, fmt, source or path.stem, ability, on_error, report, None if checked else max_row_bytes)
    _finish(str(path), report, own)


def load_file(
    path: str | Path,
    fmt: str = "auto",
    source: str = "",
    ability: str = "",
    limit: int | None = None,
    on_error: str = "raise",
    report: LoadReport | None = None,
    rows: Collection[int] | None = None,
    max_row_bytes: int = MAX_ROW_BYTES,
) -> list[Example]:
    """Read a data file into Examples (see `iter_examples`)."""
    return list(iter_examples(path, fmt, source, ability, limit, on_error, report, rows, max_row_bytes))


def iter_hf(
    path: str,
    split: str = "train",
    name: str | None = None,
    data_files=None,
    fmt: str = "auto",
    source: str = "",
    ability: str = "",
    limit: int | None = None,
    on_error: str = "raise",
    report: LoadReport | None = None,
    max_row_bytes: int = MAX_ROW_BYTES,
) -> Iterator[Example]:
    """Stream through `datasets.load_dataset` (Arrow-backed, memory-mapped): hub ids (with split slicing such as
    "train[:1000]") when online, or the "json"/"parquet" builders over local `data_files` offline."""
    _check_fmt(fmt)
    _check_on_error(on_error)
    label = f"dataset '{path}'" + (f" (config '{name}')" if name else "") + f" split '{split}'"
    try:
        import datasets

        ds = datasets.load_dataset(path, name, split=split, data_files=data_files)
    # `load_dataset` raises a zoo of types (ConnectionError, FileNotFoundError, ValueError, hub errors, ...); all of
    # them mean "this dataset cannot be read as declared" to the user.
    except Exception as e:
        raise DataError(f"cannot load {label}: {type(e).__name__}: {e}") from None
    if len(ds) == 0:
        raise DataError(f"{label} has no rows")
    if not source:
        # For the generic builders the dataset id is just "json"; the data file's name says more.
        source = Path(data_files).stem if isinstance(data_files, (str, Path)) else path.rstrip("/").split("/")[-1]
    origin = str(data_files) if isinstance(data_files, (str, Path)) else path
    own = report is None
    report = LoadReport() if own else report
    n = len(ds) if limit is None else min(limit, len(ds))

    def located():
        # Iterating a Dataset reads its Arrow table row by row, so memory stays flat.
        for i, record in enumerate(ds):
            if i >= n:
                return
            report.rows_read += 1
            yield i, f"{origin} [{split}] row {i}", record

    yield from _convert(located(), fmt, source, ability, on_error, report, max_row_bytes)
    _finish(label, report, own)


def load_hf(
    path: str,
    split: str = "train",
    name: str | None = None,
    data_files=None,
    fmt: str = "auto",
    source: str = "",
    ability: str = "",
    limit: int | None = None,
    on_error: str = "raise",
    report: LoadReport | None = None,
    max_row_bytes: int = MAX_ROW_BYTES,
) -> list[Example]:
    """`iter_hf` as a list."""
    return list(iter_hf(path, split, name, data_files, fmt, source, ability, limit, on_error, report, max_row_bytes))


# ---------------------------------------------------------------------------------------------------------------
# Writing


def _export_row(ex: Example, fmt: str, index: int) -> dict:
    where = f"example {index} (id {ex.id})"
    messages = ex.messages
    if not messages or messages[-1]["role"] != "assistant" or _blank(messages[-1]["content"]):
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


def write_lines(path: str | Path, lines: Iterable[bytes]) -> Path:
    """Stream byte lines into `path` atomically: a failure part-way leaves the old file as it was."""
    return atomic_write_chunks(path, lines)


def export_line(ex: Example, fmt: str = "messages", index: int = 0) -> bytes:
    """One train-ready JSONL line (with its newline) in messages, alpaca or sharegpt shape."""
    return orjson.dumps(_export_row(ex, fmt, index)) + b"\n"


def write_jsonl(examples: Iterable[Example], path: str | Path, fmt: str = "messages") -> Path:
    """Write train-ready JSONL in messages, alpaca or sharegpt shape, streaming and atomically."""
    if fmt not in EXPORT_FORMATS:
        raise DataError(f"cannot export as '{fmt}'; expected one of: {', '.join(EXPORT_FORMATS)}")
    return write_lines(path, (export_line(ex, fmt, i) for i, ex in enumerate(examples)))
