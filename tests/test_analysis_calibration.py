"""Calibration of the seed-level verdict by simulation (the tests must be calibrated).

Each simulated campaign has two arms of runs. A run's true correct rate is
    p_run = base + effect·[candidate] + seed effect + run effect,
seed effects ~ N(0, seed_sd) (shared by both arms of a seed when `paired`: same data order and
init), run effects ~ N(0, run_sd); it then samples steps × episodes completions, so its correct count
is Binomial(steps·episodes, p_run) (a sum of independent per-step binomials with the same p).
The seed-level verdict is computed by `stats.seed_level_tests`, the function `compare` uses,
batched over all campaigns at once.

Run this file directly to print the table quoted in docs/analysis.md:
    python tests/test_analysis_calibration.py
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from retrain.analysis import stats
from retrain.analysis.power import seed_level_power

ALPHA = 0.05
RESAMPLES = 2000  # 8 pairs: exact sign-flip (256); 8 vs 8: Monte Carlo (C(16,8) = 12870 > 2000)


def simulate(rng, *, campaigns, seeds, steps, episodes, base, effect, seed_sd, run_sd, paired):
    """Correct counts per run, (campaigns, seeds) for each arm, and the episodes per run."""
    seed_b = rng.normal(0, seed_sd, (campaigns, seeds))
    seed_c = seed_b if paired else rng.normal(0, seed_sd, (campaigns, seeds))
    p_b = np.clip(base + seed_b + rng.normal(0, run_sd, (campaigns, seeds)), 0.001, 0.999)
    p_c = np.clip(base + effect + seed_c + rng.normal(0, run_sd, (campaigns, seeds)), 0.001, 0.999)
    m = steps * episodes
    return rng.binomial(m, p_b), rng.binomial(m, p_c), m


def verdicts(c_b, c_c, m, *, paired, rng):
    res = stats.seed_level_tests(c_b / m, c_c / m, paired=paired, alpha=ALPHA, resamples=RESAMPLES, rng=rng)
    return res


def pooled_fisher_rejects(c_b, c_c, m) -> np.ndarray:
    """The guide's test: all episodes of all seeds pooled into one 2×2 table per campaign."""
    n = c_b.shape[1] * m
    return np.array(
        [stats.fisher_exact_p(int(b), n, int(c), n) < ALPHA for b, c in zip(c_b.sum(1), c_c.sum(1), strict=True)]
    )


def run_sd_of_means(base, seed_sd, run_sd, m, paired):
    """sd of a run's mean (unpaired) or of a seed's difference (paired) in the simulation model."""
    binom = base * (1 - base) / m
    return math.sqrt(2 * (run_sd**2 + binom)) if paired else math.sqrt(seed_sd**2 + run_sd**2 + binom)


SCENARIO = {"seeds": 8, "steps": 20, "episodes": 128, "base": 0.3, "seed_sd": 0.02, "run_sd": 0.01}


@pytest.mark.slow
@pytest.mark.parametrize("paired", [True, False], ids=["paired-sign-flip", "unpaired-permutation"])
def test_false_positive_rate_under_null_with_seed_effects(paired):
    rng = np.random.default_rng(20260101 + paired)
    c_b, c_c, m = simulate(rng, campaigns=2000, effect=0.0, paired=paired, **SCENARIO)
    res = verdicts(c_b, c_c, m, paired=paired, rng=rng)
    assert res.test == ("paired_sign_flip" if paired else "permutation")
    assert res.primary.method == ("exact" if paired else "monte_carlo")
    fpr = float((res.verdict_K != stats.INSUFFICIENT).mean())
    assert 0.03 <= fpr <= 0.07, fpr
    # the pooled-episode test on the very same campaigns is badly anti-conservative
    assert pooled_fisher_rejects(c_b, c_c, m).mean() > 0.15


