"""The analysis verbs: `plot`, `compare`, `litmus`, `power`, `report`.

`retrain.cli` calls `register(subparsers)`; each subcommand sets `func(args) -> exit code`. This module
imports nothing heavy at import time (`retrain --help` imports it): numpy, pandas, scipy and
matplotlib are imported inside the functions. User mistakes raise RetrainError (exit 2 in the main
CLI), except in `litmus`, whose errors of any kind exit 3 (2 means INCONCLUSIVE there).
"""

from __future__ import annotations

import argparse
import functools
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from retrain.errors import RetrainError  # stdlib-only module: cheap to import

LITMUS_ERROR_EXIT = 3


def _print_warnings(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Show the analysis warnings (malformed lines, dropped runs) as plain `warning: ...` lines on stderr."""

    @functools.wraps(fn)
    def wrapper(args: argparse.Namespace) -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            try:
                return fn(args)
            finally:
                for w in caught:
                    if issubclass(w.category, UserWarning):
                        print(f"retrain: warning: {w.message}", file=sys.stderr)

    return wrapper


def _campaign_and_arms(args: argparse.Namespace, columns: tuple[str, ...]):
    """(baseline runs, candidate runs), each loaded with only `columns` of metrics.jsonl parsed."""
    from retrain.analysis.load import campaign_labels, resolve_arm

    campaign = getattr(args, "campaign", None)
    if campaign is not None and not Path(campaign).is_dir():
        raise RetrainError(
            f"{campaign}: campaign directory not found. Pass an existing campaign dir "
            f"(logs/campaign_YYYYmmdd_HHMMSS) or only --baseline/--candidate run dirs."
        )
    needs_labels = campaign is not None and any(
        not Path(s).is_dir() and not any(ch in s for ch in "*?[") for s in args.baseline + args.candidate
    )
    labels = campaign_labels(campaign) if needs_labels else None  # first rows only: load just the chosen runs
    base = resolve_arm(args.baseline, campaign, "baseline", columns=columns, labels=labels)
    cand = resolve_arm(args.candidate, campaign, "candidate", columns=columns, labels=labels)
    return base, cand


def _window(args: argparse.Namespace):
    from retrain.analysis.stats import parse_window

    return parse_window(args.window) if args.window else None


def add_arm_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "campaign",
        nargs="?",
        default=None,
        help="campaign dir; --baseline/--candidate are then condition labels (or globs under runs/)",
    )
    p.add_argument(
        "--baseline",
        nargs="+",
        action="extend",
        required=True,
        metavar="RUN_OR_COND",
        help="baseline runs: run dirs, globs ('logs/c/runs/maxrl+gtpo_hicra_s*') or a condition label",
    )
    p.add_argument(
        "--candidate",
        nargs="+",
        action="extend",
        required=True,
        metavar="RUN_OR_COND",
        help="candidate runs, same forms as --baseline",
    )
    p.add_argument(
        "--window",
        default=None,
        metavar="START:END",
        help="half-open step window for run means (default: the last 20%% of steps)",
    )
    p.add_argument("--output", default=None, metavar="FILE.json", help="write the full result as JSON")
    p.add_argument("--markdown", default=None, metavar="FILE.md", help="write a markdown report")


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    add_arm_arguments(p)
    p.add_argument("--alpha", type=float, default=0.05, help="significance level; the CI level is 1 - alpha (0.05)")
    p.add_argument(
        "--resamples",
        type=int,
        default=20000,
        help="permutation / sign-flip / bootstrap resamples; exact enumeration when fewer relabelings exist",
    )
    p.add_argument("--seed", type=int, default=0, help="RNG seed: the same seed gives the same p-values and CIs")
    p.add_argument(
        "--metric",
        default="correct_rate",
        help="primary metric: the recommendation comes from its seed-level test (correct_rate)",
    )


@_print_warnings
def run_compare(args: argparse.Namespace) -> int:
    from retrain.analysis.load import DEFAULT_COLUMNS
    from retrain.analysis.outputs import write_json, write_text
    from retrain.analysis.significance import DEFAULT_METRICS, compare_arms, render_console, render_markdown

    metrics = tuple(dict.fromkeys((args.metric, *DEFAULT_METRICS)))
    base, cand = _campaign_and_arms(args, tuple(dict.fromkeys((*DEFAULT_COLUMNS, *metrics))))
    result = compare_arms(
        base,
        cand,
        metrics=metrics,
        primary_metric=args.metric,
        window=_window(args),
        alpha=args.alpha,
        resamples=args.resamples,
        seed=args.seed,
    )
    print(render_console(result))
    if args.output:
        print(f"wrote {write_json(args.output, result)}")
    if args.markdown:
        print(f"wrote {write_text(args.markdown, render_markdown(result))}")
    return 0


def add_litmus_arguments(p: argparse.ArgumentParser) -> None:
    add_arm_arguments(p)
    p.add_argument("--profile", default="default", help="named gates + thresholds: default | official_v1 | smoke")
    p.add_argument(
        "--min-seeds-per-arm",
        "--min-run-pairs",
        dest="min_seeds_per_arm",
        type=int,
        default=None,
        help="gate: distinct seeds in each arm (profile default 3)",
    )
    p.add_argument("--min-steps-per-run", type=int, default=None, help="gate: logged steps per run (8)")
    p.add_argument(
        "--min-completions-per-run",
        "--min-generations-per-run",
        dest="min_completions_per_run",
        type=int,
        default=None,
        help="gate: sampled completions per run (32)",
    )
    p.add_argument(
        "--min-mean-reward-lift",
        "--min-reward-lift",
        dest="min_mean_reward_lift",
        type=float,
        default=None,
        help="check: candidate - baseline mean_reward >= this (0.01)",
    )
    p.add_argument(
        "--min-correct-rate-lift",
        type=float,
        default=None,
        help="check: candidate - baseline correct_rate >= this (0.005)",
    )
    p.add_argument(
        "--min-exec-entropy-var-reduction",
        type=float,
        default=None,
        help="check: baseline - candidate exec_entropy_var >= this (0)",
    )
    p.add_argument(
        "--no-entropy-check",
        action="store_true",
        help="skip the exec_entropy_var check (for comparisons other than SEPA vs HICRA)",
    )


def exit_3_on_usage_error(p: argparse.ArgumentParser) -> None:
    """argparse exits 2 on bad usage; for litmus 2 means INCONCLUSIVE, so usage errors exit 3."""
    original = p.exit

    def exit_(status: int = 0, message: str | None = None):
        original(LITMUS_ERROR_EXIT if status == 2 else status, message)

    p.exit = exit_  # type: ignore[method-assign]


def run_litmus(args: argparse.Namespace) -> int:
    """Exit 0 CONFIRMED, 1 FAILED, 2 INCONCLUSIVE, 3 any error (bad input included)."""
    try:
        return _litmus(args)
    except RetrainError as err:
        print(f"retrain: error: {err}", file=sys.stderr)  # the prefix every other verb prints
        return LITMUS_ERROR_EXIT
    except Exception as err:  # noqa: BLE001 — a crash must not read as FAILED (1) or INCONCLUSIVE (2)
        import traceback

        traceback.print_exc()
        print(f"retrain: error: litmus crashed: {err!r}", file=sys.stderr)
        return LITMUS_ERROR_EXIT


@_print_warnings
def _litmus(args: argparse.Namespace) -> int:
    from retrain.analysis import litmus
    from retrain.analysis.outputs import write_json, write_text

    profile = litmus.get_profile(args.profile)
    overrides = {k: getattr(args, k) for k in (*litmus.GATE_FIELDS, *litmus.THRESHOLD_FIELDS)}
    if args.no_entropy_check:
        overrides["check_exec_entropy_var"] = False
    profile = litmus.with_overrides(profile, overrides)
    base, cand = _campaign_and_arms(args, litmus.COLUMNS)
    result = litmus.evaluate_litmus(base, cand, profile, _window(args))
    result["inputs"]["campaign"] = args.campaign
    result["inputs"]["baseline_args"], result["inputs"]["candidate_args"] = args.baseline, args.candidate
    result["overrides"] = {k: v for k, v in overrides.items() if v is not None}
    print(litmus.render_console(result))
    if args.output:
        print(f"wrote {write_json(args.output, result)}")
    if args.markdown:
        print(f"wrote {write_text(args.markdown, litmus.render_markdown(result))}")
    return result["exit_code"]


def add_power_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline-rate", type=float, required=True, help="baseline correct rate, e.g. 0.01875 (3/160)")
    p.add_argument("--lift", type=float, required=True, help="absolute lift to detect, e.g. 0.0126")
    p.add_argument("--alpha", type=float, default=0.05, help="two-sided significance level (0.05)")
    p.add_argument("--power", type=float, default=0.8, help="target power (0.8)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per step (8)")
    p.add_argument("--group-size", type=int, default=16, help="completions per prompt (16)")
    p.add_argument("--seeds", type=int, nargs="+", default=[3, 8, 16], help="seed counts to split over (3 8 16)")
    p.add_argument(
        "--run-sd",
        type=float,
        default=None,
        help="sd of run-mean correct_rate across seeds: also size the seed-level test",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def run_power(args: argparse.Namespace) -> int:
    import json

    from retrain.analysis.outputs import jsonable
    from retrain.analysis.power import power_plan, render_power

    if args.run_sd is not None and args.run_sd <= 0:
        raise RetrainError(f"--run-sd {args.run_sd}: must be > 0 (the sd of run-mean correct_rate across seeds)")
    plan = power_plan(
        args.baseline_rate,
        args.lift,
        args.alpha,
        args.power,
        args.batch_size,
        args.group_size,
        tuple(args.seeds),
        args.run_sd,
    )
    print(json.dumps(jsonable(plan), indent=2) if args.json else render_power(plan))
    return 0


def add_plot_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="CAMPAIGN_OR_RUN", help="a campaign dir, or run dirs / globs")
    p.add_argument("--metric", default="correct_rate", help="metric for the learning curves (correct_rate)")
    p.add_argument(
        "--out",
        default=None,
        metavar="FILE.png",
        help="curves file (an .svg is written beside it, and <stem>_mechanism.png/.svg); "
        "default <campaign>/plots/<metric>.png",
    )


@_print_warnings
def run_plot(args: argparse.Namespace) -> int:
    from retrain.analysis.load import load_campaign_runs, resolve_arm, runs_to_frame
    from retrain.analysis.plot import MECHANISM_METRICS, condition_colors, plot_curves, plot_mechanism

    columns = tuple(dict.fromkeys((args.metric, *(m for m, _ in MECHANISM_METRICS))))
    single = Path(args.inputs[0])
    if len(args.inputs) == 1 and (single / "runs").is_dir():
        runs = load_campaign_runs(single, columns)
        default_out = single / "plots" / f"{args.metric}.png"
    else:
        runs = resolve_arm(args.inputs, None, "plot", columns=columns)
        default_out = Path(f"{args.metric}.png")
    if not runs:
        raise RetrainError(f"{single}: no run has logged a step yet; nothing to plot.")
    out = Path(args.out) if args.out else default_out
    df = runs_to_frame(runs, columns)
    colors = condition_colors(sorted(df["condition"].unique()))
    known = {k for r in runs for k in r.header} - {"step", "condition", "seed"}  # the keys of the rows
    known |= {m for r in runs for m in (r.evals or {})}
    written = plot_curves(df, args.metric, out, colors=colors, known_metrics=sorted(known))
    written += plot_mechanism(df, out.with_name(f"{out.stem}_mechanism.png"), colors=colors)
    for path in written:
        print(f"wrote {path}")
    return 0


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("campaign", help="campaign dir (with runs/ and manifest.json)")
    p.add_argument("--out", default=None, metavar="DIR", help="output dir (default <campaign>/report)")
    p.add_argument("--baseline", default=None, help="condition every other one is compared with (grpo+none)")
    p.add_argument("--window", default=None, metavar="START:END", help="step window (default: last 20%% of steps)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (0.05)")
    p.add_argument("--resamples", type=int, default=20000, help="resamples for the seed-level tests (20000)")
    p.add_argument("--seed", type=int, default=0, help="RNG seed for resampling (0)")


@_print_warnings
def run_report(args: argparse.Namespace) -> int:
    from retrain.analysis.report import build_report

    if not Path(args.campaign).is_dir():
        raise RetrainError(f"{args.campaign}: campaign directory not found. Pass logs/campaign_YYYYmmdd_HHMMSS.")
    paths = build_report(
        args.campaign,
        args.out,
        baseline=args.baseline,
        window=_window(args),
        alpha=args.alpha,
        resamples=args.resamples,
        seed=args.seed,
    )
    for key in ("html", "markdown", "json", "figures"):
        print(f"wrote {paths[key]}")
    return 0


VERBS = ("plot", "compare", "litmus", "power", "report")


def register(subparsers) -> None:
    """Add plot, compare, litmus, power and report to the main CLI's subparsers.

    A verb already present (e.g. a placeholder the main CLI added for help listing) is left alone, so
    registering is safe whichever of the five verbs triggered the import.
    """
    specs = {
        "plot": (
            run_plot,
            add_plot_arguments,
            "learning curves and entropy panels (PNG + SVG)",
            "Learning curves per condition (mean ± std over seeds) and the SEPA mechanism panel, as PNG and SVG.",
        ),
        "compare": (
            run_compare,
            add_compare_arguments,
            "significance report: baseline vs candidate",
            "Seed-level permutation / sign-flip tests, bootstrap CI, Hedges' g, pooled Fisher with "
            "design effect, sample sizes, recommendation.",
        ),
        "litmus": (
            run_litmus,
            add_litmus_arguments,
            "CONFIRMED / FAILED / INCONCLUSIVE verdict (exit 0 / 1 / 2; 3 error)",
            "Evidence gates, then threshold checks on candidate - baseline.",
        ),
        "power": (
            run_power,
            add_power_arguments,
            "episodes (and steps x seeds) per arm to detect a lift",
            "n = ceil((z_{1-a/2} sqrt(2 pbar qbar) + z_power sqrt(p0q0 + p1q1))^2 / (p1-p0)^2)",
        ),
        "report": (
            run_report,
            add_report_arguments,
            "one self-contained HTML (+ markdown) report of a campaign",
            "Run table, curves, mechanism panel, every condition vs the baseline, SEPA vs HICRA, litmus, "
            "power and the squeeze table.",
        ),
    }
    for verb in VERBS:
        if verb in subparsers.choices:
            continue
        func, add_arguments, help_text, description = specs[verb]
        p = subparsers.add_parser(verb, help=help_text, description=description)
        add_arguments(p)
        if verb == "litmus":
            exit_3_on_usage_error(p)
        p.set_defaults(func=func)
