"""Void comparisons in a loaded campaign (`retrain report`) or baseline vs candidate (`retrain litmus`):
the rules of `retrain.void` (planning conditions with ~0 planning tokens; conditions whose runs of a
seed logged identical metrics) applied to `retrain.analysis.load.Run`s, reading whole rows only for
runs whose cheap columns already agree.

    campaign_void_warnings({"maxrl+gtpo": runs_a, "maxrl+gtpo_hicra": runs_b})  # -> ["maxrl+gtpo and ..."]
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from retrain.void import (
    identical_condition_warnings,
    identical_metrics,
    planning_void_warning,
    uses_planning,
)

# ---------------------------------------------------------------------------------------------
# On loaded runs (retrain.analysis.load.Run): columns first, whole rows only for suspected twins

# Cheap columns that two different computations almost never share at every step.
_QUICK_COLUMNS = ("correct_rate", "mean_reward", "loss", "exec_entropy_var", "grad_norm")


def _run_planning_fraction(run: Any) -> float | None:
    import numpy as np

    values = run.column("planning_token_fraction")
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else None


def _same_runs(a: Any, b: Any) -> bool:
    """Identical compared metrics at every step; the quick columns rule most pairs out unread."""
    import numpy as np

    if not np.array_equal(a.step_S, b.step_S):
        return False
    if not all(np.array_equal(a.column(c), b.column(c), equal_nan=True) for c in _QUICK_COLUMNS):
        return False
    return identical_metrics(a.metrics, b.metrics)


def _identical_runs_warning(label_a: str, label_b: str, runs_a: Sequence[Any], runs_b: Sequence[Any]) -> str | None:
    by_seed_a = {r.seed: r for r in runs_a if r.seed is not None}
    by_seed_b = {r.seed: r for r in runs_b if r.seed is not None}
    shared = sorted(set(by_seed_a) & set(by_seed_b))
    if not shared or not all(_same_runs(by_seed_a[s], by_seed_b[s]) for s in shared):
        return None
    return identical_condition_warnings({label_a: {s: [{}] for s in shared}, label_b: {s: [{}] for s in shared}})[0]


def campaign_void_warnings(runs_by_condition: Mapping[str, Sequence[Any]]) -> list[str]:
    """Both kinds of warning for a campaign's conditions (runs paired by seed)."""
    out = []
    for condition, runs in runs_by_condition.items():
        if uses_planning(condition):
            fractions = [f for f in map(_run_planning_fraction, runs) if f is not None]
            warning = planning_void_warning(condition, sum(fractions) / len(fractions) if fractions else None)
            out += [warning] if warning else []
    for (ca, runs_a), (cb, runs_b) in itertools.combinations(runs_by_condition.items(), 2):
        warning = _identical_runs_warning(ca, cb, runs_a, runs_b)
        out += [warning] if warning else []
    return out


def arms_void_warnings(base: Sequence[Any], cand: Sequence[Any]) -> list[str]:
    """Both kinds of warning for a baseline vs candidate comparison (`retrain litmus`)."""
    by_condition: dict[str, list[Any]] = {}
    for r in [*base, *cand]:
        by_condition.setdefault(r.condition, []).append(r)
    out = [w for w in campaign_void_warnings(by_condition) if "identical metrics" not in w]
    base_label, cand_label = (" | ".join(sorted({r.condition for r in runs})) for runs in (base, cand))
    warning = _identical_runs_warning(f"baseline {base_label}", f"candidate {cand_label}", base, cand)
    return out + ([warning] if warning else [])
