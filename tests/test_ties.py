"""Reward-tie diagnostics (docs/metrics.md)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrain.rl.advantages import is_uninformative
from retrain.rl.ties import reward_buckets, reward_tie_stats

KEYS = ("reward_tie_group_rate", "reward_uniform_group_rate", "reward_tie_pair_rate", "reward_unique_fraction_mean")


def test_buckets_hand_computed():
    assert reward_buckets([1.0, 0.0, 1.0, 0.5]) == [1, 1, 2]
    assert reward_buckets([0.3, 0.3 + 5e-7, 0.3 + 9e-7]) == [3]  # all within 1e-6 of 0.3
    # Anchored at the bucket's smallest value, not chained: 0, 0.8e-6, 1.6e-6 → two buckets.
    assert reward_buckets([0.0, 0.8e-6, 1.6e-6]) == [2, 1]
    assert reward_buckets([]) == []


def test_tie_stats_hand_computed():
    groups = [
        [1.0, 1.0, 1.0, 1.0],  # uniform: 1 bucket of 4 → 6 tied pairs, unique 1/4
        [1.0, 0.0, 0.0, 0.5],  # tie: buckets 2,1,1 → 1 tied pair, unique 3/4
        [0.0, 1.0],  # no tie: 0 pairs of 1, unique 1
        [0.7],  # G = 1: left out
    ]
    stats = reward_tie_stats(groups)
    assert stats["reward_tie_group_rate"] == pytest.approx(2 / 3)
    assert stats["reward_uniform_group_rate"] == pytest.approx(1 / 3)
    assert stats["reward_tie_pair_rate"] == pytest.approx((6 + 1 + 0) / (6 + 6 + 1))
    assert stats["reward_unique_fraction_mean"] == pytest.approx((1 / 4 + 3 / 4 + 1) / 3)


def test_tie_stats_without_usable_groups_are_none():
    assert reward_tie_stats([]) == dict.fromkeys(KEYS)
    assert reward_tie_stats([[1.0], [0.0], []]) == dict.fromkeys(KEYS)


groups_st = st.lists(
    st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.0 + 1e-7]), min_size=0, max_size=12),
    max_size=10,
)


@settings(max_examples=100, deadline=None)
@given(groups_st)
def test_tie_stats_invariants(groups):
    stats = reward_tie_stats(groups)
    usable = [g for g in groups if len(g) >= 2]
    if not usable:
        assert all(stats[k] is None for k in KEYS)
        return
    for k in KEYS:
        assert 0.0 <= stats[k] <= 1.0
    # Uniform groups are exactly the uninformative ones, and every uniform group is a tie group.
    assert stats["reward_uniform_group_rate"] == pytest.approx(sum(is_uninformative(g) for g in usable) / len(usable))
    assert stats["reward_uniform_group_rate"] <= stats["reward_tie_group_rate"]
    # No ties at all ⇔ every reward unique ⇔ no tied pairs.
    no_ties = stats["reward_tie_group_rate"] == 0.0
    assert no_ties == (stats["reward_tie_pair_rate"] == 0.0)
    assert no_ties == (stats["reward_unique_fraction_mean"] == 1.0)
    # Bucket sizes partition each group.
    for g in usable:
        assert sum(reward_buckets(g)) == len(g)
