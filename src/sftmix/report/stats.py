"""How sure a study can be: bootstrap intervals, paired tests with a correction for many comparisons, scaling fits.

Scores are per item (0/1 for exact tasks, a fraction for pass@k or a judge's rating), so everything here works on
arrays of item scores. Every function is seeded: the same study gives the same intervals and p-values.

- `bootstrap_ci`: the mean with a percentile interval. With several seeds the resampling has two levels (seeds, then
  items within each drawn seed), so the interval covers training noise as well as the finite item set.
- `paired_test`: two runs on the same items (mixed vs single, strategy vs strategy). The item-level differences are
  what vary, so the test is a sign-flip permutation test on them (exact for small n, Monte Carlo otherwise), with a
  bootstrap interval of the mean difference. Pairing removes the item difficulty that two unpaired means would
  carry as noise.
- `holm`: Holm's step-down adjustment, which controls the family-wise error over all comparisons of one report.
- `fit_log` / `fit_power`: score against log(amount), and a saturating power law `a - b * amount**-c`; `holdout`
  fits on all amounts but the largest and gives the error of predicting the largest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

N_BOOT = 2000
N_PERM = 10000
ALPHA = 0.05


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@dataclass(frozen=True)
class Estimate:
    mean: float
    lo: float
    hi: float
    items: int
    seeds: int


def bootstrap_ci(scores, n_boot: int = N_BOOT, alpha: float = ALPHA, seed: int = 0) -> Estimate:
    """`scores`: item scores of one run ([items]) or of one configuration trained with several seeds
    ([seeds, items], the same items in each row)."""
    a = np.asarray(scores, dtype=float)
    if a.ndim == 1:
        a = a[None]
    if a.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, 0)
    s, n = a.shape
    rng = _rng(seed)
    # One item draw per replicate, shared by its drawn seeds: the seeds score the same items, so a seed repeated
    # adds no item evidence. Replicates go in chunks to bound memory on large item sets.
    means = np.empty(n_boot)
    step = max(1, 2_000_000 // max(s * n, 1))
    for k in range(0, n_boot, step):
        m = min(step, n_boot - k)
        rows = rng.integers(0, s, size=(m, s)) if s > 1 else np.zeros((m, 1), dtype=int)
        cols = rng.integers(0, n, size=(m, 1, n))
        means[k : k + m] = a[rows[:, :, None], cols].mean(axis=(1, 2))
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Estimate(float(a.mean()), float(lo), float(hi), n, s)


@dataclass(frozen=True)
class Comparison:
    diff: float  # mean(a) - mean(b)
    lo: float
    hi: float
    p: float
    items: int
    exact: bool  # the permutation p-value enumerates every sign pattern


def paired_test(a, b, n_perm: int = N_PERM, n_boot: int = N_BOOT, alpha: float = ALPHA, seed: int = 0) -> Comparison:
    """a, b: scores of two runs on the same items, in the same order ([items], or [seeds, items] averaged over
    seeds first). Two-sided sign-flip permutation test of mean(a - b) = 0. The test is over items: with several
    seeds, averaging first shrinks training noise but does not test it (the report says so where it applies)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.ndim == 2:
        x = x.mean(axis=0)
    if y.ndim == 2:
        y = y.mean(axis=0)
    if x.shape != y.shape:
        raise ValueError(f"paired scores need the same items: {x.shape} vs {y.shape}")
    d = x - y
    n = len(d)
    if n == 0:
        return Comparison(float("nan"), float("nan"), float("nan"), 1.0, 0, True)
    observed = abs(d.mean())
    nz = d[d != 0]  # items where both runs agree cannot change sign
    rng = _rng(seed)
    if len(nz) <= 16:
        exact = True
        signs = ((np.arange(2 ** len(nz))[:, None] >> np.arange(len(nz))) & 1) * 2 - 1
        stats = np.abs((signs * nz).sum(axis=1)) / n
        p = float((stats >= observed - 1e-12).mean())
    else:
        exact = False
        hits, step = 0, max(1, 2_000_000 // len(nz))
        for k in range(0, n_perm, step):
            signs = rng.choice(np.array([-1.0, 1.0]), size=(min(step, n_perm - k), len(nz)))
            hits += int((np.abs((signs * nz).sum(axis=1)) / n >= observed - 1e-12).sum())
        p = float((hits + 1) / (n_perm + 1))
    step = max(1, 2_000_000 // n)
    boot = np.concatenate([d[rng.integers(0, n, size=(min(step, n_boot - k), n))].mean(axis=1)
                           for k in range(0, n_boot, step)])
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return Comparison(float(d.mean()), float(lo), float(hi), min(p, 1.0), n, exact)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given: compare each with alpha to control the family-wise error."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


# --------------------------------------------------------------------------------------------------------- fits


@dataclass(frozen=True)
class Fit:
    kind: str  # "log" or "power"
    params: tuple[float, ...]
    rmse: float  # on the points it was fitted to

    def predict(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if self.kind == "log":
            a, b = self.params
            return a + b * np.log(x)
        a, b, c = self.params
        return a - b * np.power(x, -c)

    def formula(self) -> str:
        if self.kind == "log":
            a, b = self.params
            return f"{a:.3f} {'+' if b >= 0 else '-'} {abs(b):.3f}·ln(x)"
        a, b, c = self.params
        return f"{a:.3f} {'-' if b >= 0 else '+'} {abs(b):.3f}·x^-{c:.2f}"


def _points(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0)
    return x[keep], y[keep]


def fit_log(x, y) -> Fit | None:
    x, y = _points(x, y)
    if len(np.unique(x)) < 2:
        return None
    A = np.stack([np.ones_like(x), np.log(x)], axis=1)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    f = Fit("log", (float(coef[0]), float(coef[1])), 0.0)
    return Fit("log", f.params, float(np.sqrt(np.mean((f.predict(x) - y) ** 2))))


def fit_power(x, y, cs=None) -> Fit | None:
    """a - b * x**-c: for each c on a grid the model is linear in (a, b); the c with the least squared error wins.
    Needs three distinct amounts (three parameters)."""
    x, y = _points(x, y)
    if len(np.unique(x)) < 3:
        return None
    scale = x.max()  # fitted on x / max(x), so row or token counts in the millions stay well conditioned
    best = None
    for c in cs if cs is not None else np.geomspace(0.02, 2.0, 100):
        A = np.stack([np.ones_like(x), -np.power(x / scale, -c)], axis=1)
        coef, *_ = np.linalg.lstsq(A, y, rcond=None)
        err = float(np.mean((A @ coef - y) ** 2))
        if best is None or err < best[0]:
            best = (err, float(coef[0]), float(coef[1]), float(c))
    err, a, b, c = best
    return Fit("power", (a, b * scale**c, c), math.sqrt(err))  # b / scale**-c: the same curve in x itself


def holdout(x, y, kind: str) -> dict | None:
    """Fit on every amount but the largest, predict the largest: {"amount", "actual", "predicted", "error"}."""
    x, y = _points(x, y)
    if len(x) == 0:
        return None
    top = x.max()
    train = x < top
    fit = (fit_log if kind == "log" else fit_power)(x[train], y[train])
    if fit is None:
        return None
    actual = float(y[~train].mean())
    predicted = float(fit.predict([top])[0])
    return {"amount": float(top), "actual": actual, "predicted": predicted, "error": predicted - actual}
