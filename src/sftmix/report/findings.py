"""The report's findings in sentences, and the few formats every table and sentence share.

Every sentence names the items and seeds behind it and says whether the difference it reports is significant (p
after Holm's correction over the comparisons of its table), in words: a difference that is not significant is
called so. A point without item rows is the stored score alone and says that it has no interval.
"""

from __future__ import annotations

import math
from collections import defaultdict

from ..data.mixture import amount_label
from .stats import ALPHA

MARK = "*"


def legend(n: int) -> str:
    return (f"{MARK} significant at the {ALPHA:.0%} level after Holm's correction over the {n} comparison"
            f"{'' if n == 1 else 's'} of this table; differences are paired on the same items (points).")


def pct(est) -> str:
    """"20.0% [12.1, 29.3]"; "20.0%" when there is no interval (no item rows)."""
    if est is None or math.isnan(est.mean):
        return "–"
    if math.isnan(est.lo) or math.isnan(est.hi):
        return f"{100 * est.mean:.1f}%"
    return f"{100 * est.mean:.1f}% [{100 * est.lo:.1f}, {100 * est.hi:.1f}]"


def cell(est, cmp=None, p=None) -> str:
    """A table cell: the score with its interval, and the compared difference (points) with its mark."""
    text = pct(est).replace("%", "")
    if cmp is not None:
        text += f" ({100 * cmp.diff:+.1f}{' ' + MARK if significant(p) else ''})"
    return text


def significant(p) -> bool:
    return p is not None and p < ALPHA


def pval(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def basis(items: int, seeds: int) -> str:
    s = f"{seeds} seed{'' if seeds == 1 else 's'}"
    return f"stored scores only, no interval, {s}" if not items else f"{items} items, {s}"


def verdict(cmp, p, family: int, items: int, seeds: int, gap: bool = False) -> str:
    """"+12.5 points, significant (p=0.01 after Holm over 6 comparisons; 40 items, 1 seed)", or "not significant";
    `gap`: the size of the difference only ("12.5 points apart"), where the sentence has said which side is higher."""
    if cmp is None:
        return f"not tested ({basis(items, seeds)})"
    size = f"{abs(100 * cmp.diff):.1f} points apart" if gap else f"{100 * cmp.diff:+.1f} points"
    word = "significant" if significant(p) else "not significant"
    return (f"{size}, {word} ({pval(p)} after Holm over {family} comparison{'' if family == 1 else 's'}; "
            f"{basis(items, seeds)})")


def _seeds(*points) -> int:
    return min(p.est.seeds for p in points)


def _along(subject: str, line, family: int, where: str) -> str:
    """First point against last: "math rises from 20.0% [..] at 1/16 to 90.0% [..] at 1 (single math): +70.0
    points, significant (p=... after Holm over 6 comparisons; 40 items, 1 seed)"."""
    first, last = line.points[0], line.points[-1]
    d = last.cmp.diff if last.cmp is not None else last.est.mean - first.est.mean
    verb = "rises from" if d > 0 else "falls from" if d < 0 else "is"
    link = "and" if d == 0 else "to"
    return (f"{subject} {verb} {pct(first.est)} at {first.label} {link} {pct(last.est)} at {last.label} ({where}): "
            f"{verdict(last.cmp, last.p, family, last.est.items, _seeds(first, last))}")


def _family(points) -> int:
    return sum(1 for p in points if p.cmp is not None)


def rq1(view: dict, fits: list[dict]) -> list[str]:
    holdouts = {(f["model"], f["ability"], f["recipe"].split(": ", 1)[-1]): f for f in fits}
    models = {ln.group for ln in view["lines"]}
    out = []
    for ln in view["lines"]:
        if not ln.own or len(ln.points) < 2:
            continue
        where = ln.name + (f", {ln.group}" if len(models) > 1 else "")
        s = _along(ln.ability, ln, view["family"], where)
        f = holdouts.get((ln.group, ln.ability, ln.name))
        checks = [_holdout_words(name, f[k]["error"])
                  for name, k in (("log fit", "log_holdout"), ("power law", "power_holdout")) if f and f.get(k)]
        out.append(s + ("; " + " and ".join(checks) if checks else "") + ".")
    return out


def _holdout_words(name: str, error: float) -> str:
    """How well a fit on the smaller amounts predicts the largest: said as a hit or a miss, not always "within"."""
    pts = abs(100 * error)
    side = "over" if error > 0 else "under"
    if pts <= 5:
        return f"fitted to the smaller amounts, the {name} predicts the largest within {pts:.1f} points"
    return f"fitted to the smaller amounts, the {name} misses the largest by {pts:.1f} points ({side}-predicts)"


def rq2(mv: dict) -> list[str]:
    rows = mv["rows"]
    n = len(rows)
    multi_model = len({r["model"] for r in rows}) > 1
    groups = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["ability"], r["mixed"])].append(r)
    out = []
    for (model, ability, mixed), seq in groups.items():
        who = f"Mixing ({mixed}" + (f", {model}" if multi_model else "") + ")"
        sig = [r for r in seq if significant(r["p_holm"])]
        calm = [r for r in seq if not significant(r["p_holm"])]
        parts = []
        for verb, rs in (("helps", [r for r in sig if r["cmp"].diff > 0]),
                         ("hurts", [r for r in sig if r["cmp"].diff < 0])):
            if rs:
                parts.append(f"{verb} {ability} " + " and ".join(
                    f"at {amount_label(r['amount'])} ({100 * r['cmp'].diff:+.1f} points [{100 * r['cmp'].lo:+.1f}, "
                    f"{100 * r['cmp'].hi:+.1f}], {pval(r['p_holm'])} after Holm over {n} comparisons; "
                    f"{basis(r['cmp'].items, r['seeds'])})" for r in rs))
        if calm:
            at = _and([amount_label(r["amount"]) for r in calm])
            diffs = ", ".join(f"{100 * r['cmp'].diff:+.1f}" for r in calm)
            least = min(r["p_holm"] for r in calm)
            parts.append(("makes " if not sig else "") + f"no significant difference to {ability} at {at} "
                         f"({diffs} points, {'smallest ' if len(calm) > 1 else ''}{pval(least)} after Holm over {n} "
                         f"comparisons; {basis(calm[0]['cmp'].items, min(r['seeds'] for r in calm))})")
        s = f"{who} " + "; ".join(parts) + "."
        x = mv["crossover"].get((model, ability))
        if x is not None:
            before = next(r for r in seq if r["amount"] < x)
            at_x = next(r for r in seq if r["amount"] == x)
            s += (f" The sign of mixing's effect on {ability} turns at {amount_label(x)} (from "
                  f"{100 * before['cmp'].diff:+.1f} points at {amount_label(before['amount'])} to "
                  f"{100 * at_x['cmp'].diff:+.1f} at {amount_label(x)}).")
        out.append(s)
    return out


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def strategies(compared: list[dict]) -> list[str]:
    """RQ4: each strategy against the reference on every ability (analysis.strategy_table's comparisons)."""
    n = len(compared)
    out, calm = [], defaultdict(list)
    for c in compared:
        if significant(c["p"]):
            out.append(f"{c['run']} scores {c['ability']} {pct(c['est'])} against {c['ref']}'s {pct(c['ref_est'])}: "
                       f"{verdict(c['cmp'], c['p'], n, c['cmp'].items, c['seeds'])}.")
        else:
            calm[(c["run"], c["ref"])].append(c)
    for (run, ref), cs in calm.items():
        what = _and([f"{c['ability']} ({100 * c['cmp'].diff:+.1f} points, {pval(c['p'])})" for c in cs])
        out.append(f"{run} is not significantly different from {ref} on {what} (after Holm over {n} comparisons; "
                   f"{basis(cs[0]['cmp'].items, min(c['seeds'] for c in cs))}).")
    return out


