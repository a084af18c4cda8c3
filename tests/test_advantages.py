"""Episode advantages: GRPO, MaxRL, and the uninformative-group test (docs/algorithms.md)."""

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from retrain.rl.advantages import grpo_advantages, is_uninformative, maxrl_advantages

rewards_st = st.lists(st.floats(min_value=-10, max_value=10, allow_nan=False), min_size=1, max_size=32)
binary_st = st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=32)


# --- GRPO -------------------------------------------------------------------------------------


def test_grpo_hand_computed():
    # mean = 0.25
    assert grpo_advantages([1.0, 0.0, 0.0, 0.0]) == pytest.approx([0.75, -0.25, -0.25, -0.25])
    assert grpo_advantages([0.2, 0.4]) == pytest.approx([-0.1, 0.1])


def test_grpo_is_not_std_normalised():
    # With std normalisation both groups would give ±1; centring alone keeps the scale.
    assert grpo_advantages([0.0, 1.0]) == pytest.approx([-0.5, 0.5])
    assert grpo_advantages([0.0, 0.1]) == pytest.approx([-0.05, 0.05])


def test_grpo_edge_cases():
    assert grpo_advantages([]) == []
    assert grpo_advantages([0.7]) == [0.0]
    assert grpo_advantages([0.3, 0.3, 0.3]) == pytest.approx([0.0, 0.0, 0.0])


@settings(max_examples=100, deadline=None)
@given(rewards_st)
def test_grpo_sums_to_zero_and_keeps_order(rewards):
    adv = grpo_advantages(rewards)
    assert len(adv) == len(rewards)
    assert sum(adv) == pytest.approx(0.0, abs=1e-9 * len(rewards) * 10)
    # A shift of every reward leaves the advantages unchanged; the order of rewards is kept.
    shifted = grpo_advantages([r + 3.0 for r in rewards])
    assert shifted == pytest.approx(adv, abs=1e-9)
    for r_i, a_i in zip(rewards, adv, strict=True):
        for r_j, a_j in zip(rewards, adv, strict=True):
            if r_i > r_j:
                assert a_i >= a_j


# --- MaxRL ------------------------------------------------------------------------------------


def test_maxrl_hand_computed():
    # mean 0.25: correct → 0.75 / 0.250001, wrong → −0.25 / 0.250001
    adv = maxrl_advantages([1.0, 0.0, 0.0, 0.0])
    assert adv[0] == pytest.approx(0.75 / (0.25 + 1e-6), rel=1e-12)
    assert adv[1:] == pytest.approx([-0.25 / (0.25 + 1e-6)] * 3, rel=1e-12)
    assert adv[0] == pytest.approx(3.0, abs=1e-4)  # (1 − p)/p with p = 1/4


def test_maxrl_zero_when_mean_not_positive():
    assert maxrl_advantages([0.0, 0.0, 0.0]) == [0.0, 0.0, 0.0]
    assert maxrl_advantages([1e-7, 0.0]) == [0.0, 0.0]  # mean 5e-8 ≤ eps
    assert maxrl_advantages([-1.0, 0.5]) == [0.0, 0.0]  # negative mean
    assert maxrl_advantages([1.0, -1.0]) == [0.0, 0.0]  # mean exactly 0
    assert maxrl_advantages([0.2, 0.0], eps=0.5) == [0.0, 0.0]  # eps is the threshold
    assert maxrl_advantages([]) == []


@settings(max_examples=100, deadline=None)
@given(binary_st)
@example([0.0] * 10 + [1.0])  # p = 1/11: the eps in the denominator moves −1 by 1.1e-5
def test_maxrl_binary_rewards(rewards):
    adv = maxrl_advantages(rewards)
    p = sum(rewards) / len(rewards)
    if p == 0.0:
        assert adv == [0.0] * len(rewards)
        return
    for r, a in zip(rewards, adv, strict=True):
        # (1 − p)/p for a correct answer, −1 for a wrong one, each over p + eps (eps = 1e-6) rather than p
        expected = ((1 - p) if r == 1.0 else -p) / (p + 1e-6)
        assert a == pytest.approx(expected, rel=1e-9)
        assert a == pytest.approx((1 - p) / p if r == 1.0 else -1.0, rel=4e-5)  # eps/p ≤ 32e-6 (≤ 32 rewards)
    assert sum(adv) == pytest.approx(0.0, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(rewards_st)
def test_maxrl_is_grpo_divided_by_mean(rewards):
    mean = sum(rewards) / len(rewards)
    adv = maxrl_advantages(rewards)
    if mean <= 1e-6:
        assert adv == [0.0] * len(rewards)
    else:
        expected = [a / (mean + 1e-6) for a in grpo_advantages(rewards)]
        assert adv == pytest.approx(expected, rel=1e-9, abs=1e-9)
        assert all(math.isfinite(a) for a in adv)


# --- uninformative groups ---------------------------------------------------------------------


def test_is_uninformative_hand_cases():
    assert is_uninformative([1.0, 1.0, 1.0])
    assert is_uninformative([0.0, 0.0])
    assert is_uninformative([0.5, 0.5 + 1e-7, 0.5 - 1e-7])  # spread 2e-7 ≤ 1e-6
    assert not is_uninformative([0.0, 1.0])
    assert not is_uninformative([0.5, 0.5 + 2e-6])
    assert is_uninformative([0.4])  # nothing to compare with
    assert is_uninformative([])
    assert not is_uninformative([0.0, 0.1], tol=0.05)
    assert is_uninformative([0.0, 0.1], tol=0.2)


@settings(max_examples=100, deadline=None)
@given(rewards_st)
def test_uninformative_groups_have_zero_grpo_advantage(rewards):
    if is_uninformative(rewards):
        assert all(abs(a) <= 1e-6 + 1e-12 for a in grpo_advantages(rewards))
    else:
        assert max(abs(a) for a in grpo_advantages(rewards)) > 0.0
