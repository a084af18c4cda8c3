"""Per-token uncertainty h_t, the signal GTPO weights by and SEPA pools (docs/algorithms.md).

Each kind maps one completion's sampling logprobs (and, for `shannon_entropy`, the backend's
per-token entropies) to `h_T`, one value per completion token. The kinds are the entries of
`UNCERTAINTIES` (`[algorithm].uncertainty_kind`, a closed set: no plugins); one that consumes
"entropies" needs a backend and engine that provide them (checked at config load).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from retrain.errors import RetrainError
from retrain.registry import Registry

UncertaintyFn = Callable[[Sequence[float], Sequence[float] | None], list[float]]
UNCERTAINTIES: Registry[UncertaintyFn] = Registry("uncertainty kind", "[algorithm].uncertainty_kind")

# A token sampled with probability ~0 has surprisal → ∞; capping keeps one such token from
# dominating GTPO's per-sequence mean or turning it into inf/nan. exp(−50) ≈ 2e−22 is far below
# anything a sampler at temperature ≥ 0.1 produces in practice.
MAX_SURPRISAL = 50.0


def surprisal(logprobs: Sequence[float]) -> list[float]:
    """Surprisal of each sampled token, capped.

        h_t = min(−logprob_t, 50)

    −inf logprobs (and NaN) map to the cap, so the output is always finite.
    """
    return [MAX_SURPRISAL if math.isnan(lp) else min(-lp, MAX_SURPRISAL) for lp in logprobs]


def predictive_variance(logprobs: Sequence[float]) -> list[float]:
    """Bernoulli variance of "the model picks this token again".

        h_t = p_t (1 − p_t),   p_t = exp(logprob_t)  (clamped to [0, 1])

    In [0, 0.25]; unlike surprisal it is small both for near-certain tokens (p → 1) and for
    very unlikely ones (p → 0), peaking at p = 0.5. NaN logprobs give 0.
    """
    out_T = []
    for lp in logprobs:
        p = 0.0 if math.isnan(lp) else math.exp(min(lp, 0.0))  # lp > 0 is rounding: p = 1
        out_T.append(p * (1.0 - p))
    return out_T


def _shannon_entropy(logprobs: Sequence[float], entropies: Sequence[float] | None) -> list[float]:
    """Shannon entropy −Σ_v p_v log p_v of the sampling distribution at each position.

    Computed by the backend where the logits are (full distributions never travel to the CPU);
    here we only check it is present and aligned, and cap it like surprisal.
    """
    if entropies is None:
        raise RetrainError(
            "uncertainty_kind = 'shannon_entropy' needs per-token entropies, but the backend "
            "returned none. Use a backend that computes them (the local backend does when "
            "sampling with want_entropy), or set [algorithm].uncertainty_kind = 'surprisal'."
        )
    if len(entropies) != len(logprobs):
        raise ValueError(f"entropies has {len(entropies)} values but the completion has {len(logprobs)} tokens")
    return [min(float(e), MAX_SURPRISAL) for e in entropies]


@UNCERTAINTIES.register("surprisal", summary="h_t = min(−logprob_t, 50)")
def _surprisal_kind(logprobs: Sequence[float], entropies: Sequence[float] | None) -> list[float]:
    return surprisal(logprobs)


@UNCERTAINTIES.register("predictive_variance", summary="h_t = p_t(1 − p_t), p_t = exp(logprob_t)")
def _predictive_variance_kind(logprobs: Sequence[float], entropies: Sequence[float] | None) -> list[float]:
    return predictive_variance(logprobs)


UNCERTAINTIES.register(
    "shannon_entropy", summary="h_t = −Σ_v p_v log p_v over the vocabulary (from the backend)", consumes={"entropies"}
)(_shannon_entropy)


def token_uncertainty(kind: str, logprobs: Sequence[float], entropies: Sequence[float] | None = None) -> list[float]:
    """h_T for one completion, by `kind`:

    - surprisal:            h_t = min(−logprob_t, 50)
    - predictive_variance:  h_t = p_t (1 − p_t),  p_t = exp(logprob_t)
    - shannon_entropy:      h_t = entropies_t (computed by the backend), capped at 50;
                            raises RetrainError when the backend gave none.
    """
    return UNCERTAINTIES.resolve(kind)(logprobs, entropies)
