"""`retrain compare`: baseline vs candidate, seed-level tests first, episode-level for reference.

Example::

    from retrain.analysis.load import resolve_arm
    from retrain.analysis.significance import compare_arms, render_markdown
    base = resolve_arm(["maxrl+gtpo_hicra"], "logs/campaign_X")
    cand = resolve_arm(["maxrl+gtpo_sepa"], "logs/campaign_X")
    result = compare_arms(base, cand, resamples=20000, seed=0)
    result["recommendation"]      # from the seed-level test on correct_rate
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

from retrain.analysis import power as power_mod
from retrain.analysis import stats
from retrain.analysis.load import Run, arm_label
from retrain.errors import RetrainError

DEFAULT_METRICS = ("correct_rate", "mean_reward")
# Pooled episodes "overstate the evidence" when the design effect is at least this large: the
# Fisher p-value then rests on an effective sample at most 2/3 of the episode count it claims.
DEFF_WARN = 1.5


def resolve_window(runs: list[Run], window: tuple[int | None, int | None] | None) -> tuple[int, int, bool]:
    """The half-open step window [start, end) and whether it is the default (last 20% of steps).

    The step count S is the longest run's (last step + 1), i.e. the campaign's progress, so a run
    that stopped early has fewer (or no) rows in the window instead of shifting everyone's window.
    """
    num_steps = max(r.last_step for r in runs if r.num_steps) + 1
    d_start, d_end = stats.default_window(num_steps)
    if window is None or window == (None, None):
        return d_start, d_end, True
    start = window[0] if window[0] is not None else min(r.first_step for r in runs if r.num_steps)
    end = window[1] if window[1] is not None else num_steps
    return start, end, False


def window_mean(run: Run, metric: str, start: int, end: int) -> float:
    """Mean of `metric` over the run's steps in [start, end); NaN when it has none there."""
    vals = run.window_values(metric, start, end)
    return float(vals.mean()) if len(vals) else float("nan")


def window_counts(run: Run, start: int, end: int) -> tuple[int, int]:
    """(correct, total) completions of the run over steps in [start, end)."""
    return run.window_counts(start, end)


def pair_by_seed(base: list[Run], cand: list[Run]) -> bool:
    """True when the two arms have exactly the same seeds, each once, so runs pair up by seed."""
    sb, sc = [r.seed for r in base], [r.seed for r in cand]
    return (
        None not in sb
        and None not in sc
        and len(set(sb)) == len(sb)
        and len(set(sc)) == len(sc)
        and set(sb) == set(sc)
        and len(sb) >= 2
    )


def _metric_rng(seed: int, metric: str) -> np.random.Generator:
    # one stream per (seed, metric): a metric's numbers don't change when other metrics are added
    return np.random.default_rng([seed, zlib.crc32(metric.encode())])


def _min_attainable_p(r: stats.ResamplingResult, symmetric: bool) -> float:
    """The smallest p the test can return: 1/(B+1) for Monte Carlo; for exact enumeration, 2/R when
    every relabeling has a mirror image with the opposite statistic (sign flips; equal arms), else 1/R."""
    if r.method == "monte_carlo":
        return 1 / (r.n_used + 1)
    return min(1.0, (2 if symmetric else 1) / r.n_relabelings)


def _seeds_for_power(delta: float, sd: float, alpha: float, power: float, paired: bool) -> int | None:
    """Seeds per arm for `power` at the observed effect: the t-test size, but never fewer than the
    exact resampling test needs to be able to reach p < alpha at all (6 pairs / 4 per arm at 0.05)."""
    n = power_mod.seeds_per_arm(delta, sd, alpha, power, paired=paired)
    return None if n is None else max(n, power_mod.min_seeds_for_resampling_test(alpha, paired))


