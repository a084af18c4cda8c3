"""Sample sizes: episodes per arm for a rate test, seeds per arm for the seed-level test.

Example::

    >>> episodes_per_arm(0.01875, 0.0126)          # the guide's rule of thumb (3/160 baseline)
    2414
    >>> steps_per_run(2414, batch_size=8, group_size=16, seeds=8)
    3
"""

from __future__ import annotations

import math

from retrain.errors import RetrainError


def _z(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


def check_alpha_power(alpha: float, power: float) -> None:
    if not 0 < alpha < 1:
        raise RetrainError(f"--alpha {alpha}: must be in (0, 1), e.g. 0.05")
    if not 0 < power < 1:
        raise RetrainError(f"--power {power}: must be in (0, 1), e.g. 0.8")


def episodes_per_arm(baseline_rate: float, lift: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Episodes per arm for a two-sided two-proportion test (Fleiss, no continuity correction):

        n = ceil((z_{1−α/2}·√(2·p̄q̄) + z_{power}·√(p0q0 + p1q1))² / (p1 − p0)²),
        p1 = p0 + lift, p̄ = (p0 + p1)/2, q = 1 − p.

    0.01875 with lift 0.0126 → 2414 (raw 2413.65), the guide's "~2400 episodes per arm".
    """
    check_alpha_power(alpha, power)
    p0, p1 = baseline_rate, baseline_rate + lift
    if not (0 <= p0 <= 1 and 0 <= p1 <= 1):
        raise RetrainError(f"--baseline-rate {p0} with --lift {lift} gives a rate of {p1:.4g}; both must be in [0, 1].")
    if lift == 0:
        raise RetrainError(
            "--lift 0: a lift of zero cannot be detected at any sample size; pass the smallest lift you care about."
        )
    p_bar = (p0 + p1) / 2
    root = _z(1 - alpha / 2) * math.sqrt(2 * p_bar * (1 - p_bar)) + _z(power) * math.sqrt(p0 * (1 - p0) + p1 * (1 - p1))
    raw = root**2 / (p1 - p0) ** 2
    # 1e-9 slack: a raw value that is an integer up to rounding error must not round up to the next one
    return max(1, math.ceil(raw - 1e-9))


def steps_per_run(episodes: int, batch_size: int, group_size: int, seeds: int) -> int:
    """Steps each run needs so that `seeds` runs give `episodes` in total: ceil(episodes / (b·g·seeds))."""
    if batch_size <= 0 or group_size <= 0 or seeds <= 0:
        raise RetrainError("--batch-size, --group-size and --seeds must be positive integers")
    return math.ceil(episodes / (batch_size * group_size * seeds))


def seed_level_power(n_per_arm: int, delta: float, sd: float, alpha: float = 0.05, paired: bool = False) -> float:
    """Power of a two-sided t-test on run means (the permutation test's large-sample twin).

    Unpaired: df = 2n − 2, noncentrality δ / (sd·√(2/n)), sd = run-mean sd within an arm.
    Paired:   df = n − 1,  noncentrality δ / (sd/√n),     sd = sd of the per-seed differences.
    power = P(T > t_{1−α/2}) + P(T < −t_{1−α/2}) with T ~ noncentral t.
    """
    from scipy.stats import nct, t

    df = n_per_arm - 1 if paired else 2 * n_per_arm - 2
    if df < 1 or sd <= 0:
        return float("nan")
    nc = delta / (sd / math.sqrt(n_per_arm)) if paired else delta / (sd * math.sqrt(2 / n_per_arm))
    crit = t.ppf(1 - alpha / 2, df)
    return float(nct.sf(crit, df, nc) + nct.cdf(-crit, df, nc))


def seeds_per_arm(
    delta: float, sd: float, alpha: float = 0.05, power: float = 0.8, paired: bool = False, max_n: int = 1_000_000
) -> int | None:
    """Smallest n ≥ 2 runs per arm with `seed_level_power(n, ...) ≥ power`; None if δ = 0, sd ≤ 0
    is undefined, or n would exceed max_n. Power rises with n, so doubling then bisection finds it."""
    if not (math.isfinite(delta) and math.isfinite(sd)) or delta == 0 or sd <= 0:
        return None
    lo, hi = 2, 2
    while seed_level_power(hi, delta, sd, alpha, paired) < power:
        lo, hi = hi, hi * 2
        if hi > max_n:
            return None
    if lo == hi:
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if seed_level_power(mid, delta, sd, alpha, paired) >= power:
            hi = mid
        else:
            lo = mid
    return hi


def min_seeds_for_resampling_test(alpha: float = 0.05, paired: bool = False) -> int:
    """Fewest runs per arm at which the exact test CAN give p < alpha, whatever the effect:
    paired sign-flip needs 2 / 2^n < alpha (n = 6 at 0.05); the permutation test with equal arms
    needs 2 / C(2n, n) < alpha (n = 4 at 0.05)."""
    n = 1
    while (2 / 2**n if paired else 2 / math.comb(2 * n, n)) >= alpha:
        n += 1
    return n


def power_plan(
    baseline_rate: float,
    lift: float,
    alpha: float = 0.05,
    power: float = 0.8,
    batch_size: int = 8,
    group_size: int = 16,
    seeds: tuple[int, ...] = (3, 8, 16),
    run_sd: float | None = None,
) -> dict:
    """Everything `retrain power` prints, as a JSON-able dict."""
    n = episodes_per_arm(baseline_rate, lift, alpha, power)
    per_step = batch_size * group_size
    plan = {
        "baseline_rate": baseline_rate,
        "lift": lift,
        "candidate_rate": baseline_rate + lift,
        "alpha": alpha,
        "power": power,
        "episodes_per_arm": n,
        "batch_size": batch_size,
        "group_size": group_size,
        "episodes_per_step": per_step,
        "step_equivalents_per_arm": math.ceil(n / per_step),
        "by_seeds": [
            {
                "seeds": s,
                "steps_per_run": steps_per_run(n, batch_size, group_size, s),
                "episodes_per_arm": steps_per_run(n, batch_size, group_size, s) * per_step * s,
            }
            for s in seeds
        ],
        "run_sd": run_sd,
        "seeds_per_arm_seed_level": seeds_per_arm(lift, run_sd, alpha, power) if run_sd else None,
    }
    return plan


def render_power(plan: dict) -> str:
    """The console text of `retrain power`."""
    lines = [
        f"Episodes per arm to detect {plan['baseline_rate']:.4g} -> {plan['candidate_rate']:.4g} "
        f"(lift {plan['lift']:+.4g}) at alpha {plan['alpha']} (two-sided), power {plan['power']:.2f}: "
        f"{plan['episodes_per_arm']}",
        f"At batch_size {plan['batch_size']} x group_size {plan['group_size']} = {plan['episodes_per_step']} "
        f"episodes per step: {plan['step_equivalents_per_arm']} steps per arm in total, split over seeds as:",
        "  seeds  steps/run  episodes/arm",
    ]
    lines += [f"  {r['seeds']:>5}  {r['steps_per_run']:>9}  {r['episodes_per_arm']:>12}" for r in plan["by_seeds"]]
    lines.append(
        "These counts treat episodes as independent. Runs differ by seed, so the seed-level test "
        "(retrain compare) needs more; pass --run-sd (sd of run-mean correct_rate across seeds) to size it."
    )
    if plan["run_sd"]:
        k = plan["seeds_per_arm_seed_level"]
        lines.append(
            f"Seed-level test with run-mean sd {plan['run_sd']:.4g}: "
            f"{k if k is not None else 'more than 1e6'} seeds per arm."
        )
    return "\n".join(lines)