@pytest.mark.slow
@pytest.mark.parametrize("paired", [True, False], ids=["paired-sign-flip", "unpaired-permutation"])
def test_power_under_a_planted_effect_matches_simulated_power(paired):
    m = SCENARIO["steps"] * SCENARIO["episodes"]
    sd = run_sd_of_means(SCENARIO["base"], SCENARIO["seed_sd"], SCENARIO["run_sd"], m, paired)
    # plant the effect the t-based power model says gives 70% power with 8 seeds per arm
    lo, hi = 0.0, 0.5
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if seed_level_power(8, mid, sd, ALPHA, paired=paired) < 0.7 else (lo, mid)
    effect = hi
    predicted = seed_level_power(8, effect, sd, ALPHA, paired=paired)
    rng = np.random.default_rng(777 + paired)
    c_b, c_c, m = simulate(rng, campaigns=1000, effect=effect, paired=paired, **SCENARIO)
    res = verdicts(c_b, c_c, m, paired=paired, rng=rng)
    empirical = float((res.verdict_K == stats.IMPROVEMENT).mean())
    assert abs(empirical - predicted) <= 0.05, (empirical, predicted)


def test_compare_uses_the_calibrated_function(tmp_path):
    """compare_arms on simulated campaigns written to disk gives the batched function's exact p."""
    from fixtures_analysis import write_jsonl

    from retrain.analysis.load import resolve_arm
    from retrain.analysis.significance import compare_arms

    rng = np.random.default_rng(5)
    c_b, c_c, m = simulate(rng, campaigns=3, effect=0.01, paired=True, **{**SCENARIO, "steps": 5})
    batched = verdicts(c_b, c_c, m, paired=True, rng=np.random.default_rng(0))
    for k in range(3):
        arms = {}
        for arm, counts in (("b", c_b[k]), ("c", c_c[k])):
            for s, c in enumerate(counts):
                # every step of the run at the run's mean rate: the window mean is c / m
                d = tmp_path / f"k{k}" / f"{arm}_s{s}"
                write_jsonl(
                    d / "metrics.jsonl",
                    [
                        {"step": i, "condition": arm, "seed": s, "correct_rate": c / m, "mean_reward": c / m}
                        for i in range(5)
                    ],
                )
                arms.setdefault(arm, []).append(str(d))
        res = compare_arms(resolve_arm(arms["b"]), resolve_arm(arms["c"]), resamples=RESAMPLES, window=(0, 5))
        cr = res["seed_level"]["correct_rate"]
        assert cr["test"] == "paired_sign_flip" and cr["method"] == "exact"
        assert cr["p_value"] == pytest.approx(batched.p_K[k])
        assert cr["delta"] == pytest.approx(batched.delta_K[k])
        assert cr["recommendation"] == batched.verdict_K[k]


def false_positive_table(campaigns=1000, seed=0) -> list[dict]:
    """The issue's setting: 8 seeds × 100 steps × 128 episodes per arm, identical conditions, α = 0.05."""
    rows = []
    rng = np.random.default_rng(seed)
    for seed_sd in (0.0, 0.01, 0.02, 0.03):
        for paired in (False, True):
            c_b, c_c, m = simulate(
                rng,
                campaigns=campaigns,
                seeds=8,
                steps=100,
                episodes=128,
                base=0.3,
                effect=0.0,
                seed_sd=seed_sd,
                run_sd=0.0 if not paired else 0.005,
                paired=paired,
            )
            res = verdicts(c_b, c_c, m, paired=paired, rng=rng)
            rows.append(
                {
                    "between_seed_sd": seed_sd,
                    "design": "paired" if paired else "unpaired",
                    "pooled_fisher_fpr": float(pooled_fisher_rejects(c_b, c_c, m).mean()),
                    "seed_level_fpr": float((res.verdict_K != stats.INSUFFICIENT).mean()),
                }
            )
    return rows


if __name__ == "__main__":
    for row in false_positive_table():
        print(json.dumps(row))