def seed_level_metric(
    base: list[Run],
    cand: list[Run],
    metric: str,
    start: int,
    end: int,
    *,
    alpha: float,
    resamples: int,
    seed: int,
    power: float,
) -> dict[str, Any]:
    """The seed-level block of one metric (see `stats.seed_level_tests`).

    A sparse metric (logged on some steps only, like `eval_correct_rate`) is reduced the same way, the
    mean of each run's points in the window, and the block says which points those were (`points`).
    """
    mb = {r.name: window_mean(r, metric, start, end) for r in base}
    mc = {r.name: window_mean(r, metric, start, end) for r in cand}
    kept_b = [r for r in base if math.isfinite(mb[r.name])]
    kept_c = [r for r in cand if math.isfinite(mc[r.name])]
    dropped = [name for name, v in (mb | mc).items() if not math.isfinite(v)]
    out: dict[str, Any] = {"metric": metric, "dropped_runs": dropped}
    points = {
        arm: {r.name: r.window_steps(metric, start, end) for r in runs}
        for arm, runs in (("baseline", base), ("candidate", cand))
    }
    if any(
        len(points[arm][r.name]) < r.steps_in_window(start, end)
        for arm, runs in (("baseline", base), ("candidate", cand))
        for r in runs
    ):
        out["points"] = points
        out["points_description"] = describe_points(points)
    if not kept_b or not kept_c:
        out["available"] = False
        out["reason"] = (
            f"no run of the {'baseline' if not kept_b else 'candidate'} arm logged {metric} in steps [{start}, {end})"
        )
        logged = sorted({s for r in base + cand for s in r.series(metric)[0].tolist()})
        if logged:
            shown = ", ".join(map(str, logged[:12])) + (", ..." if len(logged) > 12 else "")
            out["reason"] += f"; it is logged at steps {shown} (choose a --window that holds some)"
        return out
    paired = pair_by_seed(kept_b, kept_c)
    if paired:
        kept_b, kept_c = sorted(kept_b, key=lambda r: r.seed), sorted(kept_c, key=lambda r: r.seed)
    x_A = np.array([mb[r.name] for r in kept_b])
    y_B = np.array([mc[r.name] for r in kept_c])
    res = stats.seed_level_tests(
        x_A[None], y_B[None], paired=paired, alpha=alpha, resamples=resamples, rng=_metric_rng(seed, metric)
    )
    delta = float(res.delta_K[0])
    sd = float(np.std(y_B - x_A, ddof=1)) if paired else float(stats.pooled_sd(x_A[None], y_B[None])[0])
    out.update(
        {
            "available": True,
            "baseline_mean": float(x_A.mean()),
            "candidate_mean": float(y_B.mean()),
            "baseline_sd": float(x_A.std(ddof=1)) if len(x_A) > 1 else None,
            "candidate_sd": float(y_B.std(ddof=1)) if len(y_B) > 1 else None,
            "delta": delta,
            "n_baseline": len(x_A),
            "n_candidate": len(y_B),
            "paired": paired,
            "test": res.test,
            "p_value": float(res.p_K[0]),
            "method": res.primary.method,
            "relabelings": res.primary.n_relabelings,
            "relabelings_used": res.primary.n_used,
            "min_attainable_p": _min_attainable_p(res.primary, symmetric=paired or len(x_A) == len(y_B)),
            "permutation_p_value": float(res.permutation.p_K[0]),
            "permutation_method": res.permutation.method,
            "ci_level": 1 - alpha,
            "ci_low": float(res.ci_low_K[0]),
            "ci_high": float(res.ci_high_K[0]),
            "hedges_g": float(res.g_K[0]),
            "seeds_per_arm_for_power": _seeds_for_power(delta, sd, alpha, power, paired),
            "sd_for_power": sd,
            "recommendation": str(res.verdict_K[0]),
            "runs": {
                "baseline": {r.name: mb[r.name] for r in kept_b},
                "candidate": {r.name: mc[r.name] for r in kept_c},
            },
        }
    )
    return out


def describe_points(points: dict[str, dict[str, list[int]]]) -> str:
    """Which steps went into each run's value: 'steps 14, 19 in every run', or run by run."""
    lists = {name: steps for arm in points.values() for name, steps in arm.items()}
    fmt = lambda steps: ("step " if len(steps) == 1 else "steps ") + ", ".join(map(str, steps)) if steps else "none"
    if len({tuple(v) for v in lists.values()}) == 1:
        return f"{fmt(next(iter(lists.values())))} in every run"
    return "; ".join(f"{name}: {fmt(steps)}" for name, steps in lists.items())


