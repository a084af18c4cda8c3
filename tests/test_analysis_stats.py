"""Seed-level and episode-level statistics: hand-computed values, references, invariants."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import fisher_exact

from retrain.analysis import stats
from retrain.errors import RetrainError


def rng(seed=0):
    return np.random.default_rng(seed)


# ---------- permutation test ----------


def test_permutation_exact_hand_computed():
    # x = [0, 1], y = [2, 3]: Δ_obs = 2. The 6 splits of {0,1,2,3} into two pairs give
    # Δ* = ±2 (the observed split and its mirror), ±1, ±1... only 2 of 6 reach |Δ*| ≥ 2 → p = 1/3.
    r = stats.permutation_test(np.array([[0.0, 1.0]]), np.array([[2.0, 3.0]]), resamples=100, rng=rng())
    assert r.method == "exact" and r.n_relabelings == 6 and r.n_used == 6
    assert r.p_K[0] == pytest.approx(1 / 3)


def test_permutation_exact_matches_brute_force():
    x, y = np.array([0.31, 0.28, 0.35, 0.30]), np.array([0.36, 0.33, 0.40])
    pooled = np.concatenate([x, y])
    obs = y.mean() - x.mean()
    deltas = []
    for idx in itertools.combinations(range(7), 4):
        mask = np.zeros(7, bool)
        mask[list(idx)] = True
        deltas.append(pooled[~mask].mean() - pooled[mask].mean())
    expected = np.mean(np.abs(deltas) >= abs(obs) - 1e-12)
    r = stats.permutation_test(x[None], y[None], resamples=1000, rng=rng())
    assert r.method == "exact" and r.n_relabelings == 35
    assert r.p_K[0] == pytest.approx(expected)


def test_permutation_monte_carlo_plus_one_and_reproducible():
    # Perfectly separated arms of 10: no relabeling but the observed one reaches |Δ_obs| in practice,
    # so p = (hits + 1)/(B + 1) with hits tiny; never 0.
    x, y = np.arange(10.0)[None], np.arange(10.0, 20.0)[None]
    a = stats.permutation_test(x, y, resamples=999, rng=rng(5))
    b = stats.permutation_test(x, y, resamples=999, rng=rng(5))
    assert a.method == "monte_carlo" and a.n_relabelings == math.comb(20, 10)
    assert a.p_K[0] == b.p_K[0]
    assert a.p_K[0] >= 1 / 1000 and a.p_K[0] < 0.01


def test_permutation_switches_to_monte_carlo_above_resamples():
    x, y = np.zeros((1, 8)), np.ones((1, 8))
    assert stats.permutation_test(x, y, resamples=12870, rng=rng()).method == "exact"  # C(16,8) = 12870
    assert stats.permutation_test(x, y, resamples=12869, rng=rng()).method == "monte_carlo"


# values on a 1e-3 grid, like rates: differences far above the 1e-9 tie tolerance
GRID = st.integers(-1000, 1000).map(lambda v: v / 1000)


@settings(max_examples=40, deadline=None)
@given(st.lists(GRID, min_size=2, max_size=5), st.lists(GRID, min_size=2, max_size=5), GRID.map(lambda v: 5 * v))
def test_permutation_invariants(xs, ys, shift):
    x, y = np.array(xs)[None], np.array(ys)[None]
    p = stats.permutation_test(x, y, 1000, rng()).p_K[0]
    assert 0 < p <= 1
    # swapping the arms or shifting both by a constant does not change an exact p
    assert stats.permutation_test(y, x, 1000, rng()).p_K[0] == pytest.approx(p)
    assert stats.permutation_test(x + shift, y + shift, 1000, rng()).p_K[0] == pytest.approx(p)


def test_permutation_batched_equals_one_by_one():
    g = rng(3)
    x, y = g.normal(size=(5, 4)), g.normal(size=(5, 5))
    batch = stats.permutation_test(x, y, 1000, rng()).p_K
    single = [stats.permutation_test(x[k : k + 1], y[k : k + 1], 1000, rng()).p_K[0] for k in range(5)]
    np.testing.assert_allclose(batch, single)


# ---------- sign-flip test ----------


def test_sign_flip_exact_hand_computed():
    # d = [1, 2, 3]: of the 8 sign vectors only (+,+,+) and (−,−,−) reach |mean| = 2 → p = 2/8.
    r = stats.sign_flip_test(np.array([[1.0, 2.0, 3.0]]), resamples=100, rng=rng())
    assert r.method == "exact" and r.n_relabelings == 8
    assert r.p_K[0] == pytest.approx(0.25)
    # d = [1, -1, 2, 2]: |mean| = 1; sign vectors with |Σ s·d| ≥ 4: enumerate by hand below
    d = np.array([1.0, -1.0, 2.0, 2.0])
    hits = sum(abs(np.dot(s, d)) >= 4 for s in itertools.product([1, -1], repeat=4))
    assert stats.sign_flip_test(d[None], 100, rng()).p_K[0] == pytest.approx(hits / 16)


def test_sign_flip_monte_carlo_min_p():
    r = stats.sign_flip_test(np.ones((1, 20)), resamples=499, rng=rng())
    assert r.method == "monte_carlo"
    assert r.p_K[0] == pytest.approx(1 / 500)  # no random sign vector is all +1 or all −1 here (p ≈ 4e-4)


# ---------- bootstrap, effect size, verdict ----------


def test_bootstrap_ci_matches_loop_and_is_reproducible():
    x, y = np.array([0.30, 0.32, 0.29, 0.35]), np.array([0.36, 0.34, 0.39, 0.33])
    lo, hi = stats.bootstrap_ci(x[None], y[None], 0.95, 4000, rng(1))
    lo2, hi2 = stats.bootstrap_ci(x[None], y[None], 0.95, 4000, rng(1))
    assert (lo[0], hi[0]) == (lo2[0], hi2[0])
    # the same resampling scheme written as a plain loop gives the same quantiles within MC error
    g = rng(2)
    deltas = [g.choice(y, 4).mean() - g.choice(x, 4).mean() for _ in range(4000)]
    ref_lo, ref_hi = np.quantile(deltas, [0.025, 0.975])
    assert lo[0] == pytest.approx(ref_lo, abs=0.004) and hi[0] == pytest.approx(ref_hi, abs=0.004)
    assert lo[0] < y.mean() - x.mean() < hi[0]


def test_bootstrap_paired_resamples_differences():
    x = np.array([0.1, 0.5, 0.9, 0.3])
    y = x + 0.02  # constant difference: every paired resample has Δ* = 0.02 exactly
    lo, hi = stats.bootstrap_ci(x[None], y[None], 0.9, 500, rng(), paired=True)
    assert lo[0] == pytest.approx(0.02) and hi[0] == pytest.approx(0.02)


def test_hedges_g_hand_computed():
    x, y = np.array([1.0, 2.0, 3.0]), np.array([3.0, 4.0, 5.0])
    # s_p = 1, d = 2, J = 1 - 3/(4·6 - 9) = 0.8 → g = 1.6
    assert stats.hedges_g(x[None], y[None])[0] == pytest.approx(1.6)
    assert math.isnan(stats.hedges_g(np.array([[1.0, 1.0]]), np.array([[2.0, 2.0]]))[0])  # no variation: undefined


def test_recommend_rules():
    v = stats.recommend(
        np.array([0.01, 0.01, 0.01, 0.2, 0.01]),
        np.array([0.1, 0.1, -0.1, 0.1, 0.1]),
        np.array([0.02, -0.01, -0.2, 0.02, 0.0]),
        alpha=0.05,
    )
    assert list(v) == [stats.IMPROVEMENT, stats.INSUFFICIENT, stats.DEGRADATION, stats.INSUFFICIENT, stats.INSUFFICIENT]


def test_windows():
    assert stats.default_window(500) == (400, 500)
    assert stats.default_window(12) == (9, 12)  # ceil(2.4) = 3 steps
    assert stats.default_window(1) == (0, 1)
    assert stats.parse_window("400:500") == (400, 500)
    assert stats.parse_window(":100") == (None, 100) and stats.parse_window("7:") == (7, None)
    for bad in ("400", "a:b", "5:5", "1:2:3"):
        with pytest.raises(RetrainError, match="--window"):
            stats.parse_window(bad)


# ---------- episode level ----------


@pytest.mark.parametrize("table", [(298, 1024, 342, 1024), (3, 160, 3, 160), (12, 2560, 17, 2560), (0, 10, 5, 10)])
def test_fisher_equals_scipy(table):
    cb, tb, cc, tc = table
    _, ref = fisher_exact([[cc, tc - cc], [cb, tb - cb]])
    assert stats.fisher_exact_p(cb, tb, cc, tc) == ref


def test_fisher_guide_example_value():
    # the guide's 342/1024 vs 298/1024
    assert stats.fisher_exact_p(298, 1024, 342, 1024) == pytest.approx(0.040327, abs=1e-6)
    assert stats.fisher_exact_p(3, 160, 3, 160) == 1.0


def test_design_effect_hand_computed():
    # arm 1 runs 10/100, 30/100 → p̄ = 0.2, Σ(p_r − p̄)² = 0.02; binomial var p̄q̄/m = 0.0016 → DEFF = 12.5
    assert stats.design_effect([np.array([10, 30])], [np.array([100, 100])]) == pytest.approx(12.5)
    # identical run rates: less spread than binomial → floored at 1
    assert stats.design_effect([np.array([20, 20])], [np.array([100, 100])]) == 1.0
    assert math.isnan(stats.design_effect([np.array([5])], [np.array([10])]))


def test_design_effect_near_one_without_seed_effects():
    g = rng(11)
    deffs = [stats.design_effect([g.binomial(500, 0.3, 8)], [np.full(8, 500)]) for _ in range(300)]
    # E[s²] = binomial var, so the (floored) mean sits a little above 1; a seed effect would push it far up
    assert 1.0 <= np.mean(deffs) < 1.5


def test_design_adjusted_p_is_larger_than_plain():
    plain = stats.design_adjusted_p(298, 1024, 342, 1024, 1.0)
    assert plain == pytest.approx(0.03594, abs=1e-4)  # two-proportion z-test, close to Fisher's 0.040
    # DEFF 4 doubles the standard error: z = 2.098 → 1.049, p = 2·(1 − Φ(1.049))
    assert stats.design_adjusted_p(298, 1024, 342, 1024, 4.0) == pytest.approx(0.2943, abs=1e-4)
