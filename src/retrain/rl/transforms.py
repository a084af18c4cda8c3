"""Token-level credit: spread one completion's episode advantage A over its tokens (SPEC §3.3).

Pure functions over one completion: `h` is its per-token uncertainty h_T (`retrain.rl.uncertainty`)
and `planning_mask` its mask_T (1 on planning tokens, `retrain.rl.planning`). Each transform in
`TRANSFORMS` has the `TokenTransform` signature (`retrain.rl.registry`):

    fn(advantage, h, planning_mask, *, beta, alpha, sepa_lambda) -> adv_T
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
    return [
        x if m else lam * mean_exec + (1.0 - lam) * x
        for x, m in zip(h_T, planning_mask, strict=True)
    ]


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


def apply_hicra(
    token_adv: Sequence[float], planning_mask: Sequence[int], alpha: float
) -> list[float]:
    """HICRA: extra credit on planning tokens.

        A'_t = A_t + α·|A_t|·mask_t

    On planning tokens a positive advantage becomes (1 + α)·A_t and a negative one (1 − α)·A_t:
    it amplifies rewarded planning and *softens* penalties on it (that is the formula, not a bug).
    α = 0 is the identity; execution tokens are never changed.
    """
    return [
        a + alpha * abs(a) * (1.0 if m else 0.0)
        for a, m in zip(token_adv, planning_mask, strict=True)
    ]


def _none(advantage, h, planning_mask, *, beta, alpha, sepa_lambda) -> list[float]:
    """A_t = A for every token."""
    return [float(advantage)] * len(h)


def _gtpo(advantage, h, planning_mask, *, beta, alpha, sepa_lambda) -> list[float]:
    """A_t = A·w_t (GTPO)."""
    return [advantage * w for w in gtpo_weights(h, beta)]


def _gtpo_hicra(advantage, h, planning_mask, *, beta, alpha, sepa_lambda) -> list[float]:
    """A_t = A·w_t, then A_t += α·|A_t|·mask_t (GTPO then HICRA)."""
    return apply_hicra(_gtpo(advantage, h, planning_mask, beta=beta, alpha=alpha,
                             sepa_lambda=sepa_lambda), planning_mask, alpha)


def _gtpo_sepa(advantage, h, planning_mask, *, beta, alpha, sepa_lambda) -> list[float]:
    """A_t = A·w_t(h') with h' = sepa_pool(h, mask, λ) (pooling happens before GTPO)."""
    pooled_h_T = sepa_pool(h, planning_mask, sepa_lambda)
    return _gtpo(advantage, pooled_h_T, planning_mask, beta=beta, alpha=alpha,
                 sepa_lambda=sepa_lambda)


# The built-in `[algorithm].transform_mode` values. `retrain.rl.registry.TRANSFORMS` is this table.
TRANSFORMS: dict[str, Callable[..., list[float]]] = {
    "none": _none,
    "gtpo": _gtpo,
    "gtpo_hicra": _gtpo_hicra,
    "gtpo_sepa": _gtpo_sepa,
}


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

    `transform` is a built-in name, a plugin path "module:function" (resolved through
    `retrain.rl.registry.resolve`), or an already resolved `TokenTransform`. A training loop
    should resolve once and call the function directly; this is the convenience entry point.
    """
    if len(h) != len(planning_mask):
        raise ValueError(f"h has {len(h)} tokens but planning_mask has {len(planning_mask)}")
    if isinstance(transform, str):
        fn = TRANSFORMS.get(transform)
        if fn is None:
            from retrain.rl.registry import resolve  # late: the registry imports this module

            fn = resolve(transform, TRANSFORMS, "transform")
    else:
        fn = transform
    return fn(advantage, h, planning_mask, beta=beta, alpha=alpha, sepa_lambda=sepa_lambda)
