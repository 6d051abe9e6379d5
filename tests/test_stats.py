"""Statistics behind the report's claims: intervals, paired tests, the multiple-comparison correction, fits."""

import numpy as np
import pytest

from sftmix.report.stats import bootstrap_ci, fit_log, fit_power, holdout, holm, paired_test


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_items():
    rng = np.random.default_rng(1)
    small = bootstrap_ci(rng.random(40) < 0.6)
    large = bootstrap_ci(rng.random(4000) < 0.6)
    assert small.lo < small.mean < small.hi and large.lo < large.mean < large.hi
    assert (large.hi - large.lo) < (small.hi - small.lo) / 5
    assert abs(large.mean - 0.6) < 0.03 and large.lo < 0.6 < large.hi
    assert bootstrap_ci([1, 0, 1, 1]) == bootstrap_ci([1, 0, 1, 1])  # seeded
    assert bootstrap_ci([1, 1, 1]).lo == 1.0  # no spread, no interval


def test_seeds_widen_the_interval():
    rng = np.random.default_rng(2)
    base = rng.random(200)
    steady = np.stack([base, base, base])
    noisy = np.stack([base, np.clip(base + 0.3, 0, 1), np.clip(base - 0.3, 0, 1)])
    a, b = bootstrap_ci(steady), bootstrap_ci(noisy)
    assert (a.items, a.seeds) == (200, 3)
    assert (b.hi - b.lo) > 2 * (a.hi - a.lo)
    # the same items scored three times are no more evidence than once: the interval does not narrow
    one = bootstrap_ci(base)
    assert (a.hi - a.lo) == pytest.approx(one.hi - one.lo, rel=0.15)


def test_paired_test_finds_a_real_difference_and_not_a_fake_one():
    rng = np.random.default_rng(3)
    difficulty = rng.random(300)
    a = (difficulty < 0.7).astype(float)
    b = (difficulty < 0.6).astype(float)  # b solves a subset of what a solves: a real, paired gain of 0.1
    c = a.copy()
    rng.shuffle(c)  # same mean as a, pairing broken
    real, none = paired_test(a, b), paired_test(a, a)
    assert real.p < 0.001 and real.lo > 0 and real.diff == pytest.approx(a.mean() - b.mean())
    assert none.p == 1.0 and none.diff == 0.0 and none.exact
    assert paired_test(a, c).p > 0.05


def test_paired_test_is_exact_for_few_disagreements():
    a = np.array([1, 1, 1, 0, 1, 1, 0, 0])
    b = np.array([0, 0, 1, 0, 1, 1, 0, 0])  # two items differ, both in a's favour: 2 of 4 sign patterns as extreme
    r = paired_test(a, b)
    assert r.exact and r.p == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same items"):
        paired_test([1, 0], [1, 0, 1])


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5]) == [0.5] and holm([]) == []
    assert max(holm([0.4, 0.6, 0.9])) == 1.0


def test_fits_recover_their_curves_and_predict_the_largest_amount():
    x = np.array([1 / 256, 1 / 64, 1 / 16, 1 / 4, 1])
    y = 0.3 + 0.05 * np.log(x)
    f = fit_log(x, y)
    assert f.params == pytest.approx((0.3, 0.05)) and f.rmse < 1e-9
    y2 = 0.8 - 0.1 * x ** -0.3
    p = fit_power(x, y2)
    assert p.params == pytest.approx((0.8, 0.1, 0.3), rel=0.05) and p.rmse < 1e-3
    h = holdout(x, y2, "power")
    assert h["amount"] == 1 and abs(h["error"]) < 0.01
    hl = holdout(x, y2, "log")
    assert abs(hl["error"]) > abs(h["error"])  # the wrong curve extrapolates worse
    assert fit_power(x[:2], y2[:2]) is None and holdout(x[:2], y2[:2], "power") is None
    rows = x * 2_000_000  # the same curve over row counts in the millions
    big = fit_power(rows, 0.8 - 0.1 * (rows / 2_000_000) ** -0.3)
    assert big.rmse < 1e-3 and big.predict(rows) == pytest.approx(y2, abs=1e-3)
