"""The policy-gradient loss over a batch of completions, aggregated over an explicit mask (docs/algorithms.md).

Shapes: B sequences (datums) × T completion positions, right-padded; `mask_B_T` is 1 on real
completion tokens and 0 on padding. Padding is never inferred from a zero advantage or logprob.

Micro-batching. A backend that splits one optimizer step's datums into micro-batches computes
the full batch's normalizer once and passes it to every micro-batch; the micro-batch losses then
SUM to the full-batch loss, and so do their gradients (call `backward()` on each)::

    norm = loss_normalizer([len(d.completion_ids) for d in datums], loss_agg)
    for mb in micro_batches:
        out = policy_loss(..., loss_agg=loss_agg, normalizer=norm)
        out.loss.backward()
    # diagnostics: weight each micro-batch's clip_fraction / kl / sampler_train_kl by num_tokens
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

LOSS_AGGS = ("token_mean", "seq_mean")


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar, differentiable w.r.t. new_logprobs_B_T
    clip_fraction: float  # masked tokens whose clipped branch was taken (no gradient) / num_tokens
    kl: float  # masked token mean of k3(π‖π_ref); 0.0 without a reference
    sampler_train_kl: float  # masked token mean of (old − new): sampler vs trainer mismatch
    num_tokens: int  # masked tokens in this (micro-)batch: the weight for combining diagnostics


def loss_normalizer(num_tokens_D: Sequence[int], loss_agg: str) -> float:
    """The full batch's normalizer for `policy_loss(..., normalizer=...)`.

        token_mean:  N = Σ_d num_tokens_d          (completion tokens in the step)
        seq_mean:    N = #{d : num_tokens_d > 0}   (sequences with at least one token)

    Never 0 (an empty batch gives 1) so the loss stays finite.
    """
    _check_agg(loss_agg)
    if loss_agg == "token_mean":
        n = sum(int(t) for t in num_tokens_D)
    else:
        n = sum(1 for t in num_tokens_D if t > 0)
    return float(max(n, 1))


def policy_loss(
    new_logprobs_B_T: torch.Tensor,
    old_logprobs_B_T: torch.Tensor,
    advantages_B_T: torch.Tensor,
    mask_B_T: torch.Tensor,
    *,
    clip_eps: float = 0.0,
    clip_eps_high: float = 0.0,
    loss_agg: str = "token_mean",
    kl_beta: float = 0.0,
    ref_logprobs_B_T: torch.Tensor | None = None,
    normalizer: float | None = None,
) -> LossOutput:
    """Importance-sampled policy-gradient loss, optionally PPO-clipped, plus an optional KL term.

    Per token t of sequence b (with ρ = exp(logp_new − logp_old), A the token advantage):

        ℓ_bt = −ρ·A                                        clip_eps = 0
        ℓ_bt = −min(ρ·A, clip(ρ, 1 − ε, 1 + ε_high)·A)     clip_eps = ε > 0 (ε_high = ε when 0)
        ℓ_bt += kl_beta · k3_bt,   k3 = exp(ref − new) − (ref − new) − 1   (kl_beta > 0)

    Aggregated over the mask m_bt:

        token_mean:  L = Σ_bt m_bt·ℓ_bt / N          N = normalizer or Σ_bt m_bt
        seq_mean:    L = Σ_b (Σ_t m_bt·ℓ_bt / Σ_t m_bt) / S
                                                     S = normalizer or #{b : Σ_t m_bt > 0}

    ∇L is the policy gradient −A·∇logπ (scaled by ρ), which is all that matters. The value of L is
    not a distance to anything and can be negative: on-policy ρ = 1 so L = −mean(A) over tokens,
    and although a group's advantages sum to 0 per *completion*, they do not per *token* (correct
    and wrong completions differ in length; GTPO/HICRA reweight tokens; MaxRL scales successes by
    (1 − p)/p), so the token mean of −A is negative whenever positive credit covers more tokens.

    Positions with m = 0 contribute nothing to the loss or the gradient, whatever their logprobs
    or advantages hold (their values are replaced before any arithmetic, so inf/nan padding is safe).
    Computed in float32 whatever the input dtype.
    """
    _check_agg(loss_agg)
    if kl_beta > 0.0 and ref_logprobs_B_T is None:
        raise ValueError("kl_beta > 0 needs ref_logprobs_B_T (logprobs with the adapter disabled)")
    m_B_T = mask_B_T.bool()
    m_f_B_T = m_B_T.float()
    old_B_T = torch.where(m_B_T, old_logprobs_B_T.float(), 0.0).detach()
    # Padding gets new = old (ratio 1) and A = 0: torch.where routes no gradient to the other
    # branch, so garbage there can never leak nan into the gradient (0 * inf would).
    new_B_T = torch.where(m_B_T, new_logprobs_B_T.float(), old_B_T)
    adv_B_T = torch.where(m_B_T, advantages_B_T.float(), 0.0).detach()

    ratio_B_T = torch.exp(new_B_T - old_B_T)
    if clip_eps > 0.0:
        eps_high = clip_eps_high if clip_eps_high > 0.0 else clip_eps
        clipped_B_T = torch.clamp(ratio_B_T, 1.0 - clip_eps, 1.0 + eps_high)
        term_B_T = -torch.minimum(ratio_B_T * adv_B_T, clipped_B_T * adv_B_T)
        # The clipped branch is the one taken (and its gradient is 0) exactly here.
        is_clipped_B_T = ((adv_B_T > 0) & (ratio_B_T > 1.0 + eps_high)) | ((adv_B_T < 0) & (ratio_B_T < 1.0 - clip_eps))
        num_clipped = int((is_clipped_B_T & m_B_T).sum().item())
    else:
        term_B_T = -ratio_B_T * adv_B_T
        num_clipped = 0

    kl_mean = 0.0
    if ref_logprobs_B_T is not None:
        ref_B_T = torch.where(m_B_T, ref_logprobs_B_T.float(), new_B_T).detach()
        diff_B_T = ref_B_T - new_B_T
        k3_B_T = torch.exp(diff_B_T) - diff_B_T - 1.0  # ≥ 0; unbiased, low-variance KL (Schulman)
        if kl_beta > 0.0:
            term_B_T = term_B_T + kl_beta * k3_B_T
        kl_mean = _masked_mean(k3_B_T.detach(), m_f_B_T)

    term_B_T = term_B_T * m_f_B_T
    tokens_B = m_f_B_T.sum(dim=1)
    if loss_agg == "token_mean":
        denom = normalizer if normalizer is not None else max(float(tokens_B.sum().item()), 1.0)
        loss = term_B_T.sum() / denom
    else:
        per_seq_B = term_B_T.sum(dim=1) / tokens_B.clamp(min=1.0)
        denom = normalizer if normalizer is not None else max(float((tokens_B > 0).sum().item()), 1.0)
        loss = per_seq_B.sum() / denom

    num_tokens = int(m_B_T.sum().item())
    return LossOutput(
        loss=loss,
        clip_fraction=num_clipped / num_tokens if num_tokens else 0.0,
        kl=kl_mean,
        sampler_train_kl=_masked_mean((old_B_T - new_B_T).detach(), m_f_B_T),
        num_tokens=num_tokens,
    )


def _masked_mean(x_B_T: torch.Tensor, m_f_B_T: torch.Tensor) -> float:
    """Σ m·x / Σ m, or 0.0 with no masked tokens."""
    n = float(m_f_B_T.sum().item())
    return float((x_B_T * m_f_B_T).sum().item() / n) if n else 0.0


def _check_agg(loss_agg: str) -> None:
    if loss_agg not in LOSS_AGGS:
        raise ValueError(f"loss_agg must be one of {', '.join(LOSS_AGGS)}, got {loss_agg!r}")
