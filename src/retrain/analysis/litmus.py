"""`retrain litmus`: evidence gates, then threshold checks → CONFIRMED / FAILED / INCONCLUSIVE.

A litmus verdict is a pre-registered rule ("is there enough data, and does each lift clear its bar?"),
not a significance test: use `retrain compare` for p-values. Every arm value is the mean over runs of
each run's mean in the step window (default: last 20% of steps), so each seed weighs the same.

Example::

    result = evaluate_litmus(base_runs, cand_runs, get_profile("default"))
    result["status"], EXIT_CODES[result["status"]]        # e.g. ("CONFIRMED", 0)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrain.analysis.load import Run, arm_label
from retrain.analysis.significance import resolve_window, window_mean
from retrain.analysis.void import arms_void_warnings
from retrain.errors import RetrainError

CONFIRMED, FAILED, INCONCLUSIVE = "CONFIRMED", "FAILED", "INCONCLUSIVE"
EXIT_CODES = {CONFIRMED: 0, FAILED: 1, INCONCLUSIVE: 2}
# The metrics.jsonl keys litmus reads (the checks' metrics and the completion counts of the gates).
COLUMNS = ("correct_rate", "mean_reward", "exec_entropy_var", "correct_count", "total_count")


@dataclass(frozen=True)
class LitmusProfile:
    """Gates (how much evidence) and thresholds (how big a lift), all on candidate − baseline."""

    name: str
    min_seeds_per_arm: int = 3  # distinct seeds (runs) in each arm
    min_steps_per_run: int = 8  # logged steps in every run
    min_completions_per_run: int = 32  # sampled completions in every run
    min_mean_reward_lift: float = 0.01  # candidate − baseline ≥ this
    min_correct_rate_lift: float = 0.005
    min_exec_entropy_var_reduction: float = 0.0  # baseline − candidate ≥ this (SEPA pools execution entropy)
    check_exec_entropy_var: bool = True  # the mechanism check (SEPA vs HICRA); off for other comparisons


PROFILES = {
    # The documented values (docs/analysis.md). `official_v1` is the textpolicy profile name, kept so its users' commands work;
    # its strategic-gram entropy check is replaced by the exec_entropy_var mechanism check here.
    "default": LitmusProfile(name="default"),
    "official_v1": LitmusProfile(name="official_v1"),
    # For checking a pipeline end to end on a laptop (1 seed, a few steps). Its verdict is not evidence.
    "smoke": LitmusProfile(name="smoke", min_seeds_per_arm=1, min_steps_per_run=2, min_completions_per_run=4),
}
GATE_FIELDS = ("min_seeds_per_arm", "min_steps_per_run", "min_completions_per_run")
THRESHOLD_FIELDS = ("min_mean_reward_lift", "min_correct_rate_lift", "min_exec_entropy_var_reduction")


def get_profile(name: str) -> LitmusProfile:
    """The named profile (case and surrounding spaces ignored); RetrainError listing the names otherwise."""
    key = name.strip().lower()
    if key not in PROFILES:
        raise RetrainError(f"--profile {name!r}: unknown litmus profile. Known profiles: {', '.join(PROFILES)}.")
    return PROFILES[key]


def with_overrides(profile: LitmusProfile, overrides: dict[str, Any]) -> LitmusProfile:
    """The profile with each non-None override replacing its own field only."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(changes) - {f.name for f in dataclasses.fields(LitmusProfile)}
    if unknown:
        raise RetrainError(f"unknown litmus setting(s): {', '.join(sorted(unknown))}")
    for k in GATE_FIELDS:
        if k in changes and changes[k] < 0:
            raise RetrainError(f"--{k.replace('_', '-')} {changes[k]}: must be >= 0")
    return dataclasses.replace(profile, **changes)


def _gate(name: str, threshold: int, values: dict[str, int]) -> dict[str, Any]:
    failures = [f"{k} has {v}; needs >= {threshold}" for k, v in values.items() if v < threshold]
    return {"gate": name, "threshold": threshold, "values": values, "passed": not failures, "failures": failures}


def evidence_gates(base: list[Run], cand: list[Run], profile: LitmusProfile) -> list[dict[str, Any]]:
    """The three evidence gates (docs/analysis.md), each with every value it looked at."""

    def n_seeds(runs: list[Run]) -> int:
        return len({r.seed if r.seed is not None else r.name for r in runs})

    runs = [("baseline", r) for r in base] + [("candidate", r) for r in cand]
    return [
        _gate("min_seeds_per_arm", profile.min_seeds_per_arm, {"baseline": n_seeds(base), "candidate": n_seeds(cand)}),
        _gate("min_steps_per_run", profile.min_steps_per_run, {f"{a}:{r.name}": r.num_steps for a, r in runs}),
        _gate(
            "min_completions_per_run",
            profile.min_completions_per_run,
            {f"{a}:{r.name}": r.completions() for a, r in runs},
        ),
    ]


