"""Duplicate removal and decontamination against evaluation items.

YAML shapes (study level; the lead wires them in):

    dedup: {exact: true, near: false, threshold: 0.85, num_perm: 128, across_sources: true}
    decontam: {enabled: true, ngram: 13, min_item_words: 8}

Text is normalised before comparing: the conversation as "role: content" lines, lowercased, punctuation replaced by
spaces, whitespace collapsed. Role words are part of the text, so the same prompt with another answer is not a
duplicate and an n-gram never runs from one turn into the next without its role word.

- Exact: rows whose normalised conversation is the same; the first occurrence is kept, in the order
  the sources are given and then row order within a source. `across_sources: false` dedups each source on its own.
- Near: MinHash over word 5-gram shingles with LSH (datasketch); a row whose estimated Jaccard similarity to an
  earlier kept row reaches `threshold` is removed. Costs about a millisecond a row: meant for up to ~100K rows.
- Decontamination: a training row is removed when it shares a word n-gram (13 by default) with any evaluation
  item's text (prompt and reference). Items shorter than n words but at least `min_item_words` long are matched as a
  whole; shorter items are too generic to match and are counted in `EvalIndex.too_short`.

Every function returns what it kept and a list of removal records (dicts) saying what was removed and why:
`{"id", "source", "row", "reason": "exact_duplicate" | "near_duplicate", "duplicate_of", ...}` or
`{"id", "source", "row", "reason": "contaminated", "task", "item", "ngram"}`.

The lean path for a million rows keeps no Example objects: `scan_file` (bad rows, filters, labels, then
`index_source`) streams a source once into arrays (row numbers, 64-bit text keys, chars, abilities) with
contamination already checked; `dedup_indexes` marks duplicates across them;
the caller samples from `SourceIndex.kept_rows()` and either exports the chosen rows with `export_rows` (when the
index was built with a spill file: no second parse) or materialises them as Examples with
`formats.iter_examples(path, rows=...)`.
"""

from __future__ import annotations

import hashlib
import mmap
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field

from ..errors import DataError
from .example import Example

if TYPE_CHECKING:
    from .formats import LoadReport

_PUNCT = re.compile(r"[^\w\s]|_")
# The same mapping for ASCII text as a translate table, about five times faster than the regex on long rows.
# It also lowercases, so ASCII text takes one pass.
_ASCII = str.maketrans({**{chr(c): " " for c in range(128) if _PUNCT.fullmatch(chr(c))},
                        **{chr(c): chr(c + 32) for c in range(ord("A"), ord("Z") + 1)}})
# Odd 64-bit multiplier for the rolling n-gram hash (arithmetic wraps mod 2**64 in numpy's uint64).
_P = np.uint64(0x9E3779B97F4A7C15)
_BITS = 22


class DedupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exact: bool = True
    near: bool = False
    threshold: float = Field(0.85, gt=0, le=1)
    num_perm: int = Field(128, ge=16, le=1024)
    shingle: int = Field(5, ge=1, description="words per MinHash shingle")
    across_sources: bool = True


class DecontamConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    ngram: int = Field(13, ge=3)
    min_item_words: int = Field(8, ge=1)


def words(text: str) -> list[str]:
    """Lowercased words with punctuation taken as spaces: what every comparison here works on."""
    if text.isascii():
        return text.translate(_ASCII).split()
    return _PUNCT.sub(" ", text.lower()).split()


def normalize(text: str) -> str:
    return " ".join(words(text))


