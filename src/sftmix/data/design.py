"""Data designs: the grid of cells a study trains on. A cell says how much of each source one run gets.

    amounts: [1/16, 1/4, 1]                 same amount of every source                     (DMT RQ1/RQ2)
    amounts: {general: [1], math: [...]}    per-source lists, cross product or `combine: zip` (DMT RQ3)
    mix: {total: 4000, shares: {code: [0, 0.25, 0.5]}, rest: equal}
                                            fixed total, one source's share varies          (Zhang et al.)
    pool: {totals: [200000, 600000]}        the union scaled as a whole, its composition kept (BELLE)

Every design only ever asks each source for an amount; rows come from `mixture.take`, so along any axis a smaller
amount of a source is a prefix of that source's one seeded permutation.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from .mixture import Part, amount_label


@dataclass(frozen=True)
class Cell:
    parts: dict  # source -> Part, in the study's source order
    label: str  # how the report names this cell, e.g. "1/4", "math 1/16 + code 1/16 + general 1", "code 25%"
    axis: str  # what the cell varies along: "amount", a source's name, "code share", "total"
    x: float  # the value along that axis (for curves)

    def restrict(self, names: list[str]) -> "Cell":
        parts = {n: self.parts[n] for n in names if n in self.parts}
        return Cell(parts, self.label, self.axis, self.x)


def grid(names: list[str], amounts: list[float], unit: str) -> list[Cell]:
    return [Cell({n: Part(n, a, unit) for n in names}, amount_label(a, unit), "amount", a) for a in amounts]


def per_source(names: list[str], amounts: dict[str, list[float]], unit: str, combine: str) -> list[Cell]:
    lists = [amounts[n] for n in names]
    if combine == "zip":  # a one-value list is held fixed beside the lists that vary together
        length = max(len(v) for v in lists)
        combos = list(zip(*(v * length if len(v) == 1 else v for v in lists)))
    else:
        combos = list(itertools.product(*lists))
    varying = [n for n in names if len(amounts[n]) > 1]
    axis = varying[0] if len(varying) == 1 else "+".join(varying) if combine == "zip" else "amount"
    cells = []
    for combo in combos:
        parts = {n: Part(n, a, unit) for n, a in zip(names, combo)}
        label = " + ".join(f"{n} {amount_label(a, unit)}" for n, a in zip(names, combo))
        x = combo[names.index(varying[0])] if varying else combo[0]
        cells.append(Cell(parts, label, axis, x))
    return cells


def shares(names: list[str], sizes: dict[str, int], total: float, vary: dict[str, list[float]], rest: str,
           unit: str) -> list[Cell]:
    """Fixed total; the varied sources take their shares, the others split what is left (`rest`: equal, or in
    proportion to their sizes). Amounts are row counts (or token budgets with unit tokens)."""
    varied = list(vary)
    others = [n for n in names if n not in vary]
    cells = []
    for combo in zip(*(vary[n] for n in varied)):
        left = 1.0 - sum(combo)
        part_share = dict(zip(varied, combo))
        if others:
            weights = {n: (sizes[n] if rest == "proportional" else 1.0) for n in others}
            tot = sum(weights.values())
            part_share.update({n: left * w / tot for n, w in weights.items()})
        parts = {n: Part(n, round(total * part_share[n]), unit) for n in names if round(total * part_share[n]) > 0}
        label = ", ".join(f"{n} {100 * s:g}%" for n, s in zip(varied, combo))
        cells.append(Cell(parts, label, f"{'+'.join(varied)} share", combo[0]))
    return cells


def pool(names: list[str], sizes: dict[str, int], totals: list[float], unit: str) -> list[Cell]:
    """The union of `names` scaled to each total, each source contributing in proportion to its size."""
    union = sum(sizes[n] for n in names)
    cells = []
    for t in totals:
        parts = {n: Part(n, round(t * sizes[n] / union) if unit == "count" else t * sizes[n] / union, unit)
                 for n in names}
        parts = {n: p for n, p in parts.items() if p.amount > 0}
        cells.append(Cell(parts, amount_label(t, unit) + " pooled", "total", t))
    return cells
