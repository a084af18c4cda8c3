"""SEPA controller: linear and auto λ, the sticky correctness gate, state round-trips (docs/algorithms.md)."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrain.errors import RetrainError
from retrain.rl.sepa import SEPAController, auto_lambda, linear_lambda, population_variance


def open_controller(**kw):
    args = dict(steps=100, schedule="linear", delay_steps=10, correct_rate_gate=0.0)
    return SEPAController(**{**args, **kw})


# --- linear -----------------------------------------------------------------------------------


def test_linear_hand_computed():
    sepa = open_controller()
    assert [sepa.resolve_lambda(s) for s in (0, 10, 35, 60, 110, 500)] == pytest.approx([0.0, 0.0, 0.25, 0.5, 1.0, 1.0])


def test_linear_steps_not_positive_is_zero():
    assert linear_lambda(1000, 0, 0) == 0.0
    assert linear_lambda(1000, -5, 0) == 0.0
    assert open_controller(steps=0).resolve_lambda(1000) == 0.0


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 1000), st.integers(0, 1000))
def test_linear_is_a_clamped_monotone_ramp(step, steps, delay):
    lam = linear_lambda(step, steps, delay)
    assert 0.0 <= lam <= 1.0
    assert linear_lambda(step + 1, steps, delay) >= lam
    if step <= delay:
        assert lam == 0.0
    if step >= delay + steps:
        assert lam == 1.0


# --- gate -------------------------------------------------------------------------------------


def test_gate_blocks_until_correct_rate_reaches_it_then_sticks():
    sepa = SEPAController(steps=10, schedule="linear", delay_steps=0, correct_rate_gate=0.3)
    assert not sepa.gate_open and sepa.gate_open_step is None
    assert sepa.resolve_lambda(5) == 0.0
    sepa.observe(0.29, [], step=5)
    assert not sepa.gate_open
    sepa.observe(math.nan, [], step=6)  # NaN is ignored
    sepa.observe(None, [], step=7)  # so is None
    assert not sepa.gate_open
    sepa.observe(0.3, [], step=8)  # ≥ gate opens it
    assert sepa.gate_open and sepa.gate_open_step == 8
    assert sepa.resolve_lambda(8) == pytest.approx(0.8)
    sepa.observe(0.0, [], step=9)  # sticky: a bad step does not close it
    sepa.observe(math.nan, [], step=10)
    assert sepa.gate_open and sepa.gate_open_step == 8
    assert sepa.resolve_lambda(9) == pytest.approx(0.9)


def test_gate_zero_is_open_from_the_start():
    sepa = open_controller(correct_rate_gate=0.0)
    assert sepa.gate_open and sepa.gate_open_step == 0
    assert sepa.resolve_lambda(60) == pytest.approx(0.5)


@settings(max_examples=100, deadline=None)
@given(
    st.floats(min_value=0.01, max_value=1.0),
    st.lists(st.one_of(st.floats(min_value=0.0, max_value=1.0), st.just(math.nan)), max_size=40),
)
def test_gate_opens_at_first_rate_above_and_never_closes(gate, rates):
    sepa = SEPAController(steps=10, schedule="linear", delay_steps=0, correct_rate_gate=gate)
    first = next((i for i, r in enumerate(rates) if not math.isnan(r) and r >= gate), None)
    for i, r in enumerate(rates):
        sepa.observe(r, [], step=i)
        assert sepa.gate_open == (first is not None and i >= first)
    assert sepa.gate_open_step == first


# --- auto -------------------------------------------------------------------------------------


def test_population_variance():
    assert population_variance([1.0, 3.0]) == 1.0
    assert population_variance([1.0, math.inf, 3.0, math.nan]) == 1.0  # non-finite ignored
    assert population_variance([2.0]) is None
    assert population_variance([]) is None


def test_auto_lambda_formula():
    assert auto_lambda(None, None, 0.2) == 0.0
    assert auto_lambda(1.0, None, 0.2) == 0.0
    assert auto_lambda(1.0, 1.0, 0.2) == 0.0  # 1 − min(5, 1)
    assert auto_lambda(0.1, 1.0, 0.2) == pytest.approx(0.5)
    assert auto_lambda(0.0, 1.0, 0.2) == 1.0


def test_auto_ema_warmup_and_lambda_hand_computed():
    sepa = SEPAController(
        steps=0, schedule="auto", delay_steps=0, correct_rate_gate=0.0, ema_decay=0.5, var_threshold=0.5, warmup=2
    )
    sepa.observe(1.0, [0.0, 2.0], step=0)  # Var = 1 seeds the EMA
    assert sepa.var_ema == 1.0 and sepa.var_0 is None and sepa.warmup_seen == 1
    assert sepa.resolve_lambda(1) == 0.0  # no var_0 yet
    sepa.observe(1.0, [0.0, 4.0], step=1)  # Var = 4 → EMA 0.5·1 + 0.5·4 = 2.5; var_0 fixed
    assert sepa.var_ema == 2.5 and sepa.var_0 == 2.5
    sepa.observe(1.0, [1.0, 1.0, 1.0], step=2)  # Var = 0 → EMA 1.25
    assert sepa.var_0 == 2.5  # fixed after warm-up
    # λ_auto = 1 − min(1.25 / 2.5 / 0.5, 1) = 0
    assert sepa.resolve_lambda(3) == 0.0
    sepa.observe(1.0, [5.0, 5.0], step=3)  # EMA 0.625 → λ = 1 − 0.625/2.5/0.5 = 0.5
    assert sepa.resolve_lambda(4) == pytest.approx(0.5)
    sepa.observe(1.0, [7.0], step=4)  # a single value has no variance: skipped
    assert sepa.var_ema == 0.625 and sepa.warmup_seen == 4


def test_auto_is_max_of_auto_and_linear():
    sepa = SEPAController(steps=100, schedule="auto", delay_steps=0, correct_rate_gate=0.0, ema_decay=0.0, warmup=1)
    sepa.observe(1.0, [0.0, 2.0])  # var_0 = 1
    sepa.observe(1.0, [0.0, 0.2])  # EMA = 0.01 → λ_auto = 1 − 0.01/0.2 = 0.95
    assert sepa.resolve_lambda(10) == pytest.approx(0.95)  # linear 0.1 < auto
    assert sepa.resolve_lambda(99) == pytest.approx(0.99)  # linear wins


def test_var_0_floor():
    sepa = SEPAController(steps=0, schedule="auto", delay_steps=0, correct_rate_gate=0.0, warmup=1)
    sepa.observe(1.0, [3.0, 3.0])
    assert sepa.var_0 == 1e-8
    assert sepa.resolve_lambda(0) == 1.0  # EMA 0 ≤ everything: fully pooled, no division by 0


def test_warmup_zero_fixes_var_0_at_the_first_observation():
    sepa = SEPAController(steps=0, schedule="auto", delay_steps=0, correct_rate_gate=0.0, warmup=0)
    assert sepa.var_0 is None
    sepa.observe(1.0, [0.0, 2.0])
    assert sepa.var_0 == 1.0 and sepa.resolve_lambda(0) == 0.0


def test_linear_schedule_does_not_track_variance():
    sepa = open_controller()
    sepa.observe(1.0, [0.0, 10.0])
    assert sepa.var_ema is None and sepa.warmup_seen == 0


def test_gate_closed_overrides_auto():
    sepa = SEPAController(steps=0, schedule="auto", delay_steps=0, correct_rate_gate=0.9, ema_decay=0.0, warmup=1)
    sepa.observe(0.1, [0.0, 2.0])
    sepa.observe(0.1, [0.0, 0.0001])
    assert sepa.var_0 == 1.0 and not sepa.gate_open
    assert sepa.resolve_lambda(50) == 0.0  # EMA still learns while the gate is closed


# --- validation -------------------------------------------------------------------------------


def test_constructor_rejects_bad_settings_all_at_once():
    with pytest.raises(RetrainError) as err:
        SEPAController(
            steps=10,
            schedule="cosine",
            delay_steps=-1,
            correct_rate_gate=1.5,
            ema_decay=1.0,
            var_threshold=0.0,
            warmup=-1,
        )
    msg = str(err.value)
    for key in ("schedule", "delay_steps", "correct_rate_gate", "ema_decay", "var_threshold", "warmup"):
        assert f"[sepa].{key}" in msg


# --- state ------------------------------------------------------------------------------------


def _run(sepa, steps, rng_rates, rng_h):
    lams = []
    for step in steps:
        lams.append(sepa.resolve_lambda(step))
        sepa.observe(rng_rates[step], rng_h[step], step=step)
    return lams


@pytest.mark.parametrize("schedule", ["linear", "auto"])
def test_state_round_trips_mid_run_and_gives_identical_lambdas(schedule):
    kw = dict(
        steps=30, schedule=schedule, delay_steps=3, correct_rate_gate=0.4, ema_decay=0.8, var_threshold=0.5, warmup=4
    )
    rates = [0.1 * (i % 7) for i in range(40)]
    h = [[(i * 7 + j * 3) % 11 / (1 + i * 0.3) for j in range(5)] for i in range(40)]

    uninterrupted = SEPAController(**kw)
    full = _run(uninterrupted, range(40), rates, h)

    first = SEPAController(**kw)
    head = _run(first, range(17), rates, h)
    state = json.loads(json.dumps(first.state_dict()))  # through JSON, as in trainer_state.json
    restored = SEPAController(**kw)
    restored.load_state_dict(state)
    assert restored.state_dict() == first.state_dict()
    tail = _run(restored, range(17, 40), rates, h)
    assert head + tail == full
    assert restored.gate_open_step == uninterrupted.gate_open_step == 4
    if schedule == "auto":
        assert restored.var_0 == uninterrupted.var_0 is not None
        assert max(full) > 0.0


def test_state_dict_contents():
    sepa = open_controller(correct_rate_gate=0.5)
    sepa.observe(0.6, [], step=12)
    state = sepa.state_dict()
    assert state == {
        "version": 1,
        "steps": 100,
        "schedule": "linear",
        "delay_steps": 10,
        "correct_rate_gate": 0.5,
        "ema_decay": 0.99,
        "var_threshold": 0.2,
        "warmup": 50,
        "var_ema": None,
        "var_0": None,
        "warmup_seen": 0,
        "gate_open": True,
        "gate_open_step": 12,
    }


def test_load_state_rejects_bad_or_mismatched_state():
    good = open_controller(correct_rate_gate=0.5).state_dict()
    with pytest.raises(RetrainError, match=r"\[sepa\].steps is 100 but the checkpoint"):
        open_controller(correct_rate_gate=0.5).load_state_dict({**good, "steps": 200})
    for bad in (
        {"var_ema": math.inf},
        {"var_0": -1.0},
        {"warmup_seen": -2},
        {"gate_open": "true"},
        {"gate_open_step": 1.5},
        {"var_ema": "x"},
    ):
        with pytest.raises(RetrainError, match="SEPA state"):
            open_controller(correct_rate_gate=0.5).load_state_dict({**good, **bad})


# --- the Python API at its edges (issue #11 item 7) -------------------------------------------------


def test_auto_schedule_survives_broken_uncertainties_and_keeps_a_finite_ema():
    sepa = SEPAController(steps=0, schedule="auto", delay_steps=0, correct_rate_gate=0.0, ema_decay=0.5, warmup=1)
    sepa.observe(1.0, [8, 4, -12, 1e300, 6, math.nan, 0.5, math.inf], step=0)
    # −12, nan and inf are dropped; with 1e300 kept the variance overflows, so the batch is skipped
    assert sepa.var_ema is None and sepa.warmup_seen == 0 and sepa.resolve_lambda(1) == 0.0
    sepa.observe(1.0, [8, 4, -12, 6, math.nan, 0.5, math.inf], step=1)
    assert sepa.var_ema == pytest.approx(population_variance([8, 4, 6, 0.5]))
    assert math.isfinite(sepa.var_ema) and sepa.var_0 == sepa.var_ema
    assert population_variance([8, 4, -12, 1e300, 6, math.nan, 0.5, math.inf]) is None
    assert population_variance([2.0, -1.0, 4.0]) == 1.0  # the negative value is not an uncertainty


def test_python_api_rejects_what_the_config_rejects_in_the_same_words(tmp_path):
    from retrain.config import load_config
    from retrain.errors import ConfigError

    with pytest.raises(ConfigError) as api:
        SEPAController(steps=-1, schedule="linear", delay_steps=0, correct_rate_gate=0.0)
    (tmp_path / "c.toml").write_text("[sepa]\nsteps = -1\n")
    with pytest.raises(ConfigError) as config:
        load_config(tmp_path / "c.toml")
    assert api.value.problems == config.value.problems == ["[sepa].steps: must be >= 0, got -1"]


@pytest.mark.parametrize(
    "state, message",
    [
        ([1, 2], "expected a table of values, got list"),
        ("state", "expected a table of values, got str"),
        (None, "expected a table of values, got NoneType"),
        ({"version": 1}, "missing var_ema, var_0, warmup_seen, gate_open, gate_open_step"),
        (
            {"var_ema": None, "var_0": None, "warmup_seen": "3", "gate_open": True, "gate_open_step": 0},
            "warmup_seen must be an int",
        ),
    ],
)
def test_restoring_a_damaged_state_is_a_clear_error(state, message):
    with pytest.raises(RetrainError, match="SEPA state in the checkpoint is invalid") as info:
        open_controller().load_state_dict(state)
    assert message in str(info.value)