def episode_level(
    base: list[Run], cand: list[Run], start: int, end: int, *, alpha: float, power: float
) -> dict[str, Any]:
    """Fisher exact on pooled correct counts, with the design effect that says what it is worth."""
    cb_R, tb_R = np.array([window_counts(r, start, end) for r in base]).reshape(-1, 2).T
    cc_R, tc_R = np.array([window_counts(r, start, end) for r in cand]).reshape(-1, 2).T
    keep_b, keep_c = tb_R > 0, tc_R > 0
    cb_R, tb_R, cc_R, tc_R = cb_R[keep_b], tb_R[keep_b], cc_R[keep_c], tc_R[keep_c]
    if len(tb_R) == 0 or len(tc_R) == 0:
        return {"available": False, "reason": f"no completion counts in steps [{start}, {end})"}
    cb, tb, cc, tc = int(cb_R.sum()), int(tb_R.sum()), int(cc_R.sum()), int(tc_R.sum())
    p0, p1 = cb / tb, cc / tc
    deff = stats.design_effect([cb_R, cc_R], [tb_R, tc_R])
    mean_m = float(np.mean(np.concatenate([tb_R, tc_R])))
    fisher_p = stats.fisher_exact_p(cb, tb, cc, tc)
    n_rate = power_mod.episodes_per_arm(p0, p1 - p0, alpha, power) if p1 != p0 else None
    return {
        "available": True,
        "test": "fisher_exact (pooled episodes)",
        "baseline_correct": cb,
        "baseline_total": tb,
        "candidate_correct": cc,
        "candidate_total": tc,
        "baseline_rate": p0,
        "candidate_rate": p1,
        "delta": p1 - p0,
        "p_value": fisher_p,
        "design_effect": deff,
        "icc": (deff - 1) / (mean_m - 1) if math.isfinite(deff) and mean_m > 1 else None,
        "effective_baseline_total": tb / deff if math.isfinite(deff) else None,
        "effective_candidate_total": tc / deff if math.isfinite(deff) else None,
        "design_adjusted_p_value": stats.design_adjusted_p(cb, tb, cc, tc, deff),
        "episodes_per_arm_for_power": n_rate,
    }


def _warnings(seed_cr: dict[str, Any], ep: dict[str, Any], alpha: float) -> list[str]:
    out = []
    if not ep.get("available"):
        return out
    deff = ep["design_effect"]
    if deff is None or not math.isfinite(deff):
        out.append(
            "Between-seed variance cannot be estimated with one run per arm: the pooled Fisher "
            "p-value ignores seed-to-seed variation entirely. Run more seeds before trusting it."
        )
    elif deff >= DEFF_WARN:
        out.append(
            f"Pooling overstates the evidence: seeds differ more than episode sampling explains "
            f"(design effect {deff:.1f}). The {ep['baseline_total']} + {ep['candidate_total']} pooled "
            f"episodes are worth about {ep['effective_baseline_total']:.0f} + "
            f"{ep['effective_candidate_total']:.0f} independent ones, so the Fisher p-value "
            f"({ep['p_value']:.3g}) understates the uncertainty; use the seed-level result."
        )
    if seed_cr.get("available") and ep["p_value"] < alpha <= seed_cr["p_value"]:
        out.append(
            f"The pooled Fisher test is significant (p={ep['p_value']:.3g}) but the seed-level test is "
            f"not (p={seed_cr['p_value']:.3g}): the difference is within seed-to-seed variation."
        )
    return out