def forgetting(view: dict) -> list[str]:
    out = []
    for ln in view["lines"]:
        end = ln.points[-1]
        if end.cmp is None or ln.peak is None or end.cmp.diff >= 0:
            continue
        out.append(f"{ln.name} loses {abs(100 * end.cmp.diff):.1f} points of {ln.ability} from {ln.peak.label} "
                   f"({pct(ln.peak.est)}) to the end ({pct(end.est)}): "
                   f"{'significant' if significant(end.p) else 'not significant'} ({pval(end.p)} after Holm over "
                   f"{view['family']} comparisons; {basis(end.est.items, _seeds(end, ln.peak))}).")
    n = len(view["finals"])
    for ability, f in sorted(view["finals"].items()):
        (bname, best), (wname, worst) = f["best"], f["worst"]
        out.append(f"At the end, {bname} keeps {pct(best.est)} {ability} where {wname} keeps {pct(worst.est)}: "
                   f"{verdict(worst.cmp, worst.p, n, worst.est.items, _seeds(best, worst), gap=True)}.")
    return out


def ratio(entries: list[dict]) -> list[str]:
    out = []
    for e in entries:
        if e["kind"] == "grid":
            n = len(e["best_worst"])
            for ability, (best, worst) in sorted(e["best_worst"].items()):
                out.append(f"{ability} is highest at {best.label} ({pct(best.est)}) and lowest at {worst.label} "
                           f"({pct(worst.est)}) ({e['recipe']}): "
                           f"{verdict(worst.cmp, worst.p, n, worst.est.items, _seeds(best, worst), gap=True)}.")
        else:
            n = _family(p for ln in e["lines"] for p in ln.points)
            out += [_along(ln.ability, ln, n, e["recipe"]) + "." for ln in e["lines"]]
    return out


def shares(entries: list[dict]) -> list[str]:
    out = []
    for e in entries:
        n = _family(p for ln in e["lines"] for p in ln.points)
        for ln in e["lines"]:
            if not ln.own or len(ln.points) < 2:
                continue
            subject = {"domain": f"{ln.name} reasoning", "ability": "reasoning overall" if ln.name == "reasoning"
                       else ln.name}.get(ln.level, ln.name)
            best = max(ln.points, key=lambda p: p.est.mean)
            s = _along(subject[0].upper() + subject[1:], ln, n, e["recipe"])
            if best is not ln.points[0] and best is not ln.points[-1]:
                s += f"; highest at {best.label} ({pct(best.est)})"
            out.append(s + ".")
    return out


def pool(entries: list[dict]) -> list[str]:
    out = []
    for e in entries:
        n = _family(p for ln in e["lines"] for p in ln.points)
        out += [_along(f"{e['task']} {ln.name}", ln, n, e["recipe"]) + "." for ln in e["lines"] if len(ln.points) > 1]
    return out
