"""`sftmix recommend`: what to train next within a budget, from a finished study's own runs.

The model, stated in every recommendation:
- Each ability's score is a function of how much data of its own sources (the sources labelled with that ability) a
  multi-task mixture holds, fitted as a + b·ln(n) over the study's multi-task runs. An ability no source is labelled
  with (a reasoning suite, say) is fitted against the mixture's total. Below the smallest amount measured the base
  model's score is the floor; n = 0 is the base model.
- A multi-stage strategy (sequential, mixed sequential, DMT) adds its difference from multi-task, paired on the same
  items, measured at the largest amount where both were run.
- The budget counts distinct rows (or tokens) per source: the data to collect. DMT's replay reuses rows it has.
- Uncertainty: everything above is recomputed on bootstrap resamples of the items (one draw per replicate, shared by
  every run), which gives a 95% interval for each predicted score and for the weighted total.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from ..errors import SftmixError
from . import analysis
from .stats import ALPHA, Fit, fit_log

REFERENCE = "multitask"
NOT_CANDIDATES = {"base", "single", ""}


@dataclass
class Candidate:
    strategy: str
    allocation: dict[str, int]  # source -> rows (or tokens)
    predicted: dict[str, tuple[float, float, float]]  # ability -> (point, lo, hi)
    total: tuple[float, float, float]
    extrapolated: list[str] = field(default_factory=list)  # sources beyond the largest amount measured
    rests_on: list[str] = field(default_factory=list)  # run labels


def parse_weights(text: str | None, abilities: list[str]) -> dict[str, float]:
    out = {a: 1.0 for a in abilities}  # an ability not named keeps weight 1
    if not text:
        return out
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise SftmixError(f"--weights: expected ABILITY=NUMBER[,ABILITY=NUMBER...], got {part!r}")
        if name not in abilities:
            raise SftmixError(f"--weights: the study has no ability {name!r}; it has {', '.join(abilities)}")
        try:
            w = float(value)
        except ValueError:
            raise SftmixError(f"--weights: {name}={value!r} is not a number") from None
        if w < 0 or not math.isfinite(w):
            raise SftmixError(f"--weights: {name} must be a finite number >= 0, got {value}")
        out[name] = w
    if not any(out.values()):
        raise SftmixError("--weights: at least one weight must be above 0")
    return out


def run_sizes(runs: list[dict], manifests: dict[str, dict], unit: str) -> dict[str, dict[str, int]]:
    """run_id -> source -> distinct rows (or tokens) over the run's stages. Stages draw prefixes of one order per
    source, so the largest stage's share is the run's distinct data."""
    key = "rows" if unit == "rows" else "tokens"
    out = {}
    for r in runs:
        sizes: dict[str, int] = {}
        for sid in r["stages"]:
            for src, info in (manifests.get(sid) or {}).get("sources", {}).items():
                if key == "rows":
                    n = info.get("unique_rows", info.get("rows"))
                else:  # tokens of the distinct rows: an upsampled source's repeats are not data to collect
                    t, rows = info.get("tokens"), info.get("rows") or 0
                    n = None if t is None else (t * info.get("unique_rows", rows) / rows if rows else 0)
                if n is None:
                    raise SftmixError(f"stage {sid}: its manifest has no {key} count for {src}; rerun `sftmix run` "
                                      f"to rebuild manifests, or use --unit rows")
                sizes[src] = max(sizes.get(src, 0), int(n))
        out[r["run_id"]] = sizes
    return out


def _compositions(total: int, k: int):
    """Every way to write `total` as k non-negative integers, in order."""
    if k == 1:
        yield (total,)
        return
    for first in range(total + 1):
        for rest in _compositions(total - first, k - 1):
            yield (first, *rest)


def _allocations(sources: list[str], budget: int, caps: dict[str, int], steps: int):
    """Every split of the budget over the sources in 1/steps parts, each source capped at what it has."""
    for combo in _compositions(steps, len(sources)):
        parts = [budget * k // steps for k in combo]
        parts[combo.index(max(combo))] += budget - sum(parts)  # whole rows that add up to the budget exactly
        yield {s: min(caps[s], n) for s, n in zip(sources, parts)}


def recommend(scores: list[dict], items: list[dict], runs: list[dict], manifests: dict[str, dict],
              source_ability: dict[str, str], budget: int, weights: dict[str, float] | None = None,
              unit: str = "rows", model: str | None = None, n_boot: int = 200, steps: int = 20,
              seed: int = 0) -> dict:
    if budget <= 0:
        raise SftmixError(f"--budget must be a positive number of {unit}, got {budget}")
    table = analysis.item_table(items)
    tasks = analysis._ability_tasks(scores)
    weights = weights or {a: 1.0 for a in tasks}
    models = list(dict.fromkeys(r["model"] for r in runs))  # the study's order: "the first" is its first
    if model is None:
        model = models[0]
    elif model not in models:
        raise SftmixError(f"--model: the study has no model {model!r}; it has {', '.join(models)}")
    runs = [r for r in runs if r["model"] == model]
    sizes = run_sizes(runs, manifests, unit)
    label = {r["run_id"]: r["label"] for r in runs}
    evaluated = {r["run_id"] for r in scores}
    mt = [r for r in runs if r["strategy"] == REFERENCE and len(r["stages"]) == 1 and r["run_id"] in evaluated]
    if len({sum(sizes[r["run_id"]].values()) for r in mt}) < 2:
        raise SftmixError(f"recommend fits each ability's score against its data over the study's {REFERENCE} runs; "
                          f"this study has {len(mt)} of them at {len({sum(sizes[r['run_id']].values()) for r in mt})} "
                          f"amount(s), and needs two amounts or more")
    sources = sorted({s for r in mt for s in sizes[r["run_id"]]})
    caps = {s: _cap(s, manifests, unit) for s in sources}
    own = {a: [s for s in sources if source_ability.get(s, s) == a] for a in weights}
    base = next((r for r in runs if r["strategy"] == "base"), None)

    def x_of(alloc: dict[str, int], ability: str) -> float:
        return float(sum(alloc.get(s, 0) for s in (own[ability] or sources)))

    # Item matrices per ability: [runs, items] over the items every run involved shares, so one bootstrap draw of
    # columns resamples the fits and the strategies' paired differences together.
    others = [r for r in runs if r["strategy"] not in NOT_CANDIDATES | {REFERENCE} and r["run_id"] in evaluated]
    pairs: dict[str, list[tuple[dict, dict]]] = {}
    for r in others:
        ref = _reference_for(r, mt, sizes)
        if ref is not None:
            pairs.setdefault(_strategy_name(r), []).append((r, ref))
    ids = [r["run_id"] for r in mt] + ([base["run_id"]] if base else [])
    ids += [r["run_id"] for plist in pairs.values() for r, _ in plist if r["run_id"] not in ids]
    row = {rid: i for i, rid in enumerate(ids)}
    mats = {}
    for a in weights:
        m = analysis._ability_items(table, ids, tasks.get(a, []))
        if m is None:
            raise SftmixError(f"ability {a!r}: no items shared by the runs this rests on; is it evaluated in this study?")
        mats[a] = m
    # the largest amount where each strategy and multi-task were both run; every seed pair there
    pair = {}
    for name, plist in pairs.items():
        top = max(sum(sizes[ref["run_id"]].values()) for _, ref in plist)
        pair[name] = [(r, ref) for r, ref in plist if sum(sizes[ref["run_id"]].values()) == top]

    def predictors(cols: dict[str, np.ndarray] | None):
        """ability -> (fit, floor, smallest x) for multi-task, and strategy -> ability -> paired difference from it;
        on resampled item columns if given."""
        fs, offs = {}, {}
        for a, m in mats.items():
            y = (m if cols is None else m[:, cols[a]]).mean(axis=1)
            xs = [x_of(sizes[r["run_id"]], a) for r in mt]
            ys = y[: len(mt)]
            # an ability whose own data never varied (held fixed in a ratio design) gets its mean, flat
            fit = fit_log(xs, ys) if len(set(xs)) > 1 else Fit("log", (float(np.mean(ys)), 0.0), 0.0)
            fs[a] = (fit, float(y[row[base["run_id"]]]) if base else 0.0, min(xs))
            for name, plist in pair.items():
                offs.setdefault(name, {})[a] = float(np.mean([y[row[r["run_id"]]] - y[row[ref["run_id"]]]
                                                              for r, ref in plist]))
        return fs, offs

    def predict(fs, alloc, a) -> float:
        fit, floor, lo_x = fs[a]
        x = x_of(alloc, a)
        if x <= 0:
            return floor
        v = float(fit.predict([x])[0])
        if x < lo_x:
            v = max(v, floor)
        return min(1.0, max(0.0, v))

    def weighted(vals: dict[str, float]) -> float:
        return sum(weights[a] * vals[a] for a in weights) / sum(weights.values())

    fs0, offs0 = predictors(None)
    best = None
    for alloc in _allocations(sources, budget, caps, steps):
        # ties (an ability weighted 0) go to the split that uses more of the budget
        v = (round(weighted({a: predict(fs0, alloc, a) for a in weights}), 9), sum(alloc.values()))
        if best is None or v > best[0]:
            best = (v, alloc)
    alloc = best[1]

    rng = np.random.default_rng(seed)
    n_items = {a: m.shape[1] for a, m in mats.items()}
    boot: dict[str, list[dict[str, float]]] = defaultdict(list)
    for _ in range(n_boot):
        cols = {a: rng.integers(0, n, size=n) for a, n in n_items.items()}
        fs, offs = predictors(cols)
        base_pred = {a: predict(fs, alloc, a) for a in weights}
        boot[REFERENCE].append(base_pred)
        for name, off in offs.items():
            boot[name].append({a: min(1.0, max(0.0, base_pred[a] + off[a])) for a in weights})

    max_x = {a: max(x_of(sizes[r["run_id"]], a) for r in mt) for a in weights}
    extrap = sorted({s for a in weights for s in (own[a] or sources) if x_of(alloc, a) > max_x[a] * (1 + 1e-9)})
    mt_labels = [label[r["run_id"]] for r in mt] + ([label[base["run_id"]]] if base else [])
    cands = []
    point0 = {a: predict(fs0, alloc, a) for a in weights}
    for name in [REFERENCE, *offs0]:
        point = point0 if name == REFERENCE else {a: min(1.0, max(0.0, point0[a] + offs0[name][a])) for a in weights}
        draws = boot[name]
        pred = {a: (point[a], *_interval([d[a] for d in draws])) for a in weights}
        total = (weighted(point), *_interval([weighted(d) for d in draws]))
        rests = list(mt_labels)
        if name != REFERENCE:
            rests += [f"{label[r['run_id']]} vs {label[ref['run_id']]} (paired)" for r, ref in pair[name]]
        cands.append(Candidate(name, dict(alloc), pred, total, extrap, rests))
    cands.sort(key=lambda c: -c.total[0])
    clear = True
    if len(cands) > 1:
        # the same item draws under every candidate: the interval of their difference decides
        first, second = (np.array([weighted(d) for d in boot[c.strategy]]) for c in cands[:2])
        clear = bool(np.quantile(first - second, ALPHA / 2) > 0)
    items_behind = {a: int(mats[a].shape[1]) for a in weights}
    return {"model": model, "budget": budget, "unit": unit, "weights": weights, "candidates": cands,
            "items": items_behind,
            "fits": {a: fs0[a][0].formula() if fs0[a][0].params[1] else f"{fs0[a][0].params[0]:.3f} (its data never "
                        "varied across the runs: flat)" for a in weights},
            "unused": budget - sum(alloc.values()), "capped": [s for s in sources if alloc[s] >= caps[s]],
            "left_out": sorted({_strategy_name(r) for r in others} - set(pairs)), "clear": clear}


def _cap(source: str, manifests: dict, unit: str) -> int:
    """What a source has: its rows, or in tokens its rows times the tokens per row seen in the study's mixtures."""
    best = 0
    for m in manifests.values():
        info = (m.get("sources") or {}).get(source)
        if not info or not info.get("source_rows"):
            continue
        if unit == "rows":
            best = max(best, info["source_rows"])
        elif info.get("tokens") and info.get("rows"):
            best = max(best, int(info["source_rows"] * info["tokens"] / info["rows"]))
    return best or 10**18


