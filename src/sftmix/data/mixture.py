"""Mixtures: which rows of which sources a stage trains on.

Sampling is nested: every source has one seeded permutation and an amount takes a prefix of it, so each point of a
scaling curve is a superset of the one before and differences between points come from data, not from a new draw.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from fractions import Fraction

from .example import Example


def permutation(n: int, seed: int, source: str) -> list[int]:
    # The source name is part of the seed so that two sources of equal size are not shuffled identically.
    rng = random.Random(f"{seed}:{source}")
    order = list(range(n))
    rng.shuffle(order)
    return order


def rows_for(amount: float, unit: str, size: int) -> int:
    if unit == "fraction":
        return int(round(amount * size))
    if unit == "count":
        return int(amount)
    raise ValueError(f"unknown amount unit {unit!r}")


def amount_label(amount: float, unit: str = "fraction") -> str:
    """1/16 reads better than 0.0625 for the power-of-two fractions studies use."""
    if unit == "count":
        return f"{int(amount)} rows"
    f = Fraction(amount).limit_denominator(4096)
    power_of_two = f.denominator & (f.denominator - 1) == 0
    if 0 < amount < 1 and abs(float(f) - amount) < 1e-9 and (f.numerator == 1 or power_of_two):
        return f"{f.numerator}/{f.denominator}"
    return f"{amount:g}"


def nested_take(examples: list[Example], amount: float, unit: str, seed: int, source: str) -> list[Example]:
    """The first rows of the source's seeded permutation; above the source's size it repeats whole passes (upsampling),
    each pass reshuffled with the pass number so repeats are not in lockstep."""
    k = rows_for(amount, unit, len(examples))
    out: list[Example] = []
    epoch = 0
    while len(out) < k:
        order = permutation(len(examples), seed + epoch, source) if epoch else permutation(len(examples), seed, source)
        out.extend(examples[i] for i in order[: k - len(out)])
        epoch += 1
    return out


@dataclass
class Mixture:
    examples: list[Example]
    manifest: dict = field(default_factory=dict)

    @property
    def hash(self) -> str:
        return self.manifest["hash"]

    def __len__(self) -> int:
        return len(self.examples)


def build_mixture(parts, sources: dict[str, list[Example]], unit: str, seed: int) -> Mixture:
    """`parts`: iterable of objects with `.source` and `.amount`."""
    examples: list[Example] = []
    per_source = {}
    for part in parts:
        rows = nested_take(sources[part.source], part.amount, unit, seed, part.source)
        ids = [e.id for e in rows]
        per_source[part.source] = {
            "amount": part.amount,
            "unit": unit,
            "rows": len(rows),
            "unique_rows": len(set(ids)),
            "repeated_rows": len(rows) - len(set(ids)),
            "source_rows": len(sources[part.source]),
            "chars": sum(len(m["content"]) for e in rows for m in e.messages),
        }
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
    return Mixture(examples, manifest)


def manifest_json(mixture: Mixture) -> str:
    return json.dumps(mixture.manifest, indent=1)
