"""Sample sizes: the guide's rule of thumb, reference values, and the `power` verb."""

from __future__ import annotations

import json
import math

import pytest
from fixtures_analysis import run_cli
from scipy.stats import norm

from retrain.analysis import power
from retrain.errors import RetrainError


def test_guide_rule_of_thumb_2414():
    assert power.episodes_per_arm(0.01875, 0.0126) == 2414


@pytest.mark.parametrize("lift, expected", [(0.01, 3639), (0.015, 1783), (0.02, 1095)])
def test_fleiss_table(lift, expected):
    # hand formula with scipy z-values, rounded up
    p0, p1 = 0.01875, 0.01875 + lift
    pb = (p0 + p1) / 2
    raw = (
        norm.ppf(0.975) * math.sqrt(2 * pb * (1 - pb)) + norm.ppf(0.8) * math.sqrt(p0 * (1 - p0) + p1 * (1 - p1))
    ) ** 2 / lift**2
    assert power.episodes_per_arm(0.01875, lift) == math.ceil(raw) == expected


def test_alpha_and_power_move_n_the_right_way():
    n = power.episodes_per_arm(0.3, 0.05)
    assert power.episodes_per_arm(0.3, 0.05, alpha=0.01) > n
    assert power.episodes_per_arm(0.3, 0.05, power=0.9) > n
    assert power.episodes_per_arm(0.3, -0.05) == power.episodes_per_arm(0.25, 0.05)  # symmetric in the direction


def test_steps_per_run():
    # 2414 episodes at 8 × 16 = 128 per step: 19 step-equivalents; over 8 seeds, 3 steps each
    assert power.steps_per_run(2414, 8, 16, 1) == 19
    assert power.steps_per_run(2414, 8, 16, 8) == 3


def test_seed_level_power_matches_normal_approximation_for_large_n():
    # t → normal as df grows: power ≈ Φ(δ/(sd·√(2/n)) − z_{0.975})
    n, delta, sd = 400, 0.02, 0.1
    approx = norm.cdf(delta / (sd * math.sqrt(2 / n)) - norm.ppf(0.975))
    assert power.seed_level_power(n, delta, sd) == pytest.approx(approx, abs=0.005)


def test_seeds_per_arm_is_the_smallest_n_reaching_power():
    n = power.seeds_per_arm(0.02, 0.02)
    assert power.seed_level_power(n, 0.02, 0.02) >= 0.8 > power.seed_level_power(n - 1, 0.02, 0.02)
    assert n == 17  # classic: d = 1 needs 17 per arm for a two-sample t-test at 80%
    assert power.seeds_per_arm(0.0, 0.02) is None and power.seeds_per_arm(0.02, 0.0) is None
    paired = power.seeds_per_arm(0.02, 0.02, paired=True)
    assert (
        power.seed_level_power(paired, 0.02, 0.02, paired=True)
        >= 0.8
        > power.seed_level_power(paired - 1, 0.02, 0.02, paired=True)
    )


def test_bad_inputs_are_user_errors():
    with pytest.raises(RetrainError, match="--lift 0"):
        power.episodes_per_arm(0.3, 0.0)
    with pytest.raises(RetrainError, match="in \\[0, 1\\]"):
        power.episodes_per_arm(0.99, 0.05)
    with pytest.raises(RetrainError, match="--alpha"):
        power.episodes_per_arm(0.3, 0.05, alpha=1.5)


def test_power_cli_prints_2414(capsys):
    assert run_cli(["power", "--baseline-rate", "0.01875", "--lift", "0.0126"]) == 0
    out = capsys.readouterr().out
    assert "power 0.80: 2414" in out
    assert "19 steps per arm in total" in out
    assert "      8          3          3072" in out  # 8 seeds x 3 steps x 128


def test_power_cli_json_and_run_sd(capsys):
    assert (
        run_cli(["power", "--baseline-rate", "0.3", "--lift", "0.02", "--run-sd", "0.02", "--seeds", "4", "--json"])
        == 0
    )
    plan = json.loads(capsys.readouterr().out)
    assert plan["episodes_per_arm"] == power.episodes_per_arm(0.3, 0.02)
    assert plan["seeds_per_arm_seed_level"] == 17
    assert plan["by_seeds"] == [
        {
            "seeds": 4,
            "steps_per_run": math.ceil(plan["episodes_per_arm"] / 512),
            "episodes_per_arm": math.ceil(plan["episodes_per_arm"] / 512) * 512,
        }
    ]
    assert run_cli(["power", "--baseline-rate", "0.3", "--lift", "0"]) == 2


def test_min_seeds_for_resampling_test():
    # paired: 2 / 2^n < alpha; unpaired equal arms: 2 / C(2n, n) < alpha
    assert power.min_seeds_for_resampling_test(0.05, paired=True) == 6  # 2/64 = 0.031; 2/32 = 0.0625
    assert power.min_seeds_for_resampling_test(0.05, paired=False) == 4  # 2/70 = 0.029; 2/20 = 0.1
    assert power.min_seeds_for_resampling_test(0.01, paired=True) == 8
    assert power.min_seeds_for_resampling_test(0.01, paired=False) == 5