def _interval(vals: list[float]) -> tuple[float, float]:
    lo, hi = np.quantile(vals, [ALPHA / 2, 1 - ALPHA / 2])
    return float(lo), float(hi)


def _strategy_name(run: dict) -> str:
    return analysis._recipe(analysis._SEED.sub("", run["label"]))


def _reference_for(run: dict, mt: list[dict], sizes: dict) -> dict | None:
    """The multi-task run with the same data as `run` (same distinct rows per source), else None."""
    want = sizes[run["run_id"]]
    return next((r for r in mt if sizes[r["run_id"]] == want and r["seed"] == run["seed"]), None)


def render(rec: dict) -> str:
    """The recommendation as text: the best candidate first, then the others, then what it rests on."""
    unit, weights = rec["unit"], rec["weights"]
    abilities = list(weights)
    lines = [f"Budget {rec['budget']:,} {unit} on {rec['model']}; weights "
             + ", ".join(f"{a}={w:g}" for a, w in weights.items()) + "."]
    top = rec["candidates"][0]
    alloc = ", ".join(f"{s} {n:,}" for s, n in top.allocation.items())
    lines.append(f"Recommended: {top.strategy} with {alloc} {unit}.")
    if top.extrapolated:
        lines.append(f"  Beyond the largest amount the study measured for {', '.join(top.extrapolated)}: "
                     "an extrapolation of the fit, not a measurement.")
    if rec["unused"] > 0:
        lines.append(f"  {rec['unused']:,} {unit} of the budget are left unspent: "
                     f"{', '.join(rec['capped']) or 'no source'} has no more data.")
    if not rec["clear"]:
        second = rec["candidates"][1]
        lines.append(f"  Not clearly better than {second.strategy}: the 95% interval of the difference in weighted "
                     "score includes 0.")
    if rec["left_out"]:
        lines.append(f"  Left out: {', '.join(rec['left_out'])} (no multitask run on the same data to pair with).")
    lines.append("")
    header = f"{'strategy':<22}" + "".join(f"{a:>24}" for a in abilities) + f"{'weighted':>24}"
    lines.append(header)
    for c in rec["candidates"]:
        cells = "".join(f"{_ci(c.predicted[a]):>24}" for a in abilities)
        lines.append(f"{c.strategy:<22}{cells}{_ci(c.total):>24}")
    lines.append("")
    lines.append("Predicted score % [95% interval]. Items behind each ability: "
                 + ", ".join(f"{a} {n}" for a, n in rec["items"].items()) + ".")
    lines.append("Fits (x = " + unit + " of the ability's own sources): "
                 + "; ".join(f"{a}: {f}" for a, f in rec["fits"].items()) + ".")
    lines.append("Rests on: " + "; ".join(top.rests_on) + ".")
    for c in rec["candidates"][1:]:
        extra = [x for x in c.rests_on if x not in top.rests_on]
        if extra:
            lines.append(f"  {c.strategy}: also " + "; ".join(extra) + ".")
    return "\n".join(lines)


def _ci(t: tuple[float, float, float]) -> str:
    return f"{100 * t[0]:.1f} [{100 * t[1]:.1f}, {100 * t[2]:.1f}]"


def to_json(rec: dict) -> dict:
    return {**{k: v for k, v in rec.items() if k != "candidates"},
            "candidates": [{"strategy": c.strategy, "allocation": c.allocation,
                            "predicted": {a: dict(zip(("score", "lo", "hi"), v)) for a, v in c.predicted.items()},
                            "weighted": dict(zip(("score", "lo", "hi"), c.total)),
                            "extrapolated": c.extrapolated, "rests_on": c.rests_on} for c in rec["candidates"]]}
