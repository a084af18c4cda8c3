"""Reward-tie diagnostics: how often completions of one prompt got the same reward (docs/metrics.md).

Ties are where group-relative advantages lose signal; these rates say how much a group_size
choice wastes. Rewards are bucketed within 1e-6, the same tolerance as
`retrain.rl.advantages.is_uninformative`, so "uniform group" here means "uninformative group".
"""

from __future__ import annotations

from collections.abc import Sequence

from retrain.rl.advantages import TIE_TOL


def reward_buckets(rewards: Sequence[float], tol: float = TIE_TOL) -> list[int]:
    """Sizes of the tie buckets of one group.

    Sorted rewards are cut into buckets; a reward joins the current bucket when it is within `tol`
    of the bucket's smallest reward (anchoring at the first member, not chaining neighbour to
    neighbour, so a bucket never spans more than `tol`). One bucket ⇔ max − min ≤ tol.
    """
    sizes: list[int] = []
    anchor = None
    for r in sorted(float(x) for x in rewards):
        if anchor is not None and r - anchor <= tol:
            sizes[-1] += 1
        else:
            anchor = r
            sizes.append(1)
    return sizes


def reward_tie_stats(groups: Sequence[Sequence[float]], tol: float = TIE_TOL) -> dict[str, float | None]:
    """Tie rates over the groups with ≥ 2 completions (b_k = bucket sizes of a group of size G):

        reward_tie_group_rate       = #groups with some b_k ≥ 2 / #groups
        reward_uniform_group_rate   = #groups with one bucket / #groups
        reward_tie_pair_rate        = Σ_groups Σ_k C(b_k, 2) / Σ_groups C(G, 2)
        reward_unique_fraction_mean = mean over groups of (#buckets / G)

    Groups of size 0 or 1 have no pairs and are left out. When no group is left (e.g.
    group_size = 1), every rate is None (null in metrics.jsonl): there is no evidence either way,
    and 0.0 would read as "no ties".
    """
    tie_groups = uniform_groups = tied_pairs = all_pairs = 0
    unique_fractions = []
    for rewards_G in groups:
        g = len(rewards_G)
        if g < 2:
            continue
        sizes = reward_buckets(rewards_G, tol)
        tie_groups += any(b >= 2 for b in sizes)
        uniform_groups += len(sizes) == 1
        tied_pairs += sum(b * (b - 1) // 2 for b in sizes)
        all_pairs += g * (g - 1) // 2
        unique_fractions.append(len(sizes) / g)
    n = len(unique_fractions)
    if n == 0:
        return {
            "reward_tie_group_rate": None,
            "reward_uniform_group_rate": None,
            "reward_tie_pair_rate": None,
            "reward_unique_fraction_mean": None,
        }
    return {
        "reward_tie_group_rate": tie_groups / n,
        "reward_uniform_group_rate": uniform_groups / n,
        "reward_tie_pair_rate": tied_pairs / all_pairs,
        "reward_unique_fraction_mean": sum(unique_fractions) / n,
    }
