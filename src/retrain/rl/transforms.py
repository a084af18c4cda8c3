"""Token-level credit: spread one completion's episode advantage A over its tokens.

Pure functions over one completion: `h` is its per-token uncertainty h_T (`retrain.rl.uncertainty`)
and `planning_mask` its mask_T (1 on planning tokens, `retrain.rl.planning`). Each transform is a
function plus one `TRANSFORMS.register` line (`[algorithm].transform_mode`); its keyword-only
parameters are the knobs it consumes, and the RL step hands it exactly those:

    fn(advantage, h, planning_mask, *, <knobs among beta, alpha, sepa_lambda>) -> adv_T

Formulas and why: docs/algorithms.md. Adding one: CONTRIBUTING.md ("Adding a transform").
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from retrain.errors import RetrainError
from retrain.registry import Registry, Variant, checked_floats

# Below this mean uncertainty every token is (numerically) certain: GTPO has nothing to weight by,
# and h_t / mean(h) would blow up rounding noise.
GTPO_MIN_MEAN_H = 1e-7


def sepa_pool(h: Sequence[float], planning_mask: Sequence[int], lam: float) -> list[float]:
    """SEPA: pull execution-token uncertainty towards its mean, leave planning tokens alone.

        h'_t = λ·mean(h_exec) + (1 − λ)·h_t   where mask_t = 0 (execution tokens)
        h'_t = h_t                            where mask_t = 1 (planning tokens)

    mean(h_exec) is over this completion's execution tokens. λ is clamped to [0, 1]: λ = 0 is the
    identity, λ = 1 makes every execution token's uncertainty equal, so GTPO then weights execution
    tokens uniformly and only planning tokens stand out. No execution tokens → unchanged.
    """
    lam = min(max(float(lam), 0.0), 1.0)
    h_T = [float(x) for x in h]
    exec_h = [x for x, m in zip(h_T, planning_mask, strict=True) if not m]
    if lam == 0.0 or not exec_h:
        return h_T
    mean_exec = sum(exec_h) / len(exec_h)
    return [x if m else lam * mean_exec + (1.0 - lam) * x for x, m in zip(h_T, planning_mask, strict=True)]


def gtpo_weights(h: Sequence[float], beta: float) -> list[float]:
    """GTPO token weights: more credit to tokens where the model was uncertain.

        w_t = max(0, 1 + β·(h_t / mean(h) − 1))

    mean(h) is over this completion's tokens. Before the clamp the weights average exactly 1, so
    A·w keeps the completion's mean advantage; the clamp (only reachable with β > 1 or h_t < 0)
    zeroes a weight rather than flipping the advantage's sign. Uniform (all 1) when β = 0 or
    mean(h) < 1e-7. Empty input → [].
    """
    h_T = [float(x) for x in h]
    if not h_T:
        return []
    mean_h = sum(h_T) / len(h_T)
    if beta == 0.0 or mean_h < GTPO_MIN_MEAN_H:
        return [1.0] * len(h_T)
    return [max(0.0, 1.0 + beta * (x / mean_h - 1.0)) for x in h_T]


def apply_hicra(token_adv: Sequence[float], planning_mask: Sequence[int], alpha: float) -> list[float]:
    """HICRA: extra credit on planning tokens.

        A'_t = A_t + α·|A_t|·mask_t

    On planning tokens a positive advantage becomes (1 + α)·A_t and a negative one (1 − α)·A_t:
    it amplifies rewarded planning and *softens* penalties on it (that is the formula, not a bug).
    α = 0 is the identity; execution tokens are never changed.
    """
    return [a + alpha * abs(a) * (1.0 if m else 0.0) for a, m in zip(token_adv, planning_mask, strict=True)]


# The knobs a transform can ask for by naming them as keyword-only parameters.
KNOBS = ("beta", "alpha", "sepa_lambda")


# A transform: (advantage, h_T, mask_T, *, knobs) -> adv_T, one value per token. `advantage` is the
# completion's episode advantage, `h` its per-token uncertainty, `planning_mask` 1 on planning tokens.
# Keyword-only parameters ask for knobs: `beta` ([gtpo].beta), `alpha` ([hicra].alpha), `sepa_lambda`
# (the step's SEPA λ; a transform that does not ask for it is never handed λ, and the run logs
# sepa_lambda = 0). The knobs differ per transform, so the type is a plain callable; `transform_variant`
# has a worked example.
TokenTransform = Callable[..., list[float]]


def transform_knobs(fn: Callable[..., Any], path: str) -> frozenset[str]:
    """The knobs `fn` asks for: its keyword-only parameters (all of them for `**kwargs`)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return frozenset(KNOBS)
    asked = {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = sorted(asked - set(KNOBS))
    if unknown:
        raise RetrainError(
            f"transform {path!r} asks for keyword(s) {unknown}; a transform may ask for {', '.join(KNOBS)}"
        )
    return frozenset(asked)


def transform_variant(fn: Callable[..., Any], path: str) -> Variant[TokenTransform]:
    """A plugin (or any function) as a transform entry: it consumes the knobs its signature asks
    for, and its output is checked on every call (one finite value per token).

    Example — give planning tokens double credit and nothing else (`my_plugins.py` next to the TOML,
    then `[algorithm] transform_mode = "my_plugins:planning_only"`)::

        >>> def planning_only(advantage, h, planning_mask):
        ...     return [2.0 * advantage if m else 0.0 for m in planning_mask]
        >>> entry = transform_variant(planning_only, "my_plugins:planning_only")
        >>> sorted(entry.consumes), entry.load()(0.5, [1.0, 2.0, 3.0], [0, 1, 1])
        ([], [0.0, 1.0, 1.0])
    """

    @functools.wraps(fn)
    def checked(advantage: float, h: Sequence[float], planning_mask: Sequence[int], **knobs: float) -> list[float]:
        return checked_floats(fn(advantage, h, planning_mask, **knobs), len(h), path, "tokens")

    return Variant(path, checked, f"plugin {path}", consumes=transform_knobs(fn, path), plugin=True)


def _knobs_match_signature(entry: Variant[TokenTransform]) -> None:
    """A built-in's declared knobs are exactly its keyword-only parameters (so they cannot drift)."""
    asked = transform_knobs(entry.load(), entry.name)
    if asked != entry.consumes & set(KNOBS):
        raise ValueError(
            f"transform {entry.name!r} declares {sorted(entry.consumes & set(KNOBS))} "
            f"but its signature asks for {sorted(asked)}"
        )


TRANSFORMS: Registry[TokenTransform] = Registry(
    "transform", "[algorithm].transform_mode", transform_variant, validate_entry=_knobs_match_signature
)


@TRANSFORMS.register("none", summary="A_t = A")
def none_transform(advantage: float, h: Sequence[float], planning_mask: Sequence[int]) -> list[float]:
    """A_t = A for every token."""
    return [float(advantage)] * len(h)


@TRANSFORMS.register("gtpo", summary="A_t = A·w_t, w_t = max(0, 1 + β(h_t / mean(h) − 1))", consumes={"beta"})
def gtpo_transform(advantage: float, h: Sequence[float], planning_mask: Sequence[int], *, beta: float) -> list[float]:
    """A_t = A·w_t (GTPO)."""
    return [advantage * w for w in gtpo_weights(h, beta)]


@TRANSFORMS.register(
    "gtpo_hicra", summary="GTPO, then A_t ← A_t + α·|A_t|·mask_t", consumes={"beta", "alpha", "planning_mask"}
)
def gtpo_hicra_transform(
    advantage: float, h: Sequence[float], planning_mask: Sequence[int], *, beta: float, alpha: float
) -> list[float]:
    """A_t = A·w_t, then A_t += α·|A_t|·mask_t (GTPO then HICRA)."""
    return apply_hicra(gtpo_transform(advantage, h, planning_mask, beta=beta), planning_mask, alpha)


@TRANSFORMS.register(
    "gtpo_sepa",
    summary="h_t ← λ·mean(h_exec) + (1 − λ)·h_t on execution tokens, then GTPO",
    consumes={"beta", "sepa_lambda", "planning_mask"},
)
def gtpo_sepa_transform(
    advantage: float, h: Sequence[float], planning_mask: Sequence[int], *, beta: float, sepa_lambda: float
) -> list[float]:
    """A_t = A·w_t(h') with h' = sepa_pool(h, mask, λ) (pooling happens before GTPO)."""
    return gtpo_transform(advantage, sepa_pool(h, planning_mask, sepa_lambda), planning_mask, beta=beta)


def knob_values(consumes: frozenset[str], *, beta: float, alpha: float, sepa_lambda: float) -> dict[str, float]:
    """The keyword arguments a transform that consumes `consumes` is called with."""
    values = {"beta": beta, "alpha": alpha, "sepa_lambda": sepa_lambda}
    return {k: v for k, v in values.items() if k in consumes}


def token_advantages(
    advantage: float,
    h: Sequence[float],
    planning_mask: Sequence[int],
    *,
    transform: str | Callable[..., list[float]],
    beta: float = 0.1,
    alpha: float = 0.2,
    sepa_lambda: float = 0.0,
) -> list[float]:
    """Token advantages adv_T of one completion with episode advantage A.

    - none:        A_t = A
    - gtpo:        A_t = A·w_t,  w_t = max(0, 1 + β(h_t / mean(h) − 1))
    - gtpo_hicra:  gtpo, then A_t ← A_t + α·|A_t|·mask_t
    - gtpo_sepa:   h_t ← λ·mean(h_exec) + (1 − λ)·h_t on execution tokens, then gtpo

    `transform` is a built-in name, a plugin path "module:function", or a function. A training
    loop resolves once (`TRANSFORMS.entry`) and calls the function directly; this is the
    convenience entry point.
    """
    if len(h) != len(planning_mask):
        raise ValueError(f"h has {len(h)} tokens but planning_mask has {len(planning_mask)}")
    entry = TRANSFORMS.entry(transform) if isinstance(transform, str) else transform_variant(transform, repr(transform))
    knobs = knob_values(entry.consumes, beta=beta, alpha=alpha, sepa_lambda=sepa_lambda)
    return entry.load()(advantage, h, planning_mask, **knobs)