def compare_arms(
    base: list[Run],
    cand: list[Run],
    *,
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    primary_metric: str = "correct_rate",
    window: tuple[int | None, int | None] | None = None,
    alpha: float = 0.05,
    resamples: int = 20000,
    seed: int = 0,
    power: float = 0.8,
) -> dict[str, Any]:
    """The full comparison as a JSON-able dict; `recommendation` comes from the seed-level test of
    `primary_metric` (one pre-declared test, so its false-positive rate is alpha)."""
    if not 0 < alpha < 1:
        raise RetrainError(f"--alpha {alpha}: must be in (0, 1), e.g. 0.05")
    if resamples < 100:
        raise RetrainError(f"--resamples {resamples}: use at least 100 (the default 20000 gives p-values to ~1e-4)")
    overlap = {r.run_dir.resolve() for r in base} & {r.run_dir.resolve() for r in cand}
    if overlap:
        raise RetrainError(
            f"the same run is in both arms: {', '.join(sorted(p.name for p in overlap))}. "
            f"Check the --baseline / --candidate globs."
        )
    if primary_metric not in metrics:
        metrics = (primary_metric, *metrics)
    start, end, is_default = resolve_window(base + cand, window)
    per_metric = {
        m: seed_level_metric(base, cand, m, start, end, alpha=alpha, resamples=resamples, seed=seed, power=power)
        for m in metrics
    }
    primary = per_metric[primary_metric]
    if not primary["available"]:
        raise RetrainError(
            f"cannot compare on {primary_metric}: {primary['reason']}. Widen --window or check the runs."
        )
    ep = episode_level(base, cand, start, end, alpha=alpha, power=power)
    notes = []
    short = [r.name for r in base + cand if not r.steps_in_window(start, end)]
    if short:
        notes.append(f"runs with no steps in the window [{start}, {end}) were left out: {', '.join(short)}")
    if primary["min_attainable_p"] >= alpha:
        notes.append(
            f"with {primary['n_baseline']} vs {primary['n_candidate']} runs the smallest p-value the "
            f"{primary['test']} test can give is {primary['min_attainable_p']:.3g} >= alpha: it cannot reach "
            f"significance at any effect size; add seeds"
        )
    if not primary["paired"]:
        notes.append("arms do not share the same seeds, so runs are not paired: permutation test on run means")
    for name, m in per_metric.items():
        if m.get("points_description"):
            notes.append(
                f"{name} is logged on some steps only: each run's value is the mean of its points in "
                f"[{start}, {end}), {m['points_description']}"
            )
    return {
        "generator": "retrain compare",
        "alpha": alpha,
        "resamples": resamples,
        "seed": seed,
        "power": power,
        "window": {
            "start": start,
            "end": end,
            "default": is_default,
            "description": "last 20% of steps" if is_default else "--window",
        },
        "baseline": {"label": arm_label(base), "runs": [_run_info(r) for r in base]},
        "candidate": {"label": arm_label(cand), "runs": [_run_info(r) for r in cand]},
        "primary_metric": primary_metric,
        "seed_level": per_metric,
        "episode_level": {"correct_rate": ep},
        "recommendation": primary["recommendation"],
        "warnings": _warnings(per_metric.get("correct_rate", {}), ep, alpha),
        "notes": notes,
    }


def _run_info(run: Run) -> dict[str, Any]:
    return {
        "run_dir": str(run.run_dir),
        "condition": run.condition,
        "seed": run.seed,
        "num_steps": run.num_steps,
        "last_step": run.last_step,
    }