def conversation_text(ex: Example) -> str:
    """The text compared, roles included: "user: ...\nassistant: ..." (same prompt, other answer: not a duplicate)."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in ex.messages)


def _key(ws: list[str]) -> int:
    return int.from_bytes(hashlib.blake2b(" ".join(ws).encode(), digest_size=8).digest(), "little")


def exact_key(ex: Example) -> int:
    """64-bit key of the normalised conversation."""
    return _key(words(conversation_text(ex)))


def _ref(ex: Example) -> tuple[str, int | None]:
    return ex.id, ex.meta.get("row")


# ---------------------------------------------------------------------------------------------------------------
# Exact duplicates over arrays (shared by the Example path and the lean path)


def _first_occurrence(keys: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """For each position, the position of the first equal key (within its group when groups are given)."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    if groups is not None:
        # Fold the group into the key so that equal keys in different groups stay apart.
        keys = np.stack([groups.astype(np.uint64), keys], axis=1)
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    else:
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first[inverse.reshape(-1)]


# ---------------------------------------------------------------------------------------------------------------
# Decontamination


def _hash_words(ws: list[str]) -> np.ndarray:
    # Python's str hash is salted per process, which is fine: an EvalIndex is built and used in one process, and
    # every hit is confirmed on the words themselves. (Hashing the UTF-8 bytes in numpy instead was slower: it
    # touches eight bytes of state per character where this touches one hash per word.)
    return np.fromiter(map(hash, ws), dtype=np.int64, count=len(ws)).view(np.uint64)


def _window_hashes(h: np.ndarray, n: int) -> np.ndarray:
    """hash(h[i:i+n]) = sum_j h[i+j] * P**(n-1-j) mod 2**64 for every window, built by doubling (log n passes)."""
    if len(h) < n:
        return np.zeros(0, dtype=np.uint64)
    # Windows of every power-of-two length up to n, then n's binary digits joined left to right.
    spans = {1: h}
    size = 1
    while size * 2 <= n:
        w = spans[size]
        spans[size * 2] = w[:-size] * _pow(size) + w[size:]
        size *= 2
    out, have = None, 0
    for size in sorted(spans, reverse=True):
        if n - have >= size:
            w = spans[size]
            if out is None:
                out = w
            else:
                out = out[: len(out) - size] * _pow(size) + w[have:have + len(out) - size]
            have += size
    return out[: len(h) - n + 1]


def _pow(k: int) -> np.uint64:
    return np.uint64(pow(int(_P), k, 1 << 64))


@dataclass
class EvalIndex:
    """Word n-grams of every evaluation item, by length: {length: (sorted hashes, {hash: (task, item, words)})}."""

    ngram: int
    grams: dict[int, tuple[np.ndarray, dict[int, tuple[str, str, tuple[str, ...]]]]] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)
    too_short: dict[str, int] = field(default_factory=dict)
    bits: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @classmethod
    def build(cls, eval_sets: Mapping[str, Iterable[Example | tuple[str, str]]],
              config: DecontamConfig | None = None) -> "EvalIndex":
        """`eval_sets`: {task name: its items}, each an Example (all its turns are used) or an (item id, text) pair."""
        config = config or DecontamConfig()
        n = config.ngram
        index = cls(n)
        found: dict[int, dict[int, tuple[str, str, tuple[str, ...]]]] = {}
        for task, items in eval_sets.items():
            index.items[task] = index.too_short[task] = 0
            for item in items:
                item_id, text = (item.id, conversation_text(item)) if isinstance(item, Example) else item
                index.items[task] += 1
                ws = words(text)
                length = n if len(ws) >= n else len(ws)
                if length < config.min_item_words:
                    index.too_short[task] += 1
                    continue
                hashes = _window_hashes(_hash_words(ws), length)
                table = found.setdefault(length, {})
                for i, h in enumerate(hashes.tolist()):
                    table.setdefault(h, (task, str(item_id), tuple(ws[i:i + length])))
        index.grams = {k: (np.array(sorted(t), dtype=np.uint64), t) for k, t in found.items()}
        index.bits = np.zeros(1 << _BITS, dtype=bool)
        for sorted_hashes, _ in index.grams.values():
            index.bits[sorted_hashes >> np.uint64(64 - _BITS)] = True
        return index

    def find(self, texts: list[str]) -> list[tuple[str, str, str] | None]:
        """For each text, its first confirmed match (task, item id, the matching n-gram) or None."""
        return self.find_words([words(t) for t in texts])

    def find_words(self, split: list[list[str]]) -> list[tuple[str, str, str] | None]:
        """`find` over texts already split by `words`."""
        out: list[tuple[str, str, str] | None] = [None] * len(split)
        if not self.grams or not split:
            return out
        lengths = np.fromiter((len(ws) for ws in split), dtype=np.int64, count=len(split))
        flat = [w for ws in split for w in ws]
        hashes = _hash_words(flat)
        row_of = np.repeat(np.arange(len(split)), lengths)
        for n, (sorted_hashes, table) in self.grams.items():
            windows = _window_hashes(hashes, n)
            if not len(windows):
                continue
            # A 4 MB bit table of the eval grams' top bits turns away nearly every window before the binary search.
            candidates = np.flatnonzero(self.bits[windows >> np.uint64(64 - _BITS)])
            cw = windows[candidates]
            pos = np.minimum(np.searchsorted(sorted_hashes, cw), len(sorted_hashes) - 1)
            hit = sorted_hashes[pos] == cw
            hit &= row_of[candidates] == row_of[candidates + n - 1]  # the window lies inside one row
            for i in candidates[hit].tolist():
                r = int(row_of[i])
                if out[r] is not None:
                    continue
                gram = tuple(flat[i:i + n])
                task, item, words_ = table[int(windows[i])]
                if gram == words_:  # confirm: a 64-bit hash collision is not a match
                    out[r] = (task, item, " ".join(gram))
        return out


