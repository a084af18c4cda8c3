"""The SEPA controller: how strongly to pool execution-token uncertainty at each step.

Formulas: docs/algorithms.md. The RL step (`retrain.rl.step`) resolves λ before sampling and
feeds the controller after the step::

    sepa = SEPAController(steps=500, schedule="linear", delay_steps=50, correct_rate_gate=0.1)
    for step in range(max_steps):
        lam = sepa.resolve_lambda(step)
        ...                                   # sample, score, token_advantages(..., sepa_lambda=lam)
        sepa.observe(correct_rate, exec_h, step=step)
    state = sepa.state_dict()                 # into trainer_state.json; load_state_dict on resume
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from retrain.checks import Bound, bound_problems, choice_problem
from retrain.errors import ConfigError, RetrainError

SCHEDULES = ("linear", "auto")
VAR_0_FLOOR = 1e-8  # var_0 divides the EMA; a batch of identical uncertainties must not give 0
_STATE_VERSION = 1
_HYPERPARAMETERS = ("steps", "schedule", "delay_steps", "correct_rate_gate", "ema_decay", "var_threshold", "warmup")
# The learned state in a checkpoint: its key -> the attribute holding it.
_LEARNED = {
    "var_ema": "var_ema",
    "var_0": "var_0",
    "warmup_seen": "warmup_seen",
    "gate_open": "_gate_open",
    "gate_open_step": "_gate_open_step",
}

# The limits of the [sepa] settings: the config's fields take their constraints from here and
# `SEPAController` checks its arguments against them, so both reject a value in the same words.
SEPA_BOUNDS = {
    "steps": Bound(ge=0),
    "delay_steps": Bound(ge=0),
    "correct_rate_gate": Bound(ge=0, le=1),
    "ema_decay": Bound(ge=0, lt=1),
    "var_threshold": Bound(gt=0),
    "warmup": Bound(ge=0),
}


def sepa_problems(
    steps: float,
    schedule: str,
    delay_steps: float,
    correct_rate_gate: float,
    ema_decay: float,
    var_threshold: float,
    warmup: float,
) -> list[str]:
    """Every [sepa] setting outside its limits, as `[sepa].key: must be ..., got ...`."""
    values = {
        "steps": steps,
        "delay_steps": delay_steps,
        "correct_rate_gate": correct_rate_gate,
        "ema_decay": ema_decay,
        "var_threshold": var_threshold,
        "warmup": warmup,
    }
    problems = [] if schedule in SCHEDULES else [f"[sepa].schedule: {choice_problem(schedule, SCHEDULES)}"]
    return problems + bound_problems("sepa", SEPA_BOUNDS, values)


def linear_lambda(step: int, steps: int, delay_steps: int) -> float:
    """The linear ramp.

    λ_linear = clamp((step − delay_steps) / steps, 0, 1);   0 when steps ≤ 0
    """
    if steps <= 0:
        return 0.0
    return min(max((step - delay_steps) / steps, 0.0), 1.0)


def auto_lambda(var_ema: float | None, var_0: float | None, var_threshold: float) -> float:
    """The variance-driven ramp: λ grows as execution uncertainty variance falls below its start.

        λ_auto = 1 − min(var_ema / var_0 / var_threshold, 1);   0 before var_0 is fixed

    λ_auto stays 0 until the EMA has fallen to var_threshold·var_0 and reaches 1 as it goes to 0.
    """
    if var_ema is None or var_0 is None:
        return 0.0
    return 1.0 - min(var_ema / var_0 / var_threshold, 1.0)


def population_variance(values: Iterable[float]) -> float | None:
    """Var(x) = mean((x − mean x)²) over the finite values ≥ 0 (an uncertainty is never negative:
    anything else is a broken input, not a measurement); None with fewer than two such values or
    when the variance itself is not finite (values near the float limit, e.g. 1e300)."""
    x = [float(v) for v in values if math.isfinite(v) and v >= 0]
    if len(x) < 2:
        return None
    mean = sum(x) / len(x)
    var = sum((v - mean) * (v - mean) for v in x) / len(x)  # `*`, not `**`: overflow gives inf, not an error
    return var if math.isfinite(var) else None


class SEPAController:
    """λ schedule (linear or auto) behind a sticky correctness gate; checkpointable.

    - linear:  λ = clamp((step − delay_steps) / steps, 0, 1)
    - auto:    λ = max(λ_auto, λ_linear), λ_auto = 1 − min(ema / var_0 / var_threshold, 1), where
               ema ← ema_decay·ema + (1 − ema_decay)·Var(batch's execution uncertainties)
               (seeded with the first batch's variance) and var_0 = max(ema, 1e-8) is fixed after
               `warmup` observations (warmup 0 behaves as 1: var_0 is the first batch's variance).
    - gate:    λ = 0 until the first observed step whose correct_rate ≥ correct_rate_gate; then it
               stays open for good. correct_rate_gate = 0 opens it from the start. NaN/None rates
               are ignored.

    Why a gate: before the policy solves anything, the uncertainty pattern is noise; pooling it
    would only remove signal GTPO could use once learning starts.
    """

    def __init__(
        self,
        steps: int,
        schedule: str,
        delay_steps: int,
        correct_rate_gate: float,
        ema_decay: float = 0.99,
        var_threshold: float = 0.2,
        warmup: int = 50,
    ):
        problems = sepa_problems(steps, schedule, delay_steps, correct_rate_gate, ema_decay, var_threshold, warmup)
        if problems:
            raise ConfigError(problems, source="SEPAController")
        self.steps = int(steps)
        self.schedule = schedule
        self.delay_steps = int(delay_steps)
        self.correct_rate_gate = float(correct_rate_gate)
        self.ema_decay = float(ema_decay)
        self.var_threshold = float(var_threshold)
        self.warmup = int(warmup)
        # Learned state (all of it goes into state_dict).
        self.var_ema: float | None = None
        self.var_0: float | None = None
        self.warmup_seen = 0
        self._gate_open = self.correct_rate_gate <= 0.0
        # Gate 0 is open "from the start": step 0, before any observation.
        self._gate_open_step: int | None = 0 if self._gate_open else None

    @property
    def gate_open(self) -> bool:
        return self._gate_open

    @property
    def gate_open_step(self) -> int | None:
        """The step whose correct_rate opened the gate (0 for gate 0); None while closed, or when
        `observe` was not given the step."""
        return self._gate_open_step

    def resolve_lambda(self, step: int) -> float:
        """λ for `step`: 0 while the gate is closed, else the schedule's value (see the class)."""
        if not self._gate_open:
            return 0.0
        lam = linear_lambda(step, self.steps, self.delay_steps)
        if self.schedule == "auto":
            lam = max(lam, auto_lambda(self.var_ema, self.var_0, self.var_threshold))
        return lam

    def observe(
        self,
        correct_rate: float | None,
        exec_uncertainties: Iterable[float],
        step: int | None = None,
    ) -> None:
        """Learn from one finished step.

        Opens the gate (stickily) when correct_rate ≥ correct_rate_gate, recording `step`. For the
        auto schedule, folds Var(exec_uncertainties) into the EMA (`population_variance`: finite
        values ≥ 0 only); a batch without a finite variance (fewer than two such values) is
        skipped and does not count towards `warmup`, so the EMA stays finite.
        """
        if (
            not self._gate_open
            and correct_rate is not None
            and not math.isnan(correct_rate)
            and correct_rate >= self.correct_rate_gate
        ):
            self._gate_open = True
            self._gate_open_step = step
        if self.schedule != "auto":
            return
        var = population_variance(exec_uncertainties)
        if var is None:
            return
        if self.var_ema is None:
            self.var_ema = var
        else:
            self.var_ema = self.ema_decay * self.var_ema + (1.0 - self.ema_decay) * var
        self.warmup_seen += 1
        if self.var_0 is None and self.warmup_seen >= self.warmup:
            self.var_0 = max(self.var_ema, VAR_0_FLOOR)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: hyperparameters and learned state (JSON-able)."""
        hyperparameters = {name: getattr(self, name) for name in _HYPERPARAMETERS}
        learned = {key: getattr(self, attr) for key, attr in _LEARNED.items()}
        return {"version": _STATE_VERSION, **hyperparameters, **learned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the learned state written by `state_dict`.

        The hyperparameters come from the config this controller was built with; a checkpoint
        written under different [sepa] settings is refused, because continuing it would silently
        mix two schedules in one run.
        """
        where = "SEPA state in the checkpoint"
        if not isinstance(state, dict):
            raise RetrainError(
                f"{where} is invalid: expected a table of values, got {type(state).__name__} {state!r:.80}"
            )
        missing = [k for k in _LEARNED if k not in state]
        if missing:
            raise RetrainError(f"{where} is invalid: missing {', '.join(missing)}; resume from an intact checkpoint")
        problems = []
        for name in _HYPERPARAMETERS:
            if name in state and state[name] != getattr(self, name):
                problems.append(
                    f"[sepa].{name} is {getattr(self, name)!r} but the checkpoint was written with "
                    f"{state[name]!r}; resume with the run's original config"
                )
        var_ema, var_0 = state.get("var_ema"), state.get("var_0")
        for name, value in (("var_ema", var_ema), ("var_0", var_0)):
            if value is not None and not (
                isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
            ):
                problems.append(f"{name} must be a finite number ≥ 0 or null, got {value!r}")
        warmup_seen = state["warmup_seen"]
        if not isinstance(warmup_seen, int) or isinstance(warmup_seen, bool) or warmup_seen < 0:
            problems.append(f"warmup_seen must be an int ≥ 0, got {warmup_seen!r}")
        gate_open = state.get("gate_open")
        if not isinstance(gate_open, bool):
            problems.append(f"gate_open must be true or false, got {gate_open!r}")
        gate_open_step = state.get("gate_open_step")
        if gate_open_step is not None and (not isinstance(gate_open_step, int) or isinstance(gate_open_step, bool)):
            problems.append(f"gate_open_step must be an int or null, got {gate_open_step!r}")
        if problems:
            raise RetrainError(f"{where} is invalid:\n" + "\n".join(f"  - {p}" for p in problems))
        self.var_ema = None if var_ema is None else float(var_ema)
        self.var_0 = None if var_0 is None else float(var_0)
        self.warmup_seen = warmup_seen
        # A gate that is open by config (gate 0) stays open whatever an older state says.
        self._gate_open = gate_open or self.correct_rate_gate <= 0.0
        self._gate_open_step = gate_open_step if gate_open else self._gate_open_step
