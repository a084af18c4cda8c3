"""Episode advantages: one number per completion, from the rewards of its prompt group.

Pure functions over `rewards_G` (the G completions sampled for one prompt), each registered in
`ADVANTAGES` (`[algorithm].advantage_mode`); a plugin "module:function" has the same shape
(`AdvantageFn`) and its output is checked (length, finite) on every call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from retrain.registry import Registry, Variant, checked_floats

# Rewards within this distance count as equal (ties, uninformative groups, MaxRL's floor);
# docs/algorithms.md.
TIE_TOL = 1e-6


@runtime_checkable
class AdvantageFn(Protocol):
    """Episode advantages for one prompt group: rewards_G → adv_G (same length, finite).

    Example — a std-normalised GRPO as a plugin (file `my_plugins.py` next to your TOML, then
    `[algorithm] advantage_mode = "my_plugins:grpo_std"`)::

        >>> def grpo_std(rewards: list[float]) -> list[float]:
        ...     mean = sum(rewards) / len(rewards)
        ...     std = (sum((r - mean) ** 2 for r in rewards) / len(rewards)) ** 0.5
        ...     return [(r - mean) / (std + 1e-6) for r in rewards]
        >>> [round(a, 3) for a in grpo_std([1.0, 0.0, 0.0, 1.0])]
        [1.0, -1.0, -1.0, 1.0]
        >>> isinstance(grpo_std, AdvantageFn)
        True

    Groups whose rewards all tie are dropped before the call (`is_uninformative`).
    """

    def __call__(self, rewards: list[float]) -> list[float]: ...


def _advantage_plugin(fn: Callable[[list[float]], list[float]], path: str) -> Variant[AdvantageFn]:
    """A plugin advantage, its output checked on every call (length, finite values)."""

    @functools.wraps(fn)
    def checked(rewards: list[float]) -> list[float]:
        return checked_floats(fn(list(rewards)), len(rewards), path, "rewards")

    return Variant(path, checked, f"plugin {path}", plugin=True)


ADVANTAGES: Registry[AdvantageFn] = Registry("advantage", "[algorithm].advantage_mode", _advantage_plugin)


@ADVANTAGES.register("grpo", summary="A_i = r_i − mean(r)")
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


@ADVANTAGES.register("maxrl", summary="A_i = (r_i − mean(r)) / (mean(r) + 1e-6); 0 when mean(r) ≤ 1e-6")
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

    Such a group gives zero GRPO advantages (up to rounding) and contributes no datums,
    but still counts in every reward metric. Groups with fewer than two completions are
    uninformative too: there is nothing to compare against. This is the same criterion as
    `retrain.rl.ties` uses for a "uniform" group (one reward bucket).
    """
    rewards_G = [float(r) for r in rewards]
    if len(rewards_G) < 2:
        return True
    return max(rewards_G) - min(rewards_G) <= tol
