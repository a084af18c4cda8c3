"""Episode advantages: one number per completion, from the rewards of its prompt group.

Pure functions over `rewards_G` (the G completions sampled for one prompt). They are the built-in
`AdvantageFn`s of `retrain.rl.registry.ADVANTAGES`; a plugin has the same shape.
"""

from __future__ import annotations

from collections.abc import Sequence

# SPEC §3.1: rewards within this distance count as equal (ties, uninformative groups, MaxRL's floor).
TIE_TOL = 1e-6


def grpo_advantages(rewards: Sequence[float]) -> list[float]:
    """GRPO advantages, centred without dividing by the std.

        A_i = r_i − mean(r)

    Not std-normalised on purpose: dividing by std(r) up-weights groups whose rewards barely differ
    (Dr. GRPO, Liu et al. 2025, arXiv:2503.20783). The advantages of a group sum to 0.
    An empty group gives [].
    """
    rewards_G = [float(r) for r in rewards]
    if not rewards_G:
        return []
    mean = sum(rewards_G) / len(rewards_G)
    return [r - mean for r in rewards_G]


def maxrl_advantages(rewards: Sequence[float], eps: float = TIE_TOL) -> list[float]:
    """MaxRL advantages: GRPO's centring divided by the group's mean reward.

        A_i = (r_i − mean(r)) / (mean(r) + eps);   all zeros when mean(r) ≤ eps

    With binary rewards and success rate p = mean(r), a correct completion gets (1 − p)/p and a
    wrong one −1 (up to eps): rare successes on hard prompts get large credit, which is what
    maximum-likelihood training on the solved set would weight them by. When no completion
    succeeded (mean ≤ eps, negative means included) there is nothing to imitate, so every
    advantage is 0 rather than a huge division by ~0. An empty group gives [].
    """
    rewards_G = [float(r) for r in rewards]
    if not rewards_G:
        return []
    mean = sum(rewards_G) / len(rewards_G)
    if mean <= eps:
        return [0.0] * len(rewards_G)
    return [(r - mean) / (mean + eps) for r in rewards_G]


def is_uninformative(rewards: Sequence[float], tol: float = TIE_TOL) -> bool:
    """True when every reward of the group ties, so the group carries no learning signal.

        uninformative  ⇔  max(r) − min(r) ≤ tol     (⇔ |r_i − r_j| ≤ tol for all i, j)

    Such a group gives zero GRPO advantages (up to rounding) and contributes no datums (SPEC §3.1),
    but still counts in every reward metric. Groups with fewer than two completions are
    uninformative too: there is nothing to compare against. This is the same criterion as
    `retrain.rl.ties` uses for a "uniform" group (one reward bucket).
    """
    rewards_G = [float(r) for r in rewards]
    if len(rewards_G) < 2:
        return True
    return max(rewards_G) - min(rewards_G) <= tol