def arm_mean(runs: list[Run], metric: str, start: int, end: int) -> float:
    """Mean over runs of each run's window mean (NaN runs ignored; NaN if no run has the metric)."""
    vals = [v for v in (window_mean(r, metric, start, end) for r in runs) if math.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def _check(metric: str, base_v: float, cand_v: float, threshold: float, reduction: bool = False) -> dict[str, Any]:
    delta = (base_v - cand_v) if reduction else (cand_v - base_v)
    available = math.isfinite(base_v) and math.isfinite(cand_v)
    return {
        "metric": metric,
        "kind": "reduction (baseline - candidate)" if reduction else "lift (candidate - baseline)",
        "baseline": base_v,
        "candidate": cand_v,
        "delta": delta if available else None,
        "threshold": threshold,
        "passed": bool(available and delta >= threshold),
        "available": available,
    }


def evaluate_litmus(
    base: list[Run], cand: list[Run], profile: LitmusProfile, window: tuple[int | None, int | None] | None = None
) -> dict[str, Any]:
    """The verdict: INCONCLUSIVE if a gate fails or a checked metric was never logged; otherwise
    CONFIRMED when every check passes, FAILED when any does not. Checks are reported in all cases."""
    start, end, is_default = resolve_window(base + cand, window)
    checks = [
        _check(
            "mean_reward",
            arm_mean(base, "mean_reward", start, end),
            arm_mean(cand, "mean_reward", start, end),
            profile.min_mean_reward_lift,
        ),
        _check(
            "correct_rate",
            arm_mean(base, "correct_rate", start, end),
            arm_mean(cand, "correct_rate", start, end),
            profile.min_correct_rate_lift,
        ),
    ]
    if profile.check_exec_entropy_var:
        checks.append(
            _check(
                "exec_entropy_var",
                arm_mean(base, "exec_entropy_var", start, end),
                arm_mean(cand, "exec_entropy_var", start, end),
                profile.min_exec_entropy_var_reduction,
                reduction=True,
            )
        )
    gates = evidence_gates(base, cand, profile)
    missing = [c["metric"] for c in checks if not c["available"]]
    if missing:
        gates.append(
            {
                "gate": "checked_metrics_logged",
                "threshold": None,
                "values": {},
                "passed": False,
                "failures": [f"{m} was not logged in steps [{start}, {end}) by one of the arms" for m in missing],
            }
        )
    evidence_ok = all(g["passed"] for g in gates)
    if not evidence_ok:
        status = INCONCLUSIVE
    else:
        status = CONFIRMED if all(c["passed"] for c in checks) else FAILED
    return {
        "generator": "retrain litmus",
        "status": status,
        "exit_code": EXIT_CODES[status],
        "profile": dataclasses.asdict(profile),
        "inputs": {
            "baseline": arm_label(base),
            "candidate": arm_label(cand),
            "baseline_runs": [str(r.run_dir) for r in base],
            "candidate_runs": [str(r.run_dir) for r in cand],
            "window": {"start": start, "end": end, "default": is_default},
        },
        "evidence_ok": evidence_ok,
        "gates": gates,
        "checks": checks,
        "evidence_failures": [f for g in gates for f in g["failures"]],
        "warnings": arms_void_warnings(base, cand),  # a void comparison: the verdict would mean nothing
    }


def render_markdown(result: dict[str, Any]) -> str:
    p, inp = result["profile"], result["inputs"]
    w = inp["window"]
    lines = [
        "<!-- generated by retrain litmus -->",
        f"# Litmus: {result['status']}",
        "",
        f"- baseline: `{inp['baseline']}` ({len(inp['baseline_runs'])} runs)",
        f"- candidate: `{inp['candidate']}` ({len(inp['candidate_runs'])} runs)",
        f"- profile: `{p['name']}`; window: steps [{w['start']}, {w['end']})"
        + (" (last 20% of steps)" if w["default"] else ""),
        "",
        "## Evidence gates",
        "",
        "| gate | threshold | passed | failures |",
        "|---|---:|---|---|",
    ]
    for g in result["gates"]:
        lines.append(
            f"| {g['gate']} | {g['threshold'] if g['threshold'] is not None else ''} | "
            f"{'yes' if g['passed'] else 'NO'} | {'; '.join(g['failures'])} |"
        )
    lines += [
        "",
        "## Threshold checks",
        "",
        "| metric | baseline | candidate | delta | threshold | result |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for c in result["checks"]:
        fmt = lambda v: "n/a" if v is None or not math.isfinite(v) else f"{v:.6f}"
        delta = "n/a" if c["delta"] is None else f"{c['delta']:+.6f}"
        lines.append(
            f"| {c['metric']} ({c['kind']}) | {fmt(c['baseline'])} | {fmt(c['candidate'])} | {delta} | "
            f">= {c['threshold']:g} | {'PASS' if c['passed'] else 'FAIL'} |"
        )
    if result.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"> **warning:** {w}" for w in result["warnings"]]
    return "\n".join(lines) + "\n"


def render_console(result: dict[str, Any]) -> str:
    lines = [
        f"Litmus: {result['status']} (profile {result['profile']['name']})",
        f"baseline  {result['inputs']['baseline']} ({len(result['inputs']['baseline_runs'])} runs)",
        f"candidate {result['inputs']['candidate']} ({len(result['inputs']['candidate_runs'])} runs)",
        f"evidence ok: {result['evidence_ok']}",
    ]
    lines += [f"  evidence-failure: {f}" for f in result["evidence_failures"]]
    for c in result["checks"]:
        delta = "n/a" if c["delta"] is None else f"{c['delta']:+.6f}"
        lines.append(
            f"[{'PASS' if c['passed'] else 'FAIL'}] {c['metric']}: delta={delta} (threshold={c['threshold']:g})"
        )
    lines += [f"warning: {w}" for w in result.get("warnings", [])]
    return "\n".join(lines)
