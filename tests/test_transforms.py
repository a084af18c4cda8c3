"""Token uncertainty and token-level transforms: GTPO, HICRA, SEPA pooling (docs/algorithms.md)."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrain.errors import RetrainError
from retrain.rl.transforms import (
    TRANSFORMS,
    apply_hicra,
    gtpo_weights,
    sepa_pool,
    token_advantages,
)
from retrain.rl.uncertainty import (
    MAX_SURPRISAL,
    predictive_variance,
    surprisal,
    token_uncertainty,
)

h_st = st.lists(st.floats(min_value=0.0, max_value=50.0, allow_nan=False), min_size=1, max_size=40)


@st.composite
def h_and_mask(draw, min_size=1):
    h = draw(st.lists(st.floats(min_value=0.0, max_value=50.0), min_size=min_size, max_size=40))
    mask = draw(st.lists(st.sampled_from([0, 1]), min_size=len(h), max_size=len(h)))
    return h, mask


def _mean(xs):
    return sum(xs) / len(xs)


def _var(xs):
    m = _mean(xs)
    return sum((x - m) ** 2 for x in xs) / len(xs)


# --- uncertainty ------------------------------------------------------------------------------


def test_surprisal_values_and_cap():
    assert surprisal([0.0, -1.5, math.log(0.25)]) == pytest.approx([0.0, 1.5, math.log(4.0)])
    assert surprisal([-60.0, -math.inf, math.nan]) == [MAX_SURPRISAL] * 3
    assert MAX_SURPRISAL == 50.0


def test_predictive_variance_values():
    pv = predictive_variance([math.log(0.5), 0.0, math.log(0.1), -math.inf, 1e-9])
    assert pv == pytest.approx([0.25, 0.0, 0.09, 0.0, 0.0], abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=-200.0, max_value=0.0), max_size=30))
def test_uncertainties_are_bounded(logprobs):
    assert all(0.0 <= h <= 50.0 for h in surprisal(logprobs))
    assert all(0.0 <= v <= 0.25 for v in predictive_variance(logprobs))


def test_token_uncertainty_dispatch():
    lps = [math.log(0.5), math.log(0.9)]
    assert token_uncertainty("surprisal", lps, None) == surprisal(lps)
    assert token_uncertainty("predictive_variance", lps, None) == predictive_variance(lps)
    assert token_uncertainty("shannon_entropy", lps, [0.7, 60.0]) == [0.7, 50.0]


def test_shannon_entropy_without_entropies_is_a_clear_error():
    with pytest.raises(RetrainError, match="shannon_entropy.*surprisal"):
        token_uncertainty("shannon_entropy", [-0.1], None)
    with pytest.raises(ValueError, match="2 values but the completion has 1"):
        token_uncertainty("shannon_entropy", [-0.1], [0.1, 0.2])


def test_unknown_uncertainty_kind():
    with pytest.raises(RetrainError, match="surprisal, predictive_variance, shannon_entropy"):
        token_uncertainty("varentropy", [-0.1], None)


# --- SEPA pooling -----------------------------------------------------------------------------


def test_sepa_pool_hand_computed():
    h = [1.0, 5.0, 3.0, 8.0]
    mask = [0, 1, 0, 1]  # execution: 1.0 and 3.0, mean 2.0
    assert sepa_pool(h, mask, 0.5) == pytest.approx([1.5, 5.0, 2.5, 8.0])
    assert sepa_pool(h, mask, 1.0) == pytest.approx([2.0, 5.0, 2.0, 8.0])
    assert sepa_pool(h, mask, 0.0) == h


def test_sepa_pool_edges():
    assert sepa_pool([1.0, 2.0], [1, 1], 1.0) == [1.0, 2.0]  # no execution tokens
    assert sepa_pool([], [], 0.7) == []
    assert sepa_pool([1.0, 3.0], [0, 0], 1.7) == [2.0, 2.0]  # λ clamped to 1
    assert sepa_pool([1.0, 3.0], [0, 0], -0.5) == [1.0, 3.0]  # λ clamped to 0
    with pytest.raises(ValueError):
        sepa_pool([1.0, 2.0], [0], 0.5)


@settings(max_examples=100, deadline=None)
@given(h_and_mask(), st.floats(min_value=0.0, max_value=1.0))
def test_sepa_pool_invariants(h_mask, lam):
    h, mask = h_mask
    pooled = sepa_pool(h, mask, lam)
    exec_before = [x for x, m in zip(h, mask, strict=True) if not m]
    exec_after = [x for x, m in zip(pooled, mask, strict=True) if not m]
    # Planning tokens never move.
    assert [x for x, m in zip(pooled, mask, strict=True) if m] == [x for x, m in zip(h, mask, strict=True) if m]
    if exec_before:
        # Pooling keeps the execution mean and scales its variance by (1 − λ)².
        assert _mean(exec_after) == pytest.approx(_mean(exec_before), rel=1e-9, abs=1e-9)
        assert _var(exec_after) == pytest.approx((1 - lam) ** 2 * _var(exec_before), rel=1e-6, abs=1e-9)
    # λ = 1: execution uncertainty is one constant; λ = 0: identity.
    full = [x for x, m in zip(sepa_pool(h, mask, 1.0), mask, strict=True) if not m]
    assert len(set(full)) <= 1
    assert sepa_pool(h, mask, 0.0) == h


# --- GTPO -------------------------------------------------------------------------------------


def test_gtpo_weights_hand_computed():
    # mean(h) = 2: w = 1 + 0.5·(h/2 − 1)
    assert gtpo_weights([1.0, 3.0], 0.5) == pytest.approx([0.75, 1.25])
    # β = 2 pushes the first weight to 1 + 2·(0 − 1) = −1, clamped to 0.
    assert gtpo_weights([0.0, 4.0], 2.0) == pytest.approx([0.0, 3.0])


def test_gtpo_weights_uniform_cases():
    assert gtpo_weights([1.0, 7.0, 2.0], 0.0) == [1.0, 1.0, 1.0]  # β = 0
    assert gtpo_weights([0.0, 0.0], 0.3) == [1.0, 1.0]  # nothing uncertain
    assert gtpo_weights([5e-8, 0.0], 0.3) == [1.0, 1.0]  # mean below 1e-7
    assert gtpo_weights([], 0.3) == []


@settings(max_examples=100, deadline=None)
@given(h_st, st.floats(min_value=0.0, max_value=5.0), st.floats(min_value=-5.0, max_value=5.0))
def test_gtpo_keeps_sign_and_mean_when_unclamped(h, beta, adv):
    w = gtpo_weights(h, beta)
    assert all(x >= 0.0 for x in w)
    token_adv = token_advantages(adv, h, [0] * len(h), transform="gtpo", beta=beta)
    for a in token_adv:  # never flips the sign; a clamped weight gives 0
        assert a == 0.0 or math.copysign(1.0, a) == math.copysign(1.0, adv)
    mean_h = _mean(h)
    unclamped = mean_h < 1e-7 or all(1 + beta * (x / mean_h - 1) >= 0 for x in h)
    if unclamped:
        assert _mean(w) == pytest.approx(1.0, rel=1e-9)
        assert _mean(token_adv) == pytest.approx(adv, rel=1e-9, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(h_st, st.floats(min_value=0.0, max_value=1.0))
def test_gtpo_never_clamps_for_beta_at_most_one(h, beta):
    # With h ≥ 0 and β ≤ 1, 1 + β(h/mean − 1) ≥ 1 − β ≥ 0: the mean is always kept.
    assert _mean(gtpo_weights(h, beta)) == pytest.approx(1.0, rel=1e-9)


def test_gtpo_gives_more_credit_to_uncertain_tokens():
    adv = token_advantages(-1.0, [0.5, 4.0], [0, 0], transform="gtpo", beta=0.2)
    # mean 2.25: w = [1 + 0.2(0.5/2.25 − 1), 1 + 0.2(4/2.25 − 1)]
    assert adv == pytest.approx([-(1 + 0.2 * (0.5 / 2.25 - 1)), -(1 + 0.2 * (4 / 2.25 - 1))])
    assert abs(adv[1]) > abs(adv[0])


# --- HICRA ------------------------------------------------------------------------------------


def test_hicra_hand_computed():
    assert apply_hicra([1.0, 1.0, -1.0, -1.0], [0, 1, 0, 1], 0.2) == pytest.approx([1.0, 1.2, -1.0, -0.8])


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(min_value=-10, max_value=10), min_size=1, max_size=30),
    st.floats(min_value=0.0, max_value=1.0),
    st.data(),
)
def test_hicra_invariants(token_adv, alpha, data):
    mask = data.draw(st.lists(st.sampled_from([0, 1]), min_size=len(token_adv), max_size=len(token_adv)))
    out = apply_hicra(token_adv, mask, alpha)
    assert apply_hicra(token_adv, mask, 0.0) == token_adv  # α = 0 is the identity
    for a, m, b in zip(token_adv, mask, out, strict=True):
        if not m:
            assert b == a
        elif a >= 0:
            assert b == pytest.approx((1 + alpha) * a)
        else:
            assert b == pytest.approx((1 - alpha) * a)  # softens penalties (the formula)


# --- token_advantages -------------------------------------------------------------------------


def test_token_advantages_hand_computed_every_transform():
    h = [1.0, 2.0, 3.0, 6.0]
    mask = [0, 1, 0, 0]
    kw = dict(beta=0.1, alpha=0.2)
    assert token_advantages(0.5, h, mask, transform="none", **kw) == [0.5] * 4
    # gtpo: mean(h) = 3, w = 1 + 0.1(h/3 − 1) = [14/15, 29/30, 1, 11/10]
    w = [14 / 15, 29 / 30, 1.0, 1.1]
    assert token_advantages(0.5, h, mask, transform="gtpo", **kw) == pytest.approx([0.5 * x for x in w])
    # gtpo_hicra: the planning token (index 1) gets ×1.2 for a positive A
    assert token_advantages(0.5, h, mask, transform="gtpo_hicra", **kw) == pytest.approx(
        [0.5 * w[0], 0.5 * w[1] * 1.2, 0.5 * w[2], 0.5 * w[3]]
    )
    # gtpo_sepa, λ = 1: execution h → 10/3 each, planning 2; mean 3; w = [10/9·0.1 …]
    w_sepa = [1 + 0.1 * (10 / 9 - 1), 1 + 0.1 * (2 / 3 - 1), 1 + 0.1 * (10 / 9 - 1), 1 + 0.1 * (10 / 9 - 1)]
    assert token_advantages(-1.0, h, mask, transform="gtpo_sepa", sepa_lambda=1.0, **kw) == pytest.approx(
        [-x for x in w_sepa]
    )


@settings(max_examples=100, deadline=None)
@given(h_and_mask(), st.floats(min_value=-3, max_value=3), st.floats(min_value=0, max_value=1))
def test_transforms_reduce_to_each_other(h_mask, adv, beta):
    h, mask = h_mask

    def ta(transform, **kw):
        return token_advantages(adv, h, mask, transform=transform, **{"beta": beta, **kw})

    assert ta("gtpo", beta=0.0) == ta("none")  # β = 0: GTPO is the identity
    assert ta("gtpo_hicra", alpha=0.0) == ta("gtpo")  # α = 0: HICRA is the identity
    assert ta("gtpo_sepa", sepa_lambda=0.0) == ta("gtpo")  # λ = 0: SEPA is the identity
    # SEPA λ = 1: every execution token gets the same advantage.
    exec_adv = [a for a, m in zip(ta("gtpo_sepa", sepa_lambda=1.0), mask, strict=True) if not m]
    assert max(exec_adv, default=0.0) - min(exec_adv, default=0.0) <= 1e-9


def test_token_advantages_table_and_errors():
    assert set(TRANSFORMS) == {"none", "gtpo", "gtpo_hicra", "gtpo_sepa"}
    with pytest.raises(RetrainError, match="gtpo_sepa"):
        token_advantages(1.0, [1.0], [0], transform="gtpo_sepaa")
    with pytest.raises(ValueError, match="planning_mask"):
        token_advantages(1.0, [1.0, 2.0], [0], transform="none")


def test_token_advantages_accepts_a_callable():
    def double(advantage, h, planning_mask, *, beta, alpha, sepa_lambda):
        return [2 * advantage] * len(h)

    assert token_advantages(0.25, [1.0, 2.0], [0, 1], transform=double) == [0.5, 0.5]
