"""`sftmix data inspect PATH`: what a data file holds before it goes into a study.

The whole file is scanned with skip semantics, so one bad row does not hide the rest: the report lists the detected
format (or why it could not be told), rows read and usable, turns and roles, character and token statistics, a few
rendered examples (escaped: this is other people's text) and the problems found.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .example import Example
from .formats import (
    FORMATS,
    MAX_ROW_BYTES,
    LoadReport,
    _check_fmt,
    _convert,
    _describe_formats,
    iter_records,
    matching_formats,
)


@dataclass
class Stats:
    n: int = 0
    total: int = 0
    low: int | None = None
    high: int | None = None

    def add(self, v: int) -> None:
        self.n += 1
        self.total += v
        self.low = v if self.low is None else min(self.low, v)
        self.high = v if self.high is None else max(self.high, v)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    def __str__(self) -> str:
        if not self.n:
            return "-"
        return f"min {self.low:,} / mean {self.mean:,.1f} / max {self.high:,} (total {self.total:,})"


@dataclass
class Inspection:
    path: Path
    format: str | None
    format_note: str
    report: LoadReport
    signatures: Counter = field(default_factory=Counter)  # rows by the first format signature they carry
    turns: Stats = field(default_factory=Stats)
    roles: Counter = field(default_factory=Counter)
    chars: Stats = field(default_factory=Stats)
    tokens: Stats = field(default_factory=Stats)
    token_model: str | None = None
    token_rows: int = 0
    examples: list[Example] = field(default_factory=list)


def _format_note(first: dict | None, fmt: str, detected: str | None) -> str:
    if fmt != "auto":
        return "given"
    if first is None:
        return "no readable row to detect it from"
    found = matching_formats(first)
    keys = ", ".join(sorted(map(str, first)))
    if not found:
        return f"no signature matches the first row's keys [{keys}]; expected one of: {_describe_formats()}"
    if len(found) > 1:
        return (f"detected from the first row, whose keys [{keys}] match {', '.join(found)}; "
                f"{found[0]} is tried first (set format: to choose)")
    return f"detected from the first row, keys [{keys}]"


def inspect_file(
    path: str | Path,
    fmt: str = "auto",
    n_examples: int = 3,
    tokenizer=None,
    token_model: str | None = None,
    token_rows: int = 2000,
) -> Inspection:
    """Scan a whole file; tokens are counted (chat template applied) over the first `token_rows` usable rows."""
    _check_fmt(fmt)
    path = Path(path)
    report = LoadReport(max_problems=50)
    signatures: Counter = Counter()
    first: list[dict] = []

    def tally() -> Iterator[tuple[int, str, dict]]:
        for row, where, record in iter_records(path, "skip", report):
            if not first:
                first.append(record)
            found = matching_formats(record)
            signatures[found[0] if found else "(none)"] += 1
            yield row, where, record

    insp = Inspection(path, None, "", report, signatures, token_model=token_model)
    sample: list[Example] = []
    for ex in _convert(tally(), fmt, path.stem, "", "skip", report, MAX_ROW_BYTES):
        insp.turns.add(sum(1 for m in ex.messages if m["role"] != "system"))
        insp.roles.update(m["role"] for m in ex.messages)
        insp.chars.add(sum(len(m["content"]) for m in ex.messages))
        if len(insp.examples) < n_examples:
            insp.examples.append(ex)
        if tokenizer is not None and len(sample) < token_rows:
            sample.append(ex)
    insp.format = report.format
    insp.format_note = _format_note(first[0] if first else None, fmt, report.format)
    if tokenizer is not None and sample:
        texts = [tokenizer.apply_chat_template(e.messages, tokenize=False) for e in sample]
        for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            insp.tokens.add(len(ids))
        insp.token_rows = len(sample)
    return insp


def render(insp: Inspection, console) -> None:
    """Print an Inspection with rich; all file text goes through escape() so markup in data shows as text."""
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table

    r = insp.report
    fmt = insp.format or "unknown"
    console.print(f"[bold]{escape(str(insp.path))}[/bold]")
    console.print(f"format: [bold]{fmt}[/bold] ({escape(insp.format_note)})")
    mixed = {k: v for k, v in insp.signatures.items() if k != insp.format}
    if mixed:
        console.print("rows by signature: " + escape(", ".join(f"{k} {v:,}" for k, v in insp.signatures.most_common())))
    console.print(f"rows: {r.rows_kept:,} usable of {r.rows_read:,} read" + (f", {r.rows_skipped:,} bad" if r.skipped else ""))
    console.print("roles: " + (", ".join(f"{k} {v:,}" for k, v in insp.roles.most_common()) or "-"))
    table = Table(box=None, pad_edge=False)
    for col in ("per row", "min", "mean", "max", "total"):
        table.add_column(col, justify="left" if col == "per row" else "right")
    measures = [("turns (user+assistant)", insp.turns), ("characters", insp.chars)]
    if insp.token_model:
        scope = "" if insp.token_rows == r.rows_kept else f", first {insp.token_rows:,} rows"
        measures.append((f"tokens ({insp.token_model}{scope})", insp.tokens))
    for name, st in measures:
        cells = [f"{st.low:,}", f"{st.mean:,.1f}", f"{st.high:,}", f"{st.total:,}"] if st.n else ["-"] * 4
        table.add_row(escape(name), *cells)
    console.print(table)
    for ex in insp.examples:
        body = "\n".join(f"[bold]{m['role']}[/bold]: {escape(_clip(m['content']))}" for m in ex.messages)
        console.print(Panel(body, title=escape(f"{ex.id} (row {ex.meta.get('row')})"), title_align="left"))
    if r.skipped:
        console.print("[bold]problems[/bold]: " + ", ".join(f"{k} {v:,}" for k, v in r.skipped.most_common()))
        for p in r.problems:
            console.print(f"  {escape(p.message)}", soft_wrap=True)
        if r.rows_skipped > len(r.problems):
            console.print(f"  ... and {r.rows_skipped - len(r.problems):,} more")
    else:
        console.print("problems: none")


def _clip(text: str, limit: int = 600) -> str:
    return text if len(text) <= limit else text[:limit] + f" ... [{len(text) - limit:,} more characters]"


__all__ = ["FORMATS", "Inspection", "Stats", "inspect_file", "render"]
