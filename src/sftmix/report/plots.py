"""The report's figures. Each builder returns a matplotlib Figure (files.save_figure writes it as PNG and SVG).

Points carry 95% bootstrap intervals (views.Point.est): drawn as bars with a light band between them; a point
without item data has no interval and is drawn bare."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator, PercentFormatter

from ..data.mixture import amount_label

RUN_KEYS = ("run_id", "label", "model", "strategy", "sources", "amount", "seed", "train_tokens")


def is_base(row: dict) -> bool:
    # amount 0 cannot sit on a log axis, so it is the base model whatever the strategy says (a 0% share of a mix
    # design is a trained run, though)
    return row["strategy"] == "base" or (row["amount"] <= 0 and (row.get("axis") or "amount") == "amount")


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


def loss_curves(stages: list[dict]) -> Figure:
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
    return fig


# ------------------------------------------------------------------------------------ lines with their intervals

MARKERS = "osD^vP*X"


def _new(ncols: int = 1, width: float = 7.0, height: float = 4.2):
    # A bare Figure + Agg canvas keeps pyplot's global state (and its open-figure list) out of it:
    # nothing to close, nothing leaks when many reports are written in one process.
    fig = Figure(figsize=(width if ncols == 1 else 4.6 * ncols + 1.0, height), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _draw(ax, line, color: str, label: str, marker: str = "o", linestyle: str = "-") -> None:
    """The line through its points' means, a bar and a light band over each 95% interval."""
    pts = line.points
    xs = [p.x for p in pts]
    ys = [p.est.mean for p in pts]
    ax.plot(xs, ys, marker=marker, color=color, label=label, linestyle=linestyle, markersize=5)
    known = [p for p in pts if math.isfinite(p.est.lo) and math.isfinite(p.est.hi)]
    if known:
        kx = [p.x for p in known]
        km = [p.est.mean for p in known]
        below = [max(0.0, p.est.mean - p.est.lo) for p in known]
        above = [max(0.0, p.est.hi - p.est.mean) for p in known]
        ax.errorbar(kx, km, yerr=[below, above], fmt="none", ecolor=color, capsize=3, linewidth=1)
        if len(known) > 1:
            ax.fill_between(kx, [p.est.lo for p in known], [p.est.hi for p in known], color=color, alpha=0.12,
                            linewidth=0)


def _short(x: float, unit: str) -> str:
    if unit == "fraction":
        return amount_label(x)
    return f"{x:,.0f}" if unit == "tokens" else f"{x:g}"


def _log_axis(ax, xs, unit: str) -> None:
    if not xs:
        ax.set_xticks([])
        return
    ax.set_xscale("log", base=2 if unit == "fraction" else 10)
    ticks = sorted(set(xs))
    ax.set_xticks(ticks, labels=[_short(x, unit) for x in ticks])
    ax.xaxis.set_minor_locator(NullLocator())


def _finish(fig, axes, max_entries: int = 6) -> Figure:
    for ax in axes:
        # decimals=None: the formatter picks as many as the tick spacing needs, so 42.5% is never labelled "42%".
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
        ax.grid(True, alpha=0.3)
        n = len(ax.get_legend_handles_labels()[0])
        if n > max_entries:  # a legend this long would hide the lines: beside the axes, the figure wider
            fig.set_figwidth(fig.get_figwidth() + 3.0)
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        elif n:
            ax.legend(fontsize=8)
    return fig


UNIT_WORDS = {"fraction": "fraction of each source used", "count": "rows of each source",
              "tokens": "tokens of each source"}