def decontaminate(
    groups: list[tuple[str, list[Example]]],
    eval_sets: Mapping[str, Iterable[Example | tuple[str, str]]] | EvalIndex,
    config: DecontamConfig | None = None,
    batch_size: int = 4096,
) -> tuple[list[tuple[str, list[Example]]], list[dict]]:
    """Remove training rows sharing an n-gram with any evaluation item; (kept groups, removal records)."""
    config = config or DecontamConfig()
    if not config.enabled:
        return [(s, list(rows)) for s, rows in groups], []
    index = eval_sets if isinstance(eval_sets, EvalIndex) else EvalIndex.build(eval_sets, config)
    kept_groups, removed = [], []
    for source, rows in groups:
        kept = []
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            for ex, match in zip(batch, index.find([conversation_text(e) for e in batch])):
                if match is None:
                    kept.append(ex)
                else:
                    removed.append(_contam_record(source, *_ref(ex), match))
        kept_groups.append((source, kept))
    return kept_groups, removed


def _contam_record(source: str, row_id: str, row: int | None, match: tuple[str, str, str]) -> dict:
    task, item, gram = match
    return {"id": row_id, "source": source, "row": row, "reason": "contaminated", "task": task, "item": item,
            "ngram": gram}


# ---------------------------------------------------------------------------------------------------------------
# Dedup over Examples


def dedup(
    groups: list[tuple[str, list[Example]]], config: DedupConfig | None = None
) -> tuple[list[tuple[str, list[Example]]], list[dict]]:
    """Remove exact (and, when configured, near) duplicates, keeping the first occurrence in the order given."""
    config = config or DedupConfig()
    flat = [(gi, source, ex) for gi, (source, rows) in enumerate(groups) for ex in rows]
    alive = np.ones(len(flat), dtype=bool)
    removed: list[dict] = []
    group_ids = None if config.across_sources else np.array([g for g, _, _ in flat], dtype=np.int64)
    if config.exact and flat:
        keys = np.array([exact_key(ex) for _, _, ex in flat], dtype=np.uint64)
        first = _first_occurrence(keys, group_ids)
        for i in np.flatnonzero(first != np.arange(len(flat))).tolist():
            alive[i] = False
            j = int(first[i])
            removed.append({**_dup_record(flat[i], "exact_duplicate"), "duplicate_of": flat[j][2].id,
                            "duplicate_source": flat[j][1]})
    if config.near and flat:
        removed += _near(flat, alive, config)
    kept: list[tuple[str, list[Example]]] = [(source, []) for source, _ in groups]
    for i, (gi, _, ex) in enumerate(flat):
        if alive[i]:
            kept[gi][1].append(ex)
    return kept, removed


