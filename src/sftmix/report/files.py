"""The report's files: every table as CSV and Parquet under tables/, every figure as PNG and SVG under figures/."""

from __future__ import annotations

import base64
import csv
import io
import math
import numbers
import re
from pathlib import Path

from ..atomic import atomic_write


def slug(text: str) -> str:
    # names come from the study file (abilities, recipes); keep them from steering a path out of figures/
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "x"


def _fields(rows: list[dict], fields) -> list[str]:
    return list(fields or (rows[0] if rows else []))


def _csv(rows: list[dict], fields=None) -> str:
    """CSV text of `rows`; `fields` (default: the first row's keys) are the columns, other keys are left out. A
    missing number (None, NaN) is a blank cell, as it is a null in the Parquet twin."""
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=_fields(rows, fields), extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows({k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in rows)
    return buf.getvalue()


def _missing(v) -> bool:
    return v is None or v == "" or (isinstance(v, float) and math.isnan(v))


def _parquet(rows: list[dict], fields=None) -> bytes:
    """The same rows as `_csv`, typed: a column whose values are all numbers (blanks aside) is numeric (blanks are
    nulls), any other column is text, so the file reads back with the CSV's rows and columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = _fields(rows, fields)
    columns = {}
    for name in names:
        vals = [r.get(name) for r in rows]
        present = [v for v in vals if not _missing(v)]
        if present and all(isinstance(v, bool) for v in present):
            columns[name] = pa.array([None if _missing(v) else v for v in vals], pa.bool_())
        elif present and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in present):
            columns[name] = pa.array([None if _missing(v) else int(v) for v in vals], pa.int64())
        elif (present and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in present)) or (
                not present and any(isinstance(v, float) for v in vals)):
            columns[name] = pa.array([None if _missing(v) else float(v) for v in vals], pa.float64())
        else:
            columns[name] = pa.array([None if v is None else str(v) for v in vals], pa.string())
    buf = io.BytesIO()
    pq.write_table(pa.table(columns) if names else pa.table({}), buf)
    return buf.getvalue()


def write_table(out: Path, name: str, rows: list[dict], fields=None) -> None:
    """tables/NAME.csv and tables/NAME.parquet with the same rows and columns."""
    atomic_write(out / "tables" / f"{name}.csv", _csv(rows, fields))
    atomic_write(out / "tables" / f"{name}.parquet", _parquet(rows, fields))


def save_figure(out: Path, name: str, fig) -> str:
    """figures/NAME.png and figures/NAME.svg; returns the PNG as base64 for the self-contained HTML."""
    png, svg = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png")
    # no date in the SVG: the same study gives the same file
    fig.savefig(svg, format="svg", metadata={"Date": None})
    atomic_write(out / "figures" / f"{name}.png", png.getvalue())
    atomic_write(out / "figures" / f"{name}.svg", svg.getvalue())
    return base64.b64encode(png.getvalue()).decode()
