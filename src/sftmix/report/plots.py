"""Scaling curves: one PNG per ability, score vs amount of SFT data."""

from __future__ import annotations

import io
import math
from collections import defaultdict

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator, PercentFormatter

from ..data.mixture import amount_label

RUN_KEYS = ("run_id", "label", "model", "strategy", "sources", "amount", "seed", "train_tokens")


def is_base(row: dict) -> bool:
    # amount 0 cannot sit on a log axis, so it is the base model whatever the strategy says
    return row["strategy"] == "base" or row["amount"] <= 0


def _finite(values) -> list[float]:
    return [v for v in values if v is not None and not math.isnan(v)]


def ability_scores(scores: list[dict]) -> list[dict]:
    """One row per (run, ability): the mean over that ability's tasks, so abilities with several
    benchmarks still give one curve per run. NaN values (failed evaluations) are ignored."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in scores:
        groups[(row["run_id"], row["ability"])].append(row)
    out = []
    for (_, ability), rows in groups.items():
        vals = _finite(r["value"] for r in rows)
        out.append({**{k: rows[0].get(k) for k in RUN_KEYS}, "ability": ability,
                    "value": float(np.mean(vals)) if vals else math.nan,
                    "tasks": sorted({r["task"] for r in rows})})
    return out


def scaling_png(runs: list[dict], ability: str) -> bytes:
    """`runs` are ability_scores() rows for one ability. Returns PNG bytes."""
    # A bare Figure + Agg canvas keeps pyplot's global state (and its open-figure list) out of it:
    # nothing to close, nothing leaks when many reports are written in one process.
    fig = Figure(figsize=(7.0, 4.2), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()

    curves: dict[tuple, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    bases: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        if is_base(r):
            bases[r["model"]].append(r["value"])
        else:
            curves[(r["model"], r["strategy"], r["sources"])][r["amount"]].append(r["value"])
    models = sorted({r["model"] for r in runs})
    # colour tells the data recipe apart, marker the model, so the same recipe reads alike across models
    recipes = sorted({(strategy, sources) for _, strategy, sources in curves})
    markers = "osD^vP*X"

    amounts: set[float] = set()
    for (model, strategy, sources), by_amount in sorted(curves.items()):
        pts = [(a, _finite(v)) for a, v in sorted(by_amount.items())]
        pts = [(a, v) for a, v in pts if v]
        if not pts:
            continue
        xs = [a for a, _ in pts]
        amounts.update(xs)
        name = " ".join(s for s in (model if len(models) > 1 else "", strategy, sources) if s)
        color = f"C{recipes.index((strategy, sources)) % 10}"
        ax.plot(xs, [np.mean(v) for _, v in pts], marker=markers[models.index(model) % len(markers)],
                color=color, label=name)
        if any(len(v) > 1 for _, v in pts):
            ax.fill_between(xs, [min(v) for _, v in pts], [max(v) for _, v in pts],
                            color=color, alpha=0.2, linewidth=0)
    for j, (model, vals) in enumerate(sorted(bases.items())):
        vals = _finite(vals)
        if vals:
            ax.axhline(np.mean(vals), linestyle="--", linewidth=1.2,
                       color=str(0.15 + 0.2 * (j % 4)), label=f"base {model}")

    if amounts:
        ax.set_xscale("log", base=2)
        ticks = sorted(amounts)
        ax.set_xticks(ticks, labels=[amount_label(a) for a in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
    else:
        ax.set_xticks([])
    # decimals=None: the formatter picks as many as the tick spacing needs, so 42.5% is never labelled "42%".
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
    tasks = sorted({t for r in runs for t in r["tasks"]})
    ax.set_title(f"{ability}: " + (tasks[0] if len(tasks) == 1 else "mean of " + ", ".join(tasks)))
    ax.set_xlabel("fraction of each source used (log scale)")
    ax.set_ylabel("score")
    ax.grid(True, alpha=0.3)
    n_entries = len(ax.get_legend_handles_labels()[0])
    if n_entries > 6:  # a legend this long would hide the curves: move it out and widen the figure
        fig.set_figwidth(10.0)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    elif n_entries:
        ax.legend(fontsize=8)

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def loss_curves_png(stages: list[dict]) -> bytes:
    """Training loss per optimizer step of every stage (`stages`: store rows with `info` parsed), smoothed over a
    window of a tenth of the steps so the trend reads through the step-to-step noise."""
    fig = Figure(figsize=(7.0, 4.2), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, st in enumerate(stages):
        loss = [x for x in (st.get("info") or {}).get("loss") or [] if x is not None]
        if not loss:
            continue
        w = max(1, len(loss) // 10)
        smooth = np.convolve(loss, np.ones(w) / w, mode="valid") if len(loss) > w else np.asarray(loss)
        ax.plot(np.arange(len(smooth)) + w, smooth, color=f"C{i % 10}", linewidth=1.4,
                label=f"{st['name']} ({st['stage_id'][:8]})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (assistant tokens)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    n = len(ax.get_legend_handles_labels()[0])
    if n > 8:
        fig.set_figwidth(10.0)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    elif n:
        ax.legend(fontsize=8)
    return _png(fig)


def forgetting_png(rows: list[dict], ability: str) -> bytes:
    """Score of one ability after every stage (0 = before SFT) of each multi-stage run: what later stages forget."""
    fig = Figure(figsize=(7.0, 4.2), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    by_run: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_run[r["label"]][int(r["stage_index"])].append(r["value"])
    top = 0
    for i, (label, pts) in enumerate(sorted(by_run.items())):
        xs = sorted(pts)
        top = max(top, xs[-1])
        ax.plot(xs, [np.mean(_finite(pts[x]) or [math.nan]) for x in xs], marker="o", color=f"C{i % 10}", label=label)
    ax.set_xticks(range(top + 1), labels=["base"] + [f"after stage {k}" for k in range(1, top + 1)])
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
    ax.set_title(f"{ability} after each stage")
    ax.set_ylabel("score")
    ax.grid(True, alpha=0.3)
    if by_run:
        ax.legend(fontsize=8)
    return _png(fig)