def _dup_record(entry: tuple[int, str, Example], reason: str) -> dict:
    _, source, ex = entry
    row_id, row = _ref(ex)
    return {"id": row_id, "source": source, "row": row, "reason": reason}


def _shingles(text: str, k: int) -> list[bytes]:
    ws = words(text)
    if len(ws) <= k:
        return [" ".join(ws).encode()]
    return [" ".join(ws[i:i + k]).encode() for i in range(len(ws) - k + 1)]


def _near(flat: list[tuple[int, str, Example]], alive: np.ndarray, config: DedupConfig) -> list[dict]:
    from datasketch import MinHash, MinHashLSH

    lshs: dict[int, MinHashLSH] = {}
    hashes: dict[int, MinHash] = {}
    removed = []
    live = np.flatnonzero(alive).tolist()
    for start in range(0, len(live), 1024):
        chunk = live[start:start + 1024]
        # bulk shares one set of permutations across the chunk, which is most of MinHash's set-up cost.
        sketches = MinHash.bulk([_shingles(conversation_text(flat[i][2]), config.shingle) for i in chunk],
                                num_perm=config.num_perm)
        for i, mh in zip(chunk, sketches):
            group = 0 if config.across_sources else flat[i][0]
            # Bands tuned for recall (false negatives weigh 0.9): candidates are confirmed below, so a false positive
            # costs one comparison while a false negative is a duplicate kept.
            lsh = lshs.get(group) or lshs.setdefault(
                group, MinHashLSH(threshold=config.threshold, num_perm=config.num_perm, weights=(0.1, 0.9)))
            # LSH returns candidates; confirm each on the estimated Jaccard so the threshold means what it says.
            best = max(((mh.jaccard(hashes[j]), j) for j in lsh.query(mh)), default=None)
            if best is not None and best[0] >= config.threshold:
                alive[i] = False
                sim, j = best
                removed.append({**_dup_record(flat[i], "near_duplicate"), "duplicate_of": flat[j][2].id,
                                "duplicate_source": flat[j][1], "similarity": round(float(sim), 3)})
            else:
                lsh.insert(i, mh)
                hashes[i] = mh
    return removed


# ---------------------------------------------------------------------------------------------------------------
# The lean path: arrays per source instead of Example objects


@dataclass
class SourceIndex:
    """One pass over a source: per good row its row number, exact key and size; `keep` says which rows survive
    decontamination and dedup. About 25 bytes a row in memory; with a spill file, each row's train-ready line is on
    disk so that exporting a mixture never parses the source again."""

    source: str
    rows: np.ndarray
    keys: np.ndarray
    chars: np.ndarray
    keep: np.ndarray
    removed: list[dict] = field(default_factory=list)
    spill: Path | None = None
    offsets: np.ndarray | None = None  # byte offset of each row's line in `spill`, plus the end
    abilities: np.ndarray | None = None  # per row, an index into ability_names (labels can differ per row)
    ability_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def kept_rows(self) -> np.ndarray:
        """Row numbers (meta["row"]) of the surviving rows, in file order: sample from these."""
        return self.rows[self.keep]

    def positions(self, rows) -> np.ndarray:
        """Positions in this index of the given row numbers (rows are increasing, so a binary search)."""
        rows = np.asarray(rows, dtype=np.int64)
        pos = np.searchsorted(self.rows, rows)
        bad = (pos >= len(self.rows)) | (self.rows[np.minimum(pos, len(self.rows) - 1)] != rows) if len(self.rows) \
            else np.ones(len(rows), dtype=bool)
        if bad.any():
            raise ValueError(f"source {self.source!r} has no row {int(rows[np.flatnonzero(bad)[0]])}")
        return pos


