"""USL back-pressure: the fit, the regimes and actions, clamping, disabled mode, resume."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrain.backpressure import (
    USLController,
    USLFit,
    classify_regime,
    decide_batch_size,
    fit_usl,
    usl_peak,
    usl_throughput,
    warmup_sweep,
)
from retrain.errors import ConfigError

SIGMA, KAPPA, LAM = 0.05, 0.001, 100.0
P_STAR = math.sqrt((1 - SIGMA) / KAPPA)  # 30.82


def _usl_tokens(p: int, rng: random.Random, noise: float = 0.01) -> float:
    """Tokens in a 1-second step at parallelism p, from the known USL with multiplicative noise."""
    return usl_throughput(p, LAM, SIGMA, KAPPA) * (1.0 + rng.gauss(0.0, noise))


def _drive(controller: USLController, steps, group_size: int, rng: random.Random, start: int = 0):
    decisions = []
    for step in range(start, start + steps):
        b = controller.batch_size_for_step(step)
        decisions.append((b, controller.observe(b, group_size, tokens=_usl_tokens(b * group_size, rng), seconds=1.0)))
    return decisions


# --- pure functions ------------------------------------------------------------------------------


def test_usl_formula_hand_values():
    assert usl_throughput(1, 10.0, 0.3, 0.2) == pytest.approx(10.0)  # single unit: λ
    assert usl_throughput(4, 10.0, 0.5, 0.0) == pytest.approx(10.0 * 4 / 2.5)  # Amdahl: 1 + .5·3
    assert usl_throughput(3, 1.0, 0.0, 0.1) == pytest.approx(3 / 1.6)  # 1 + .1·3·2
    assert usl_peak(0.05, 0.001) == pytest.approx(30.8220700, rel=1e-6)
    assert usl_peak(0.2, 0.0) is None and usl_peak(0.2, -1e-4) is None
    assert usl_peak(1.2, 0.01) == 0.0


def test_fit_coefficients_map_back_to_usl_parameters():
    # p/X = [(1−σ) + (σ−κ)p + κp²]/λ, so (a, b, c) → (σ, κ, λ) must invert exactly
    fit = USLFit(a=(1 - SIGMA) / LAM, b=(SIGMA - KAPPA) / LAM, c=KAPPA / LAM)
    assert fit.lam == pytest.approx(LAM) and fit.sigma == pytest.approx(SIGMA) and fit.kappa == pytest.approx(KAPPA)
    assert fit.predict(20) == pytest.approx(usl_throughput(20, LAM, SIGMA, KAPPA))


def test_fit_is_exact_on_noiseless_data():
    p_N = [4, 8, 16, 32, 64, 128, 256]
    fit = fit_usl(p_N, [usl_throughput(p, LAM, SIGMA, KAPPA) for p in p_N])
    assert fit.sigma == pytest.approx(SIGMA, rel=1e-6) and fit.kappa == pytest.approx(KAPPA, rel=1e-6)
    assert fit.lam == pytest.approx(LAM, rel=1e-6)


def test_fit_recovers_known_usl_from_noisy_synthetic_throughput():
    rng = random.Random(0)
    p_N = [p for p in (4, 8, 16, 32, 64, 128, 256) for _ in range(8)]
    fit = fit_usl(p_N, [_usl_tokens(p, rng) for p in p_N])
    assert fit.sigma == pytest.approx(SIGMA, abs=0.01)
    assert fit.kappa == pytest.approx(KAPPA, rel=0.1)
    assert usl_peak(fit.sigma, fit.kappa) == pytest.approx(P_STAR, rel=0.05)


def test_fit_needs_three_distinct_sizes_and_positive_throughput():
    assert fit_usl([8, 8, 16, 16], [10, 11, 18, 19]) is None
    assert fit_usl([8, 16, 32, 64], [10, 0.0, -3, float("nan")]) is None  # only one usable point
    assert fit_usl([], []) is None


def test_warmup_sweep():
    assert warmup_sweep(1, 64) == [1, 2, 4, 8, 16, 32, 64]
    assert warmup_sweep(3, 20) == [3, 6, 12]
    assert warmup_sweep(5, 5) == [5]


def test_regimes_on_constructed_cases():
    kw = dict(throttle_margin=0.85, increase_margin=0.5)  # p* = 40 → target 34, band [17, 34]
    assert classify_regime(64, 1.0, 40.0, True, **kw) == "retrograde"
    assert classify_regime(64, 1.5, 40.0, True, **kw) == "retrograde"  # retrograde wins over memory_bound
    assert classify_regime(32, 1.2, 40.0, True, **kw) == "memory_bound"
    assert classify_regime(32, 1.05, 40.0, True, **kw) == "optimal"
    assert classify_regime(34, 1.0, 40.0, True, **kw) == "optimal"
    assert classify_regime(16, 1.0, 40.0, True, **kw) == "compute_bound"
    assert classify_regime(16, 1.0, None, True, **kw) == "compute_bound"  # κ ≤ 0: no peak in sight
    assert classify_regime(16, None, None, False, **kw) == "unknown"


def test_actions_with_hysteresis_and_clamping():
    kw = dict(throttle_margin=0.85, increase_margin=0.5, min_batch_size=1, max_batch_size=64)
    # p* = 40, group 4 → target_p 34 → target batch 8; band p ∈ [17, 34] ↔ batch 5..8
    assert decide_batch_size(16, 4, 40.0, True, **kw) == ("throttle", 8)
    assert decide_batch_size(9, 4, 40.0, True, **kw) == ("throttle", 8)
    assert decide_batch_size(8, 4, 40.0, True, **kw) == ("hold", 8)
    assert decide_batch_size(5, 4, 40.0, True, **kw) == ("hold", 5)  # p = 20 ≥ 17: inside the band
    assert decide_batch_size(4, 4, 40.0, True, **kw) == ("increase", 8)  # p = 16 < 17
    assert decide_batch_size(4, 4, None, True, **kw) == ("increase", 64)  # no finite peak → max
    assert decide_batch_size(64, 4, None, True, **kw) == ("hold", 64)
    assert decide_batch_size(4, 4, 40.0, False, **kw) == ("hold", 4)  # no fit, no move
    # clamping: target below min / above max
    clamp = dict(kw, min_batch_size=3, max_batch_size=6)
    assert decide_batch_size(6, 4, 5.0, True, **clamp) == ("throttle", 3)
    assert decide_batch_size(3, 4, 5.0, True, **clamp) == ("hold", 3)  # retrograde, already at min
    assert decide_batch_size(3, 4, 400.0, True, **clamp) == ("increase", 6)
    # a throttle lands inside the band, so the next decision holds (no oscillation)
    _, after = decide_batch_size(30, 16, 200.0, True, **kw)
    assert decide_batch_size(after, 16, 200.0, True, **kw) == ("hold", after)


# --- the controller ------------------------------------------------------------------------------


def test_controller_sweeps_then_settles_below_the_peak():
    rng = random.Random(1)
    bp = USLController(
        enabled=True, warmup_steps=14, min_batch_size=1, max_batch_size=64, group_size=4, initial_batch_size=32
    )
    decisions = _drive(bp, 14, 4, rng)
    assert [b for b, _ in decisions] == [1, 2, 4, 8, 16, 32, 64] * 2
    assert [d.regime for _, d in decisions[:13]] == ["warmup"] * 13
    end_of_warmup = decisions[-1][1]
    assert end_of_warmup.action == "throttle"  # batch 32 → p 128 ≫ p* ≈ 31
    assert end_of_warmup.sigma == pytest.approx(SIGMA, abs=0.01)
    assert end_of_warmup.kappa == pytest.approx(KAPPA, rel=0.15)
    assert end_of_warmup.p_star == pytest.approx(P_STAR, rel=0.05)
    target = int(0.85 * end_of_warmup.p_star // 4)  # 6 (p = 24 < 26.2 = 0.85·p*)
    assert end_of_warmup.batch_size == target == 6
    later = _drive(bp, 20, 4, rng, start=14)
    assert {b for b, _ in later} == {6}
    assert {d.action for _, d in later} == {"hold"}
    assert {d.regime for _, d in later} <= {"optimal", "memory_bound"}
    assert bp.metrics()["bp_batch_size"] == 6


def test_controller_increases_when_far_below_the_peak():
    rng = random.Random(2)
    bp = USLController(
        enabled=True, warmup_steps=7, min_batch_size=1, max_batch_size=64, group_size=1, initial_batch_size=2
    )
    *_, (_, last) = _drive(bp, 7, 1, rng)
    assert last.action == "increase" and last.batch_size == int(0.85 * last.p_star)  # 26 with group 1


def test_memory_bound_when_throughput_beats_prediction():
    bp = USLController(enabled=False, warmup_steps=0, ema_decay=0.0, group_size=1, initial_batch_size=1)
    for p in (8, 16, 32, 64, 8, 16, 32, 64):
        bp.observe(p, 1, tokens=usl_throughput(p, LAM, SIGMA, KAPPA), seconds=1.0)
    assert bp.metrics()["bp_regime"] == "retrograde"  # p = 64 > 0.85·30.8
    decision = bp.observe(20, 1, tokens=1.5 * usl_throughput(20, LAM, SIGMA, KAPPA), seconds=1.0)
    assert decision.regime == "memory_bound"
    assert decision.throughput / decision.predicted_throughput > 1.1


def test_disabled_never_changes_batch_size_but_still_reports():
    rng = random.Random(3)
    bp = USLController(
        enabled=False, warmup_steps=3, min_batch_size=1, max_batch_size=64, group_size=4, initial_batch_size=100
    )  # even outside [min, max]: the user's choice stands
    for step in range(40):
        assert bp.batch_size_for_step(step) == 100
        # a different size observed (e.g. the loop shrank a batch) feeds the fit but is not adopted
        b = (1, 2, 4, 8, 16, 32)[step % 6]
        decision = bp.observe(b, 4, tokens=_usl_tokens(b * 4, rng), seconds=1.0)
        assert decision.action == "hold" and decision.batch_size == 100
    m = bp.metrics()
    assert m["bp_p_star"] == pytest.approx(P_STAR, rel=0.05) and m["bp_regime"] != "warmup"
    assert m["bp_batch_size"] == 100


def test_unknown_regime_without_enough_sizes():
    bp = USLController(enabled=False, warmup_steps=2, group_size=16, initial_batch_size=8)
    for _ in range(5):
        d = bp.observe(8, 16, tokens=1000.0, seconds=2.0)
    assert d.regime == "unknown" and d.p_star is None and d.throughput == pytest.approx(500.0)


def test_metrics_are_json_safe_before_and_after_degenerate_steps():
    bp = USLController(enabled=True, warmup_steps=2, group_size=4, initial_batch_size=4)
    assert bp.metrics() == {
        "bp_regime": "warmup",
        "bp_action": "hold",
        "bp_p_star": None,
        "bp_sigma": None,
        "bp_kappa": None,
        "bp_throughput": None,
        "bp_predicted_throughput": None,
        "bp_batch_size": 4,
    }
    for tokens, seconds in ((100.0, 0.0), (0.0, 1.0), (float("inf"), 1.0), (float("nan"), 1.0)):
        bp.observe(4, 4, tokens=tokens, seconds=seconds)
        text = json.dumps(bp.metrics(), allow_nan=False)  # raises on NaN/inf
        assert json.loads(text)["bp_throughput"] is None


def test_state_round_trip_gives_identical_later_decisions():
    rng_a, rng_b = random.Random(4), random.Random(4)
    kw = dict(enabled=True, warmup_steps=10, min_batch_size=1, max_batch_size=32, group_size=4, initial_batch_size=8)
    uninterrupted = USLController(**kw)
    first = USLController(**kw)
    _drive(uninterrupted, 15, 4, rng_a)
    _drive(first, 15, 4, rng_b)
    state = json.loads(json.dumps(first.state_dict()))  # through JSON, as trainer_state.json does
    resumed = USLController(**kw)
    resumed.load_state_dict(state)
    assert resumed.metrics() == first.metrics()
    tail_a = _drive(uninterrupted, 25, 4, rng_a, start=15)
    tail_b = _drive(resumed, 25, 4, rng_b, start=15)
    assert tail_a == tail_b
    assert resumed.state_dict() == uninterrupted.state_dict()


def test_state_resume_mid_warmup_continues_the_sweep():
    kw = dict(enabled=True, warmup_steps=10, min_batch_size=2, max_batch_size=16, group_size=4, initial_batch_size=8)
    a = USLController(**kw)
    _drive(a, 5, 4, random.Random(5))
    b = USLController(**kw)
    b.load_state_dict(a.state_dict())
    assert [b.batch_size_for_step(s) for s in range(5, 10)] == [4, 8, 16, 2, 4]


def test_invalid_settings_raise_config_error_naming_the_keys():
    with pytest.raises(ConfigError) as err:
        USLController(enabled=True, min_batch_size=8, max_batch_size=4, throttle_margin=1.5, ema_decay=1.0)
    text = str(err.value)
    # the same words as the config's ([backpressure] checks live in one function, backpressure_problems)
    assert (
        "[backpressure].min_batch_size: 8 is above max_batch_size 4" in text
        and "[backpressure].throttle_margin" in text
    )
    assert "[backpressure].ema_decay" in text


def test_from_config_reads_the_table():
    class Table:
        enabled, warmup_steps, ema_decay, throttle_margin = True, 3, 0.8, 0.9
        increase_margin, min_batch_size, max_batch_size = 0.4, 2, 16

    bp = USLController.from_config(Table, group_size=8, initial_batch_size=4)
    assert (bp.enabled, bp.warmup_steps, bp.max_batch_size, bp.group_size) == (True, 3, 16, 8)
    assert [bp.batch_size_for_step(s) for s in range(4)] == [2, 4, 8, 4]


@settings(max_examples=60, deadline=None)
@given(
    enabled=st.booleans(),
    min_b=st.integers(1, 8),
    span=st.integers(0, 40),
    warmup=st.integers(0, 12),
    group=st.integers(1, 16),
    initial=st.integers(1, 64),
    steps=st.lists(
        st.tuples(st.floats(0.0, 1e6, allow_nan=False), st.floats(0.0, 100.0, allow_nan=False)),
        min_size=1,
        max_size=30,
    ),
)
def test_batch_size_always_within_bounds(enabled, min_b, span, warmup, group, initial, steps):
    max_b = min_b + span
    bp = USLController(
        enabled=enabled,
        warmup_steps=warmup,
        min_batch_size=min_b,
        max_batch_size=max_b,
        group_size=group,
        initial_batch_size=initial,
    )
    for step, (tokens, seconds) in enumerate(steps):
        b = bp.batch_size_for_step(step)
        if enabled:
            assert min_b <= b <= max_b
        else:
            assert b == initial
        decision = bp.observe(b, group, tokens=tokens, seconds=seconds)
        assert decision.action in {"hold", "throttle", "increase"}
        json.dumps(bp.metrics(), allow_nan=False)
    if enabled:
        assert min_b <= bp.batch_size_for_step(len(steps) + warmup) <= max_b


def test_from_the_real_config_defaults():
    from retrain.config import Config

    cfg = Config()
    bp = USLController.from_config(cfg.backpressure, cfg.training.group_size, cfg.training.batch_size)
    assert not bp.enabled and bp.batch_size_for_step(0) == cfg.training.batch_size
    assert (bp.warmup_steps, bp.min_batch_size, bp.max_batch_size) == (10, 1, 64)


def test_warmup_is_w_sweep_steps_and_the_first_fit_follows_the_last_of_them():
    """The contract in docs/algorithms.md: W warm-up steps = W sweep steps; the W-th observation makes
    the first fit (its row is no longer "warmup") and its decision sets step W's batch size."""
    rng = random.Random(3)
    w = 5
    bp = USLController(
        enabled=True, warmup_steps=w, min_batch_size=1, max_batch_size=16, group_size=4, initial_batch_size=8
    )
    decisions = _drive(bp, w + 2, 4, rng)
    sizes = [b for b, _ in decisions]
    regimes = [d.regime for _, d in decisions]
    assert sizes[:w] == [1, 2, 4, 8, 16]  # W sweep steps
    assert regimes[: w - 1] == ["warmup"] * (w - 1)
    first_fit = decisions[w - 1][1]
    assert first_fit.regime != "warmup" and first_fit.p_star is not None
    assert sizes[w] == sizes[w + 1] == first_fit.batch_size  # decided on the W-th observation
    # warmup_steps = 0: no sweep, the first observation is already past warm-up
    bp0 = USLController(enabled=True, warmup_steps=0, group_size=4, initial_batch_size=2)
    assert bp0.batch_size_for_step(0) == 2
    assert bp0.observe(2, 4, tokens=100.0, seconds=1.0).regime == "unknown"  # one size: nothing to fit
