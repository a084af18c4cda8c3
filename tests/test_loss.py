"""Policy loss: values, clipping, KL, masking, and micro-batch equivalence (docs/algorithms.md)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from retrain.rl.loss import loss_normalizer, policy_loss

# Two sequences, the second one token shorter (its last position is padding).
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
OLD = torch.zeros(2, 3)
RATIO = torch.tensor([[1.5, 0.5, 1.0], [1.1, 1.0, 1.0]], dtype=torch.float64)
NEW = torch.log(RATIO).float()
ADV = torch.tensor([[1.0, -1.0, 2.0], [-0.5, 0.5, 9.0]])  # 9.0 sits on padding


def test_hand_computed_token_mean_and_seq_mean():
    # −ρ·A per token: −1.5, 0.5, −2 | 0.55, −0.5   (the padded 9.0 never counts)
    out = policy_loss(NEW, OLD, ADV, MASK)
    assert out.loss.item() == pytest.approx(-2.95 / 5, rel=1e-6)
    assert out.num_tokens == 5 and out.clip_fraction == 0.0 and out.kl == 0.0
    seq = policy_loss(NEW, OLD, ADV, MASK, loss_agg="seq_mean")
    assert seq.loss.item() == pytest.approx((-3.0 / 3 + 0.05 / 2) / 2, rel=1e-6)


def test_hand_computed_ppo_clip_symmetric_and_asymmetric():
    # ε = 0.2: ρ=1.5, A=1 → 1.2 (clipped); ρ=0.5, A=−1 → −0.8 (clipped); the rest unclipped.
    out = policy_loss(NEW, OLD, ADV, MASK, clip_eps=0.2)
    assert out.loss.item() == pytest.approx((-1.2 + 0.8 - 2.0 + 0.55 - 0.5) / 5, rel=1e-6)
    assert out.clip_fraction == pytest.approx(2 / 5)
    # ε_high = 0.6: ρ = 1.5 is now inside [0.8, 1.6]; only the low side clips.
    out = policy_loss(NEW, OLD, ADV, MASK, clip_eps=0.2, clip_eps_high=0.6)
    assert out.loss.item() == pytest.approx((-1.5 + 0.8 - 2.0 + 0.55 - 0.5) / 5, rel=1e-6)
    assert out.clip_fraction == pytest.approx(1 / 5)


def test_clipped_tokens_get_no_gradient_and_others_get_minus_ratio_a():
    new = NEW.clone().requires_grad_(True)
    policy_loss(new, OLD, ADV, MASK, clip_eps=0.2).loss.backward()
    # d(−ρA)/d new = −ρA/N on unclipped tokens, 0 on clipped tokens and on padding.
    expected = torch.tensor([[0.0, 0.0, -2.0], [0.55, -0.5, 0.0]]) / 5
    assert torch.allclose(new.grad, expected, atol=1e-6)


def test_kl_term_hand_computed():
    ref = torch.tensor([[math.log(2.0), 0.0, 0.0], [0.0, math.log(0.5), 0.0]])
    new = torch.zeros(2, 3)
    adv = torch.zeros(2, 3)
    # k3 = e^d − d − 1 with d = ref − new: d = ln2 → 1 − ln2; d = −ln2 → ln2 − 1/2; d = 0 → 0
    k3 = [1 - math.log(2), 0.0, 0.0, math.log(2) - 0.5, 0.0]
    out = policy_loss(new, new, adv, MASK, kl_beta=0.5, ref_logprobs_B_T=ref)
    assert out.kl == pytest.approx(sum(k3) / 5, rel=1e-6)
    assert out.loss.item() == pytest.approx(0.5 * sum(k3) / 5, rel=1e-6)
    # With kl_beta = 0 the KL is still reported but not in the loss.
    out0 = policy_loss(new, new, adv, MASK, ref_logprobs_B_T=ref)
    assert out0.kl == pytest.approx(sum(k3) / 5, rel=1e-6) and out0.loss.item() == 0.0


def test_sampler_train_kl_is_mean_old_minus_new():
    old = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -50.0]])
    new = torch.tensor([[-1.5, -2.0, -2.0], [-1.25, -1.0, 0.0]])
    out = policy_loss(new, old, torch.zeros(2, 3), MASK)
    assert out.sampler_train_kl == pytest.approx((0.5 + 0.0 - 1.0 + 0.25 + 0.0) / 5)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["token_mean", "seq_mean"]))
def test_on_policy_loss_is_minus_mean_advantage(seed, loss_agg):
    g = torch.Generator().manual_seed(seed)
    B, T = 4, 6
    logp = -torch.rand(B, T, generator=g) * 5
    adv = torch.randn(B, T, generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).int()
    out = policy_loss(logp, logp.clone(), adv, mask, loss_agg=loss_agg, clip_eps=0.2)
    if loss_agg == "token_mean":
        expected = -(adv * mask).sum() / mask.sum()
    else:
        expected = -((adv * mask).sum(1) / mask.sum(1)).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    assert out.clip_fraction == 0.0 and out.sampler_train_kl == 0.0


def _random_batch(seed, B=6, T=7):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 3, 1, 5, 7, 2])[:B]
    mask = torch.arange(T)[None, :] < lengths[:, None]
    old = -torch.rand(B, T, generator=g) * 3
    new = old + 0.4 * torch.randn(B, T, generator=g)  # off-policy enough that clipping happens
    adv = torch.randn(B, T, generator=g)
    ref = old + 0.3 * torch.randn(B, T, generator=g)
    return new, old, adv, mask, ref, lengths


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean"])
@pytest.mark.parametrize("clip_eps", [0.0, 0.2])
@pytest.mark.parametrize("kl_beta", [0.0, 0.1])
def test_micro_batches_sum_to_the_full_batch_loss_and_gradient(loss_agg, clip_eps, kl_beta):
    new, old, adv, mask, ref, lengths = _random_batch(0)
    kw = dict(clip_eps=clip_eps, loss_agg=loss_agg, kl_beta=kl_beta)

    full_new = new.clone().requires_grad_(True)
    full = policy_loss(full_new, old, adv, mask, ref_logprobs_B_T=ref, **kw)
    full.loss.backward()
    if clip_eps:
        assert 0.0 < full.clip_fraction < 1.0  # the clipped branch is really exercised

    norm = loss_normalizer(lengths.tolist(), loss_agg)
    split_new = new.clone().requires_grad_(True)
    total, clipped, counted = 0.0, 0.0, 0
    for lo, hi in [(0, 2), (2, 3), (3, 6)]:
        t = int(lengths[lo:hi].max())  # each micro-batch padded only to its own longest datum
        out = policy_loss(
            split_new[lo:hi, :t],
            old[lo:hi, :t],
            adv[lo:hi, :t],
            mask[lo:hi, :t],
            ref_logprobs_B_T=ref[lo:hi, :t],
            normalizer=norm,
            **kw,
        )
        out.loss.backward()
        total += out.loss.item()
        clipped += out.clip_fraction * out.num_tokens
        counted += out.num_tokens
    assert total == pytest.approx(full.loss.item(), rel=1e-5, abs=1e-7)
    assert torch.allclose(split_new.grad, full_new.grad, atol=1e-7)
    assert counted == full.num_tokens == int(lengths.sum())
    assert clipped / counted == pytest.approx(full.clip_fraction)


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean"])
def test_padding_never_matters(loss_agg):
    new, old, adv, mask, ref, _ = _random_batch(1)
    pad = ~mask
    clean_new = new.clone().requires_grad_(True)
    clean = policy_loss(clean_new, old, adv, mask, clip_eps=0.2, kl_beta=0.1, ref_logprobs_B_T=ref, loss_agg=loss_agg)
    clean.loss.backward()

    # Garbage on every padded position: huge advantages, inf/nan logprobs.
    dirty_new = torch.where(pad, torch.tensor(math.inf), new).requires_grad_(True)
    dirty = policy_loss(
        dirty_new,
        torch.where(pad, torch.tensor(-math.inf), old),
        torch.where(pad, torch.tensor(1e6), adv),
        mask,
        clip_eps=0.2,
        kl_beta=0.1,
        ref_logprobs_B_T=torch.where(pad, torch.tensor(math.nan), ref),
        loss_agg=loss_agg,
    )
    dirty.loss.backward()
    assert dirty.loss.item() == pytest.approx(clean.loss.item(), rel=1e-6)
    assert torch.equal(dirty_new.grad[pad], torch.zeros(int(pad.sum())))
    assert torch.allclose(dirty_new.grad, clean_new.grad)
    for field in ("clip_fraction", "kl", "sampler_train_kl", "num_tokens"):
        assert getattr(dirty, field) == pytest.approx(getattr(clean, field))


def test_zero_advantage_tokens_still_count_in_the_mean():
    # The mask, not "A ≠ 0", decides what counts: a zero-advantage token dilutes the mean.
    new = torch.zeros(1, 4)
    adv = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    out = policy_loss(new, new, adv, torch.ones(1, 4))
    assert out.loss.item() == pytest.approx(-0.25)


def test_loss_normalizer():
    assert loss_normalizer([3, 2, 0], "token_mean") == 5.0
    assert loss_normalizer([3, 2, 0], "seq_mean") == 2.0
    assert loss_normalizer([], "token_mean") == 1.0
    with pytest.raises(ValueError, match="loss_agg"):
        loss_normalizer([1], "sum")


def test_errors_and_dtypes():
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss(NEW, OLD, ADV, MASK, kl_beta=0.1)
    with pytest.raises(ValueError, match="token_mean, seq_mean"):
        policy_loss(NEW, OLD, ADV, MASK, loss_agg="mean")
    out = policy_loss(NEW.bfloat16(), OLD.bfloat16(), ADV, MASK.bool())
    assert out.loss.dtype == torch.float32
    assert out.loss.item() == pytest.approx(-2.95 / 5, rel=1e-2)
    empty = policy_loss(NEW, OLD, ADV, torch.zeros(2, 3))
    assert empty.loss.item() == 0.0 and empty.num_tokens == 0 and empty.clip_fraction == 0.0