def _f(x: Any, fmt: str = ".4f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return format(x, fmt)


def _test_name(m: dict[str, Any]) -> str:
    name = "paired sign-flip" if m["test"] == "paired_sign_flip" else "permutation"
    return f"{name}, {'exact' if m['method'] == 'exact' else 'Monte Carlo'}"


def render_console(result: dict[str, Any]) -> str:
    """A short plain-text summary for the terminal."""
    w = result["window"]
    lines = [
        f"baseline  {result['baseline']['label']} ({len(result['baseline']['runs'])} runs)",
        f"candidate {result['candidate']['label']} ({len(result['candidate']['runs'])} runs)",
        f"window    steps [{w['start']}, {w['end']}) ({w['description']})",
        "",
        f"{'metric':<18}{'baseline':>10}{'candidate':>11}{'delta':>10}  {'CI':<22}{'p':>8}  {'g':>6}  test / verdict",
    ]
    for name, m in result["seed_level"].items():
        if not m["available"]:
            lines.append(f"{name:<18}unavailable: {m['reason']}")
            continue
        ci = f"[{m['ci_low']:+.4f}, {m['ci_high']:+.4f}]"
        lines.append(
            f"{name:<18}{m['baseline_mean']:>10.4f}{m['candidate_mean']:>11.4f}{m['delta']:>+10.4f}  "
            f"{ci:<22}{m['p_value']:>8.4f}  {_f(m['hedges_g'], '6.2f'):>6}  {_test_name(m)}: {m['recommendation']}"
        )
    ep = result["episode_level"]["correct_rate"]
    if ep.get("available"):
        lines += [
            "",
            f"episode level (pooled, for reference): {ep['baseline_correct']}/{ep['baseline_total']} vs "
            f"{ep['candidate_correct']}/{ep['candidate_total']}, Fisher p={ep['p_value']:.4g}, design effect "
            f"{_f(ep['design_effect'], '.2f')}, design-adjusted p={_f(ep['design_adjusted_p_value'], '.4g')}",
        ]
    cr = result["seed_level"].get(result["primary_metric"], {})
    lines += ["", f"Recommendation: {result['recommendation']} (seed-level test on {result['primary_metric']})"]
    if cr.get("available"):
        lines.append(
            f"80% power at the observed effect: {_f(cr['seeds_per_arm_for_power'], 'd')} seeds per arm"
            + (
                f"; {ep['episodes_per_arm_for_power']} episodes per arm if episodes were independent"
                if ep.get("available") and ep.get("episodes_per_arm_for_power")
                else ""
            )
        )
    lines += [f"warning: {msg}" for msg in result["warnings"]]
    lines += [f"note: {msg}" for msg in result["notes"]]
    return "\n".join(lines)


def render_markdown(result: dict[str, Any], title: str = "Significance report") -> str:
    """The comparison as a markdown section (used alone by `compare --markdown` and inside the report)."""
    w = result["window"]
    lvl = round(100 * (1 - result["alpha"]))
    lines = [
        f"<!-- {'generated by retrain'} compare -->",
        f"# {title}",
        "",
        f"- baseline: `{result['baseline']['label']}` ({len(result['baseline']['runs'])} runs)",
        f"- candidate: `{result['candidate']['label']}` ({len(result['candidate']['runs'])} runs)",
        f"- window: steps [{w['start']}, {w['end']}) ({w['description']})",
        f"- alpha: {result['alpha']}, resamples: {result['resamples']}, seed: {result['seed']}",
        f"- **recommendation: `{result['recommendation']}`** (seed-level test on {result['primary_metric']})",
        "",
        "## Seed-level tests (primary: one observation per run)",
        "",
        f"| metric | baseline | candidate | delta | {lvl}% CI (bootstrap) | p | test | Hedges' g | seeds/arm for 80% power | verdict |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for name, m in result["seed_level"].items():
        if not m["available"]:
            lines.append(f"| {name} | n/a | n/a | n/a | n/a | n/a | {m['reason']} | | | |")
            continue
        lines.append(
            f"| {name} | {m['baseline_mean']:.4f} | {m['candidate_mean']:.4f} | {m['delta']:+.4f} | "
            f"[{m['ci_low']:+.4f}, {m['ci_high']:+.4f}] | {m['p_value']:.4g} | {_test_name(m)} "
            f"({m['relabelings_used']} relabelings) | {_f(m['hedges_g'], '.2f')} | "
            f"{_f(m['seeds_per_arm_for_power'], 'd')} | `{m['recommendation']}` |"
        )
    ep = result["episode_level"]["correct_rate"]
    lines += ["", "## Episode-level test (pooled episodes; for reference)", ""]
    if ep.get("available"):
        lines += [
            f"- baseline: {ep['baseline_correct']}/{ep['baseline_total']} = {ep['baseline_rate']:.4f}",
            f"- candidate: {ep['candidate_correct']}/{ep['candidate_total']} = {ep['candidate_rate']:.4f}",
            f"- delta: {ep['delta']:+.4f}, Fisher exact p = {ep['p_value']:.4g}",
            f"- design effect: {_f(ep['design_effect'], '.2f')} (ICC {_f(ep['icc'], '.4f')}); effective "
            f"episodes {_f(ep['effective_baseline_total'], '.0f')} + {_f(ep['effective_candidate_total'], '.0f')}; "
            f"design-adjusted p = {_f(ep['design_adjusted_p_value'], '.4g')}",
            f"- episodes per arm for 80% power if episodes were independent: "
            f"{_f(ep['episodes_per_arm_for_power'], 'd')}",
        ]
    else:
        lines.append(f"- unavailable: {ep['reason']}")
    if result["warnings"] or result["notes"]:
        lines += ["", "## Warnings and notes", ""]
        lines += [f"- **warning:** {m}" for m in result["warnings"]] + [f"- note: {m}" for m in result["notes"]]
    return "\n".join(lines) + "\n"