def index_source(
    source: str,
    examples: Iterable[Example],
    eval_index: EvalIndex | None = None,
    batch_size: int = 8192,
    spill: str | Path | None = None,
) -> SourceIndex:
    """Stream a source once (e.g. `formats.iter_examples(path, on_error="skip", report=r)`, optionally through
    `filters.filter_stream`) into a SourceIndex, with contaminated rows already marked removed. With `spill`, every
    row's messages line is written there too, for `export_rows`."""
    rows: list[np.ndarray] = []
    keys: list[np.ndarray] = []
    chars: list[np.ndarray] = []
    keep: list[np.ndarray] = []
    offsets: list[int] = [0]
    abilities: list[np.ndarray] = []
    codes: dict[str, int] = {}
    removed: list[dict] = []
    batch: list[Example] = []
    seen = 0
    out = open(spill, "wb", buffering=1 << 20) if spill is not None else None

    def flush():
        # Rows from files carry their row number; other sources (built-in generators) are numbered by position.
        rows.append(np.array([e.meta.get("row", seen - len(batch) + k) for k, e in enumerate(batch)], dtype=np.int64))
        split = [words(conversation_text(e)) for e in batch]  # once per row, for both the exact key and the n-grams
        keys.append(np.array([_key(ws) for ws in split], dtype=np.uint64))
        chars.append(np.array([sum(len(m["content"]) for m in e.messages) for e in batch], dtype=np.int64))
        abilities.append(np.array([codes.setdefault(e.meta.get("ability", ""), len(codes)) for e in batch],
                                  dtype=np.int32))
        ok = np.ones(len(batch), dtype=bool)
        if eval_index is not None:
            for i, match in enumerate(eval_index.find_words(split)):
                if match is not None:
                    ok[i] = False
                    removed.append(_contam_record(source, *_ref(batch[i]), match))
        keep.append(ok)
        if out is not None:
            end = offsets[-1]
            for e in batch:
                line = orjson.dumps({"messages": e.messages}) + b"\n"
                out.write(line)
                end += len(line)
                offsets.append(end)
        batch.clear()

    try:
        for ex in examples:
            batch.append(ex)
            seen += 1
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    finally:
        if out is not None:
            out.close()

    def cat(parts, dtype):
        return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

    return SourceIndex(source, cat(rows, np.int64), cat(keys, np.uint64), cat(chars, np.int64), cat(keep, bool),
                       removed, Path(spill) if spill is not None else None,
                       np.array(offsets, dtype=np.int64) if spill is not None else None,
                       cat(abilities, np.int32), list(codes))


@dataclass
class SourceScan:
    """Everything one pass over a data file gives the mixture code: the index, the load report (bad rows by kind),
    rows removed by each filter rule and rows per ability after labelling."""

    index: SourceIndex
    report: "LoadReport"
    filtered: dict[str, int]
    abilities: dict[str, int]


def scan_file(
    source: str,
    path: str | Path,
    fmt: str = "auto",
    ability: str = "",
    *,
    filters: list | None = None,
    labels: list | None = None,
    eval_index: EvalIndex | None = None,
    on_error: str = "raise",
    limit: int | None = None,
    spill: str | Path | None = None,
) -> SourceScan:
    """read -> skip/raise bad rows -> filters -> labels -> keys, n-gram check (and spill), in one streaming pass.
    `filters`: list of filters.FilterRule, `labels`: list of filters.LabelRule (SourceConfig's fields)."""
    from collections import Counter

    from .filters import filter_stream, label_stream
    from .formats import LoadReport, iter_examples

    report = LoadReport()
    removed: Counter = Counter()
    counts: Counter = Counter()
    rows: Iterable[Example] = iter_examples(path, fmt, source, ability, limit, on_error, report)
    if filters:
        rows = filter_stream(rows, filters, removed)
    rows = label_stream(rows, labels or [], counts)
    index = index_source(source, rows, eval_index, spill=spill)
    return SourceScan(index, report, dict(removed), dict(counts))


