"""Mixtures: which rows of which sources a stage trains on.

Sampling is nested: every source has one seeded permutation and an amount takes a prefix of it, so each point of a
scaling curve is a superset of the one before and differences between points come from data, not from a new draw.
An amount above a source's size repeats whole passes (upsampling, only when the source allows it); pass p > 0 is
its own seeded shuffle, and the repeats are counted in the manifest.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Callable

from ..errors import DataError
from .example import Example


UNITS = ("fraction", "count", "tokens")


@dataclass(frozen=True)
class Part:
    """`amount` of one source in `unit`: a fraction of the source, a row count, or a token budget."""

    source: str
    amount: float
    unit: str = "fraction"

    def scaled(self, k: float) -> "Part":
        # The first k of this part's rows: with nested sampling that is a prefix of the same rows.
        return replace(self, amount=self.amount * k)



def permutation(n: int, seed: int, source: str, npass: int = 0) -> list[int]:
    # The source name is part of the seed so that two sources of equal size are not shuffled identically; the pass
    # number is a separate field of the seed string, so no (seed, pass) pair can collide with another.
    rng = random.Random(f"{seed}:{source}" if npass == 0 else f"{seed}:{source}:pass:{npass}")
    order = list(range(n))
    rng.shuffle(order)
    return order


def amount_label(amount: float, unit: str = "fraction") -> str:
    """1/16 reads better than 0.0625 for the power-of-two fractions studies use."""
    if unit == "count":
        return f"{int(amount)} rows"
    if unit == "tokens":
        return f"{int(amount):,} tokens"
    f = Fraction(amount).limit_denominator(4096)
    power_of_two = f.denominator & (f.denominator - 1) == 0
    if 0 < amount < 1 and abs(float(f) - amount) < 1e-9 and (f.numerator == 1 or power_of_two):
        return f"{f.numerator}/{f.denominator}"
    return f"{amount:g}"


def _order(n: int, k: int, seed: int, source: str):
    """Indices of the first k rows of the source's sampling order: pass 0, then reshuffled passes."""
    npass = 0
    while k > 0:
        order = permutation(n, seed, source, npass)
        yield from order[:k]
        k -= len(order[:k])
        npass += 1


def take(examples: list[Example], part, seed: int, upsample: bool = False,
         count_tokens: Callable[[Example], int] | None = None) -> list[Example]:
    """The rows of `part` (a strategies.Part): a prefix of the source's seeded order."""
    n = len(examples)
    where = f"source {part.source!r}"
    if part.amount < 0:
        raise DataError(f"{where}: amount must be >= 0, got {part.amount:g}")
    if part.amount == 0:
        return []
    if part.unit == "tokens":
        if count_tokens is None:
            raise DataError(f"{where}: a token budget needs the model's tokenizer")
        out, used, budget = [], 0, int(part.amount)
        for i in _order(n, n * (64 if upsample else 1), seed, part.source):
            t = count_tokens(examples[i])
            if used + t > budget:
                break
            out.append(examples[i])
            used += t
        else:
            if not upsample or used < budget:
                raise DataError(f"{where}: a budget of {budget:,} tokens is more than the source holds ({used:,} "
                                f"tokens in {n} rows); set upsample: true on the source to repeat rows")
        if not out:
            raise DataError(f"{where}: a budget of {budget:,} tokens is smaller than its first row")
        return out
    if part.unit == "fraction":
        k = int(round(part.amount * n))
        asked = f"fraction {amount_label(part.amount)} of {n} rows"
    elif part.unit == "count":
        k = int(round(part.amount))
        asked = f"{k} rows"
    else:
        raise DataError(f"{where}: unknown amount unit {part.unit!r}; expected fraction, count or tokens")
    if k == 0:
        raise DataError(f"{where}: {asked} rounds to 0 rows; use a larger amount (or a count)")
    if k > n and not upsample:
        raise DataError(f"{where}: {asked} is more than the source's {n} rows; set upsample: true on the source "
                        "to repeat rows")
    return [examples[i] for i in _order(n, k, seed, part.source)]


def nested_take(examples: list[Example], amount: float, unit: str, seed: int, source: str,
                upsample: bool = True) -> list[Example]:
    return take(examples, Part(source, amount, unit), seed, upsample=upsample)


@dataclass
class Mixture:
    examples: list[Example]
    manifest: dict = field(default_factory=dict)

    @property
    def hash(self) -> str:
        return self.manifest["hash"]

    def __len__(self) -> int:
        return len(self.examples)


def build_mixture(parts, sources: dict[str, list[Example]], seed: int, upsample: set[str] | None = None,
                  count_tokens: Callable[[Example], int] | None = None, prep: dict | None = None,
                  tokenizer: str | None = None) -> Mixture:
    """`parts`: strategies.Part objects; one source may appear in several parts (e.g. DMT's replay of stage-1 data
    is a prefix of the same rows): the rows of all its parts are merged as their union's largest prefix.
    `count_tokens` counts a row's tokens under `tokenizer` (a model name), for token budgets and the manifest.
    `prep` (source -> what loading, filters, dedup and decontamination did) is copied into the manifest."""
    upsample = upsample or set()
    by_source: dict[str, list] = {}
    for part in parts:
        by_source.setdefault(part.source, []).append(part)
    examples: list[Example] = []
    per_source = {}
    for name, ps in by_source.items():
        # Parts of one source are prefixes of one order, so the largest contains the others.
        rows = max((take(sources[name], p, seed, name in upsample, count_tokens) for p in ps), key=len)
        ids = [e.id for e in rows]
        info = {
            "amount": ps[0].amount if len(ps) == 1 else max(p.amount for p in ps),
            "unit": ps[0].unit,
            "rows": len(rows),
            "unique_rows": len(set(ids)),
            "repeated_rows": len(rows) - len(set(ids)),
            "source_rows": len(sources[name]),
            "chars": sum(len(m["content"]) for e in rows for m in e.messages),
        }
        if count_tokens is not None:
            info["tokens"] = sum(count_tokens(e) for e in rows)
        if prep and name in prep:
            info["prep"] = prep[name]
        per_source[name] = info
        examples.extend(rows)
    digest = hashlib.sha256()
    for e in examples:
        digest.update(e.content_hash().encode())
    manifest = {
        "hash": digest.hexdigest()[:16],
        "rows": len(examples),
        "seed": seed,
        "sources": per_source,
        "row_ids": [e.id for e in examples],
    }
    if count_tokens is not None:
        manifest["tokens"] = sum(info["tokens"] for info in per_source.values())
        manifest["tokenizer"] = tokenizer
    return Mixture(examples, manifest)


def manifest_json(mixture: Mixture) -> str:
    return json.dumps(mixture.manifest, indent=1)