def rq1_figure(view: dict, ability: str, tasks: list[str], unit: str = "fraction") -> Figure:
    """Score against amount for one ability: a line per (model, recipe), colour for the recipe and marker for the
    model, so a recipe reads alike across models; the base models dashed, with their interval shaded."""
    fig, (ax,) = _new()
    lines = [ln for ln in view["lines"] if ln.ability == ability]
    models = sorted({ln.group for ln in lines} | {m for m, a in view["bases"] if a == ability})
    recipes = sorted({ln.name for ln in lines})
    xs = []
    for ln in sorted(lines, key=lambda ln: (ln.group, ln.name)):
        label = f"{ln.group}: {ln.name}" if len(models) > 1 else ln.name
        _draw(ax, ln, f"C{recipes.index(ln.name) % 10}", label, MARKERS[models.index(ln.group) % len(MARKERS)])
        xs += [p.x for p in ln.points]
    for j, model in enumerate(models):
        est = view["bases"].get((model, ability))
        if est is None:
            continue
        grey = str(0.15 + 0.2 * (j % 4))
        ax.axhline(est.mean, linestyle="--", linewidth=1.2, color=grey, label=f"base {model}")
        if math.isfinite(est.lo) and math.isfinite(est.hi):
            ax.axhspan(est.lo, est.hi, color=grey, alpha=0.08, linewidth=0)
    _log_axis(ax, xs, unit)
    ax.set_title(f"{ability}: " + (tasks[0] if len(tasks) == 1 else "mean of " + ", ".join(tasks)))
    ax.set_xlabel(f"{UNIT_WORDS.get(unit, 'amount')} (log scale)")
    ax.set_ylabel("score (95% interval)")
    return _finish(fig, [ax])


def lines_figure(panels: list[tuple[str, list]], xlabel: str, unit: str | None = None, title: str = "",
                 ticks: dict | None = None) -> Figure:
    """Panels of lines against one x: `unit` puts x on a log scale labelled as amounts; without it x is a share
    (0..1, shown as %), or positions labelled by `ticks`. A line whose level is "overall" is drawn black, dashed."""
    fig, axes = _new(len(panels))
    for ax, (name, lines) in zip(axes, panels):
        xs = []
        for i, ln in enumerate(lines):
            overall = ln.level == "overall"
            _draw(ax, ln, "black" if overall else f"C{i % 10}", ln.name, "s" if overall else "o",
                  "--" if overall else "-")
            xs += [p.x for p in ln.points]
        if unit:
            _log_axis(ax, xs, unit)
        elif ticks:
            ax.set_xticks(sorted(ticks), labels=[ticks[k] for k in sorted(ticks)])
        else:
            ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
            ax.set_xticks(sorted(set(xs)))
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("score (95% interval)")
    if title:
        fig.suptitle(title)
    return _finish(fig, axes, max_entries=8)


def heatmap_figure(entry: dict) -> Figure:
    """A map per ability over two sources' amounts (views.ratio, kind "grid"), each cell's text its score (%)."""
    a, b, unit = entry["a"], entry["b"], entry["unit"]
    abilities = sorted(entry["cells"])
    fig, axes = _new(len(abilities), height=4.0)
    for ax, ability in zip(axes, abilities):
        cells = entry["cells"][ability]
        grid = np.full((len(entry["a_values"]), len(entry["b_values"])), np.nan)
        for (x, y), p in cells.items():
            grid[entry["a_values"].index(x), entry["b_values"].index(y)] = p.est.mean
        lo, hi = float(np.nanmin(grid)), float(np.nanmax(grid))
        hi = hi if hi > lo else lo + 1e-6
        im = ax.imshow(grid, origin="lower", cmap="viridis", vmin=lo, vmax=hi, aspect="auto")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if np.isfinite(grid[i, j]):
                    dark = (grid[i, j] - lo) / (hi - lo) < 0.55  # viridis is dark at its low end
                    ax.text(j, i, f"{100 * grid[i, j]:.1f}", ha="center", va="center", fontsize=9,
                            color="white" if dark else "black")
        ax.set_xticks(range(len(entry["b_values"])), labels=[_short(v, unit) for v in entry["b_values"]])
        ax.set_yticks(range(len(entry["a_values"])), labels=[_short(v, unit) for v in entry["a_values"]])
        ax.set_xlabel(f"{b} amount")
        ax.set_ylabel(f"{a} amount")
        ax.set_title(ability, fontsize=10)
        fig.colorbar(im, ax=ax, format=PercentFormatter(xmax=1.0, decimals=None), shrink=0.85)
    fixed = ", ".join(f"{s} {_short(v, unit)}" for s, v in entry["fixed"].items())
    fig.suptitle(f"{entry['recipe']}: score (%) over {a} x {b}" + (f", {fixed} fixed" if fixed else ""))
    return fig
