"""Back-pressure: choose the batch size from measured throughput with the Universal Scalability Law.

The parallelism of a step is `p = batch_size × group_size` completions; its throughput is
`X = tokens / step seconds`. Gunther's USL models how X grows with p and then falls:

    X(p) = λ p / (1 + σ(p−1) + κ p(p−1))

σ is contention (the serial fraction), κ coherency cost (pairwise cross-talk), λ the throughput
of a single unit. X peaks at `p* = √((1−σ)/κ)`. During warm-up the controller sweeps batch sizes
geometrically so the fit sees several p; afterwards it keeps p below `throttle_margin·p*`.

Example (the run loop)::

    bp = USLController.from_config(cfg.backpressure, group_size=16, initial_batch_size=8)
    for step in range(start, max_steps):
        batch_size = bp.batch_size_for_step(step)
        ...                                   # sample, score, train with `batch_size` prompts
        bp.observe(batch_size, 16, tokens=num_tokens, seconds=step_time_s)
        row.update(bp.metrics())              # bp_regime, bp_action, bp_p_star, ...
    state["backpressure"] = bp.state_dict()   # JSON-able; load_state_dict() resumes exactly
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from retrain.checks import Bound, bound_problems
from retrain.errors import ConfigError

Regime = Literal["warmup", "retrograde", "optimal", "memory_bound", "compute_bound", "unknown"]
Action = Literal["hold", "throttle", "increase"]

MEMORY_BOUND_RATIO = 1.1  # measured throughput this far above the USL prediction → memory_bound
STATE_VERSION = 1

# The limits of the [backpressure] settings: the config's fields take their constraints from here
# and `USLController` checks its arguments with `backpressure_problems`, in the same words.
BACKPRESSURE_BOUNDS = {
    "warmup_steps": Bound(ge=0),
    "ema_decay": Bound(ge=0, lt=1),
    "throttle_margin": Bound(gt=0, le=1),
    "increase_margin": Bound(gt=0, le=1),
    "min_batch_size": Bound(ge=1),
    "max_batch_size": Bound(ge=1),
}


def backpressure_problems(
    warmup_steps: int,
    ema_decay: float,
    throttle_margin: float,
    increase_margin: float,
    min_batch_size: int,
    max_batch_size: int,
) -> list[str]:
    """Every [backpressure] setting outside its limits, and min above max."""
    values = {
        "warmup_steps": warmup_steps,
        "ema_decay": ema_decay,
        "throttle_margin": throttle_margin,
        "increase_margin": increase_margin,
        "min_batch_size": min_batch_size,
        "max_batch_size": max_batch_size,
    }
    problems = bound_problems("backpressure", BACKPRESSURE_BOUNDS, values)
    if min_batch_size > max_batch_size:
        problems.append(
            f"[backpressure].min_batch_size: {min_batch_size} is above max_batch_size {max_batch_size}; "
            "lower it or raise max_batch_size"
        )
    return problems


# ---------------------------------------------------------------------------------------------
# The model (pure functions)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class USLFit:
    """Fitted `p/X = a + b·p + c·p²` and the USL parameters it implies (see `fit_usl`)."""

    a: float
    b: float
    c: float

    @property
    def lam(self) -> float:
        """Single-unit throughput estimate `λ̂ = 1/(a+b+c)` (the model's X at p = 1)."""
        return 1.0 / (self.a + self.b + self.c)

    @property
    def sigma(self) -> float:
        """`σ = (b+c)/(a+b+c)`."""
        return (self.b + self.c) * self.lam

    @property
    def kappa(self) -> float:
        """`κ = c/(a+b+c)`."""
        return self.c * self.lam

    def predict(self, p: float) -> float | None:
        """`X(p) = p / (a + b·p + c·p²)`; None where the fitted curve is non-positive (meaningless)."""
        denominator = self.a + self.b * p + self.c * p * p
        return p / denominator if denominator > 0 else None


def usl_throughput(p: float, lam: float, sigma: float, kappa: float) -> float:
    """`X(p) = λ p / (1 + σ(p−1) + κ p(p−1))`."""
    return lam * p / (1.0 + sigma * (p - 1.0) + kappa * p * (p - 1.0))


def usl_peak(sigma: float, kappa: float) -> float | None:
    """`p* = √((1−σ)/κ)`, where dX/dp = 0; None (no finite peak) when κ ≤ 0.

    σ ≥ 1 (more parallelism never helps) gives p* = 0: the smallest batch is best.
    """
    if not (math.isfinite(sigma) and math.isfinite(kappa)) or kappa <= 0.0:
        return None
    return math.sqrt(max(1.0 - sigma, 0.0) / kappa)


def fit_usl(p_N: Any, x_N: Any) -> USLFit | None:
    """Least-squares USL fit to throughputs `x_N` measured at parallelism `p_N`.

    Derivation. Inverting the USL,
        p/X = [1 + σ(p−1) + κp(p−1)] / λ = [(1−σ) + (σ−κ)p + κp²] / λ,
    which is linear in unknowns a = (1−σ)/λ, b = (σ−κ)/λ, c = κ/λ: `p/X = a + b p + c p²`.
    λ cannot be measured directly (p = batch × group ≥ group_size > 1, we never run a single unit),
    but at p = 1 the bracket equals 1, so a + b + c = 1/λ: the fit itself gives the single-unit
    estimate λ̂ = 1/(a+b+c). Normalising X_rel = X/λ̂ turns the fitted curve into exactly the
    linearised USL `p/X_rel − 1 = σ(p−1) + κp(p−1)` with σ = (b+c)/(a+b+c) and κ = c/(a+b+c)
    (check: (b+c)λ = σ−κ+κ = σ and cλ = κ). Fitting (a, b, c) and reading σ, κ off them is the
    same least-squares problem as fitting the normalised form with λ̂ estimated jointly.

    Step-time noise is multiplicative (a slow step slows every token), so we minimise relative
    residuals Σ((y − ŷ)/y)² with y = p/X; p is rescaled to [0, 1] for conditioning.
    Needs ≥ 3 distinct p (three unknowns); returns None otherwise, or when λ̂ ≤ 0 (no valid curve).
    """
    p_N = np.asarray(p_N, dtype=np.float64)
    x_N = np.asarray(x_N, dtype=np.float64)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        y_N = p_N / x_N
    # a denormal throughput makes p/X overflow: such a point carries no usable information
    keep_N = np.isfinite(p_N) & np.isfinite(x_N) & (p_N > 0) & (x_N > 0) & np.isfinite(y_N)
    p_N, y_N = p_N[keep_N], y_N[keep_N]
    if np.unique(p_N).size < 3:
        return None
    p_scale = float(p_N.max())
    u_N = p_N / p_scale
    design_N3 = np.stack([np.ones_like(u_N), u_N, u_N * u_N], axis=1) / y_N[:, None]
    try:
        with np.errstate(all="ignore"):
            coef_3, *_ = np.linalg.lstsq(design_N3, np.ones_like(y_N), rcond=None)
    except np.linalg.LinAlgError:  # absurd throughputs (e.g. 1e300 tokens/s) overflow the SVD
        return None
    fit = USLFit(a=float(coef_3[0]), b=float(coef_3[1]) / p_scale, c=float(coef_3[2]) / p_scale**2)
    if not all(math.isfinite(v) for v in (fit.a, fit.b, fit.c)) or fit.a + fit.b + fit.c <= 0.0:
        return None
    return fit


def warmup_sweep(min_batch_size: int, max_batch_size: int) -> list[int]:
    """Geometric sweep `min, 2·min, 4·min, …` up to `max`: (1, 64) → [1, 2, 4, 8, 16, 32, 64]."""
    sizes = [min_batch_size]
    while sizes[-1] * 2 <= max_batch_size:
        sizes.append(sizes[-1] * 2)
    return sizes


def classify_regime(
    p: int,
    throughput_ratio: float | None,
    p_star: float | None,
    fitted: bool,
    throttle_margin: float,
    increase_margin: float,
) -> Regime:
    """Where the observed p sits on the fitted curve (target = throttle_margin·p*):

    retrograde: p > target; memory_bound: throughput > 1.1 × the USL prediction (the curve
    underestimates this p, so it is limited by something the fit does not see); optimal: p in
    [increase_margin·target, target]; compute_bound: below that band, or no finite peak (κ ≤ 0):
    more parallel work would still raise throughput. unknown: no fit (fewer than 3 distinct p).
    """
    if not fitted:
        return "unknown"
    if p_star is not None and p > throttle_margin * p_star:
        return "retrograde"
    if throughput_ratio is not None and throughput_ratio > MEMORY_BOUND_RATIO:
        return "memory_bound"
    if p_star is not None and p >= increase_margin * throttle_margin * p_star:
        return "optimal"
    return "compute_bound"


def decide_batch_size(
    current: int,
    group_size: int,
    p_star: float | None,
    fitted: bool,
    throttle_margin: float,
    increase_margin: float,
    min_batch_size: int,
    max_batch_size: int,
) -> tuple[Action, int]:
    """Next batch size for the current one, with hysteresis band [increase_margin·target, target].

    target_p = throttle_margin·p*; target batch = clamp(⌊target_p / group⌋, min, max).
    p = current·group > target_p → throttle to the target batch; p < increase_margin·target_p →
    increase to it; inside the band → hold (so a throttle never triggers an immediate increase).
    No finite peak (κ ≤ 0): throughput still rises at the largest p swept → increase to max.
    """
    if not fitted:
        return "hold", current
    if p_star is None:
        target = max_batch_size
    else:
        target_p = throttle_margin * p_star
        target = min(max(int(target_p // group_size), min_batch_size), max_batch_size)
        p = current * group_size
        if p > target_p:
            return ("throttle", target) if target < current else ("hold", current)
        if p >= increase_margin * target_p:
            return "hold", current
    return ("increase", target) if target > current else ("hold", current)


# ---------------------------------------------------------------------------------------------
# The controller (state + the two calls the run loop makes)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BPDecision:
    """What one observation led to. `batch_size` is the size for the next step."""

    regime: Regime
    action: Action
    batch_size: int
    p: int
    throughput: float | None
    predicted_throughput: float | None
    p_star: float | None
    sigma: float | None
    kappa: float | None


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


class USLController:
    """Batch-size back-pressure from a USL fit over recent (p, tokens/s) observations.

    The fit window keeps the last `window_per_size` throughputs *for each p*, so the sizes the
    warm-up sweep explored stay in the fit after the controller settles on one size (a plain
    last-N window would soon hold a single p, and three unknowns need three distinct p).
    `ema_decay` smooths the ratio measured/predicted throughput that decides `memory_bound`.
    When `enabled` is False the controller observes and reports but never changes the batch size
    (no sweep either), and its action is always `hold`.
    """

    def __init__(
        self,
        enabled: bool,
        warmup_steps: int = 10,
        ema_decay: float = 0.9,
        throttle_margin: float = 0.85,
        increase_margin: float = 0.5,
        min_batch_size: int = 1,
        max_batch_size: int = 64,
        group_size: int = 16,
        initial_batch_size: int = 8,
        window_per_size: int = 8,
    ):
        problems = backpressure_problems(
            warmup_steps, ema_decay, throttle_margin, increase_margin, min_batch_size, max_batch_size
        )
        if group_size < 1 or initial_batch_size < 1 or window_per_size < 1:
            problems.append("group_size, initial_batch_size and window_per_size must be ≥ 1")
        if problems:
            raise ConfigError(problems)
        self.enabled = enabled
        self.warmup_steps = warmup_steps
        self.ema_decay = ema_decay
        self.throttle_margin = throttle_margin
        self.increase_margin = increase_margin
        self.min_batch_size = min_batch_size
        self.max_batch_size = max_batch_size
        self.group_size = group_size
        self.initial_batch_size = initial_batch_size
        self.window_per_size = window_per_size
        self._sweep = warmup_sweep(min_batch_size, max_batch_size)
        # Disabled: the user's batch size, untouched. Enabled: start inside [min, max].
        self._current = (
            initial_batch_size if not enabled else min(max(initial_batch_size, min_batch_size), max_batch_size)
        )
        self._n_obs = 0
        self._ratio_ema: float | None = None
        self._window: dict[int, deque[float]] = {}
        self._last: BPDecision | None = None

    @classmethod
    def from_config(cls, bp_cfg: Any, group_size: int, initial_batch_size: int) -> USLController:
        """From the `[backpressure]` table (`cfg.backpressure`) and `[training]` batch/group sizes."""
        settings = {key: getattr(bp_cfg, key) for key in BACKPRESSURE_BOUNDS}  # every bounded key is a setting
        return cls(enabled=bp_cfg.enabled, **settings, group_size=group_size, initial_batch_size=initial_batch_size)

    def batch_size_for_step(self, step: int) -> int:
        """Batch size for 0-based `step`: the sweep (cycling) during warm-up, then the current size."""
        if not self.enabled:
            return self._current
        if step < self.warmup_steps:
            return self._sweep[step % len(self._sweep)]
        return self._current

    def observe(self, batch_size: int, group_size: int, tokens: float, seconds: float) -> BPDecision:
        """Record one step's throughput, refit, and decide the next batch size.

        A step with no usable throughput (tokens or seconds ≤ 0, non-finite) still counts toward
        warm-up but adds nothing to the fit.
        """
        self._n_obs += 1
        self.group_size = group_size
        p = batch_size * group_size
        throughput = tokens / seconds if seconds > 0 and tokens > 0 else None
        throughput = _finite_or_none(throughput)
        if throughput is not None:
            self._window.setdefault(p, deque(maxlen=self.window_per_size)).append(throughput)

        fit = self._fit()
        p_star = usl_peak(fit.sigma, fit.kappa) if fit else None
        predicted = _finite_or_none(fit.predict(p)) if fit else None
        if throughput is not None and predicted:
            ratio = throughput / predicted
            self._ratio_ema = (
                ratio
                if self._ratio_ema is None
                else (self.ema_decay * self._ratio_ema + (1.0 - self.ema_decay) * ratio)
            )

        if self._n_obs < self.warmup_steps:
            regime, action = "warmup", "hold"
        else:
            regime = classify_regime(
                p, self._ratio_ema, p_star, fit is not None, self.throttle_margin, self.increase_margin
            )
            action = "hold"
            if self.enabled:
                action, self._current = decide_batch_size(
                    self._current,
                    group_size,
                    p_star,
                    fit is not None,
                    self.throttle_margin,
                    self.increase_margin,
                    self.min_batch_size,
                    self.max_batch_size,
                )
        self._last = BPDecision(
            regime=regime,
            action=action,
            batch_size=self._current,
            p=p,
            throughput=throughput,
            predicted_throughput=predicted,
            p_star=_finite_or_none(p_star),
            sigma=_finite_or_none(fit.sigma) if fit else None,
            kappa=_finite_or_none(fit.kappa) if fit else None,
        )
        return self._last

    def _fit(self) -> USLFit | None:
        p_N = [p for p in sorted(self._window) for _ in self._window[p]]
        x_N = [x for p in sorted(self._window) for x in self._window[p]]
        return fit_usl(p_N, x_N)

    def metrics(self) -> dict[str, Any]:
        """The `bp_*` keys of a metrics row (JSON-able; None where undefined, never NaN/inf)."""
        last = self._last
        return {
            "bp_regime": last.regime if last else "warmup",
            "bp_action": last.action if last else "hold",
            "bp_p_star": last.p_star if last else None,
            "bp_sigma": last.sigma if last else None,
            "bp_kappa": last.kappa if last else None,
            "bp_throughput": last.throughput if last else None,
            "bp_predicted_throughput": last.predicted_throughput if last else None,
            "bp_batch_size": self._current,
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything that decides future batch sizes, as plain JSON types."""
        return {
            "version": STATE_VERSION,
            "n_obs": self._n_obs,
            "current": self._current,
            "group_size": self.group_size,
            "ratio_ema": self._ratio_ema,
            "window": [[p, list(xs)] for p, xs in sorted(self._window.items())],
            "last": asdict(self._last) if self._last else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"backpressure state version {state.get('version')!r} != {STATE_VERSION}")
        self._n_obs = int(state["n_obs"])
        self._current = int(state["current"])
        self.group_size = int(state["group_size"])
        self._ratio_ema = state["ratio_ema"]
        self._window = {int(p): deque(xs, maxlen=self.window_per_size) for p, xs in state["window"]}
        self._last = BPDecision(**state["last"]) if state["last"] else None
