"""Comparisons that test nothing: say so wherever a comparison is shown.

Two ways a SEPA vs HICRA (or any condition vs condition) comparison can be void:

1. **No planning tokens.** HICRA adds α·|A_t| on planning tokens and SEPA pools execution tokens only;
   both need the strategic grams to mark some tokens. With `planning_token_fraction` ≈ 0, gtpo_hicra
   trains exactly like gtpo, and gtpo_sepa pools every token (there is nothing to keep apart), which
   only flattens GTPO's weights; plan_entropy_* are never defined.
2. **Identical metrics.** Two conditions whose runs of the same seed logged the same value for every
   non-timing metric at every step did the same computation; any "difference" between them is zero by
   construction.

This module holds the rules on plain metric rows, low in the layers (docs/design.md) so that a run's
end-of-run summary, `retrain explain --probe` and `retrain grams check` can use them;
`retrain.analysis.void` applies them to loaded campaigns for `retrain report` and `retrain litmus`.

    planning_void_warning("maxrl+gtpo_hicra", 0.0)          # -> "maxrl+gtpo_hicra: planning_token_fraction ..."
    identical_condition_warnings({"maxrl+gtpo": runs_a, "maxrl+gtpo_hicra": runs_b})
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from retrain.logfiles import TIMING_KEYS
from retrain.rl.transforms import TRANSFORMS

VOID_PLANNING_FRACTION = 1e-3  # below 0.1% of completion tokens, HICRA and SEPA act on (almost) nothing
# Keys that differ between two runs of the same computation: wall-clock timings and what back-pressure
# fits to them, and the condition label itself.
_NOT_COMPARED_PREFIXES = ("bp_",)
_NOT_COMPARED = {"condition"}


def uses_planning(condition: str) -> bool:
    """Whether a condition label ('maxrl+gtpo_hicra~hicra.alpha=0.5') names a transform that reads the
    planning mask (a built-in whose registry entry consumes it; plugins are not imported here, so a
    plugin transform is never accused)."""
    base = condition.partition("~")[0]
    transform = base.partition("+")[2] or base
    entry = TRANSFORMS.builtin(transform)
    return entry is not None and "planning_mask" in entry.consumes


def planning_void_warning(who: str, fraction: float | None) -> str | None:
    """The warning for `who` (a condition, run or probe) whose mean planning_token_fraction is `fraction`;
    None when the fraction is large enough, or unknown (None / NaN)."""
    if fraction is None or not math.isfinite(fraction) or fraction >= VOID_PLANNING_FRACTION:
        return None
    return (
        f"{who}: planning_token_fraction = {fraction:.4f} (below {VOID_PLANNING_FRACTION:g}): the strategic grams "
        "mark (almost) no token, so a comparison of planning transforms is void: gtpo_hicra trains like gtpo "
        "(HICRA has no planning token to amplify) and gtpo_sepa pools every token instead of execution tokens "
        "only. Mine grams for this model and task with `retrain grams mine RUN_DIR` (log whole groups: "
        "[logging] generations_per_prompt = 0) and check them with `retrain grams check CONFIG`."
    )


def mean_planning_fraction(rows: Iterable[Mapping[str, Any]]) -> float | None:
    """Mean `planning_token_fraction` over metric rows that have a finite one; None if none does."""
    values = [
        float(r["planning_token_fraction"])
        for r in rows
        if isinstance(r.get("planning_token_fraction"), int | float)
        and not isinstance(r.get("planning_token_fraction"), bool)
        and math.isfinite(r["planning_token_fraction"])
    ]
    return sum(values) / len(values) if values else None


def run_void_warnings(condition: str, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Warnings for one finished run (its metrics rows), for the end-of-run console summary."""
    if not uses_planning(condition):
        return []
    warning = planning_void_warning(f"{condition} (this run)", mean_planning_fraction(rows))
    return [warning] if warning else []


def planning_void_warnings(metrics_by_condition: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]]) -> list[str]:
    """One warning per planning condition whose runs' mean planning_token_fraction is ≈ 0.

    `metrics_by_condition`: condition label -> list of runs -> metric rows."""
    out = []
    for condition, runs in metrics_by_condition.items():
        if not uses_planning(condition):
            continue
        fractions = [f for f in (mean_planning_fraction(rows) for rows in runs) if f is not None]
        warning = planning_void_warning(condition, sum(fractions) / len(fractions) if fractions else None)
        if warning:
            out.append(warning)
    return out


def _compared(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in row.items()
        if k not in TIMING_KEYS and k not in _NOT_COMPARED and not k.startswith(_NOT_COMPARED_PREFIXES)
    }


def identical_metrics(rows_a: Sequence[Mapping[str, Any]], rows_b: Sequence[Mapping[str, Any]]) -> bool:
    """Both runs logged the same steps and, at each, the same value for every compared metric."""
    if not rows_a or len(rows_a) != len(rows_b):
        return False
    return all(_compared(a) == _compared(b) for a, b in zip(rows_a, rows_b, strict=True))


def identical_condition_warnings(
    metrics_by_condition: Mapping[str, Mapping[Any, Sequence[Mapping[str, Any]]]],
) -> list[str]:
    """A warning for each pair of conditions whose runs of every shared seed have identical metrics.

    `metrics_by_condition`: condition label -> {seed: metric rows}."""
    out = []
    for (ca, runs_a), (cb, runs_b) in itertools.combinations(metrics_by_condition.items(), 2):
        shared = sorted(set(runs_a) & set(runs_b), key=lambda s: (0, s, "") if isinstance(s, int) else (1, 0, str(s)))
        if shared and all(identical_metrics(runs_a[s], runs_b[s]) for s in shared):
            seeds = ", ".join(str(s) for s in shared)
            why = ""
            if uses_planning(ca) or uses_planning(cb):
                why = (
                    " (a planning transform does what gtpo does when no token is a planning token, and SEPA "
                    "does while λ = 0)"
                )
            out.append(
                f"{ca} and {cb} produced identical metrics on seed(s) {seeds}: every non-timing metric at "
                f"every step is the same, so the two conditions ran the same computation and comparing "
                f"them tests nothing{why}."
            )
    return out