def _scan_job(job: dict) -> SourceScan:
    return scan_file(**job)


def scan_files(jobs: list[dict], eval_index: EvalIndex | None = None, workers: int | None = None) -> list[SourceScan]:
    """`scan_file(**job, eval_index=...)` for each job, one process per file at a time on up to `workers` cores (all
    of them by default), in the order given. Sources are independent until cross-source dedup, so this is where the
    cores pay. Worker processes are forked: an EvalIndex's word hashes are salted per interpreter, and a forked
    child keeps its parent's salt (a spawned one would not). Where fork is missing, the files are scanned in turn."""
    import multiprocessing as mp
    import os
    from concurrent.futures import ProcessPoolExecutor

    jobs = [dict(job, eval_index=eval_index) for job in jobs]
    workers = min(len(jobs), workers or os.cpu_count() or 1)
    if workers <= 1 or "fork" not in mp.get_all_start_methods():
        return [scan_file(**job) for job in jobs]
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
        return list(pool.map(_scan_job, jobs))


def export_rows(parts: Iterable[tuple[SourceIndex, Iterable[int]]], path: str | Path, fmt: str = "messages") -> Path:
    """Write the chosen rows (row numbers, in the order given, so a sampled order is kept) of each spilled index as
    train-ready JSONL, atomically. Messages lines are copied as spilled; alpaca and sharegpt are converted."""
    from .formats import EXPORT_FORMATS, export_line, write_lines

    if fmt not in EXPORT_FORMATS:
        raise DataError(f"cannot export as '{fmt}'; expected one of: {', '.join(EXPORT_FORMATS)}")

    def lines():
        n = 0
        for ix, rows in parts:
            if ix.spill is None or ix.offsets is None:
                raise ValueError(f"source {ix.source!r} was indexed without a spill file")
            pos = ix.positions(list(rows))
            if not len(pos):
                continue
            if not ix.keep[pos].all():
                row = int(ix.rows[pos[np.flatnonzero(~ix.keep[pos])[0]]])
                raise ValueError(f"row {row} of source {ix.source!r} was removed (duplicate or contaminated); "
                                 "export kept rows only")
            with open(ix.spill, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                starts, ends = ix.offsets[pos].tolist(), ix.offsets[pos + 1].tolist()
                for a, b in zip(starts, ends):
                    line = mm[a:b]
                    if fmt != "messages":
                        line = export_line(Example(orjson.loads(line)["messages"]), fmt, n)
                    n += 1
                    yield line

    return write_lines(path, lines())


def dedup_indexes(indexes: list[SourceIndex], config: DedupConfig | None = None) -> list[dict]:
    """Exact dedup across (or within) the indexes in the order given, among rows still kept; marks `keep` in place
    and returns the removal records (ids as `{source}-{row}`). Near-duplicate removal needs the texts: use `dedup`."""
    config = config or DedupConfig()
    if config.near:
        raise ValueError("near-duplicate removal needs the row texts; use dedup() on Examples")
    if not config.exact or not indexes:
        return []
    live = [np.flatnonzero(ix.keep) for ix in indexes]
    keys = np.concatenate([ix.keys[lv] for ix, lv in zip(indexes, live)])
    owner = np.concatenate([np.full(len(lv), g, dtype=np.int64) for g, lv in enumerate(live)])
    local = np.concatenate(live)
    first = _first_occurrence(keys, None if config.across_sources else owner)
    removed = []
    for i in np.flatnonzero(first != np.arange(len(keys))).tolist():
        g, j = int(owner[i]), int(first[i])
        ix, src = indexes[g], indexes[int(owner[j])]
        ix.keep[local[i]] = False
        row, first_row = int(ix.rows[local[i]]), int(src.rows[local[j]])
        removed.append({"id": f"{ix.source}-{row}", "source": ix.source, "row": row, "reason": "exact_duplicate",
                        "duplicate_of": f"{src.source}-{first_row}", "duplicate_source": src.source})
    return removed
