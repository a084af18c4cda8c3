"""`retrain report CAMPAIGN`: one self-contained HTML page (figures embedded) plus the same as markdown.

Sections: warnings (damaged logs, and whatever a check in `WARNING_CHECKS` finds), run table,
learning curves, mechanism panel, held-out accuracy (eval_correct_rate with the before-training
point), every condition vs the baseline condition, SEPA vs HICRA (compare + litmus), power, squeeze
table (when the manifest has one). Each section is a function `_x_section(doc, ctx)`.
The page has no external resources; a 3-line script only marks each figure `data-rendered="yes"`
once the browser has decoded it (what the headless-browser test checks).

Example::

    paths = build_report("logs/campaign_X")     # logs/campaign_X/report/report.{html,md,json} + figures/
"""

from __future__ import annotations

import base64
import html
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from retrain import __version__
from retrain.analysis import litmus as litmus_mod
from retrain.analysis import power as power_mod
from retrain.analysis.load import (
    DEFAULT_COLUMNS,
    EVAL_METRIC,
    Run,
    campaign_run_dirs,
    load_manifest,
    load_runs,
    runs_to_frame,
)
from retrain.analysis.outputs import MARK, is_ours, write_json, write_text
from retrain.analysis.significance import compare_arms, resolve_window, window_counts, window_mean
from retrain.analysis.void import campaign_void_warnings
from retrain.errors import RetrainError
from retrain.jsonio import read_json

DEFAULT_BASELINE = "grpo+none"
# The metrics.jsonl keys the report parses (the runs table, curves, mechanism panel, comparisons,
# litmus); eval_correct_rate comes from eval.jsonl.
REPORT_COLUMNS = (*DEFAULT_COLUMNS, "exec_entropy_var", "plan_entropy_mean", "sepa_lambda", "sepa_gate_open")
GUIDE_LIFT = 0.0126  # docs/research-guide.md: "+1.3 point lift"
TEST_LABELS = {"paired_sign_flip": "sign-flip (paired)", "permutation": "permutation"}
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;background:#fff;line-height:1.45}
h1{border-bottom:2px solid #d62728;padding-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.8em 0;font-size:.85em}th,td{border:1px solid #ccc;padding:.3em .5em;
text-align:right}td{white-space:nowrap}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee}code{background:#f5f5f5;padding:0 .2em}
.statistically_significant_improvement,.CONFIRMED{color:#1a7f37;font-weight:600}
.significant_degradation,.FAILED{color:#c62828;font-weight:600}
.insufficient_statistical_evidence,.INCONCLUSIVE{color:#8a6d00}
.scroll{overflow-x:auto}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.4em .8em;margin:.4em 0}
"""
SCRIPT = (
    "window.addEventListener('load',function(){document.querySelectorAll('img').forEach(function(i){"
    "i.setAttribute('data-rendered',(i.complete&&i.naturalWidth>0)?'yes':'no');});});"
)


@dataclass
class Doc:
    """A tiny document model rendered to both markdown and HTML, so the two never drift apart."""

    parts: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.parts.append(("h", (level, text)))

    def p(self, text: str, warn: bool = False) -> None:
        self.parts.append(("warn" if warn else "p", text))

    def items(self, lines: list[str]) -> None:
        self.parts.append(("ul", lines))

    def table(self, headers: list[str], rows: list[list[Any]]) -> None:
        self.parts.append(("table", (headers, rows)))

    def figure(self, png: Path, alt: str) -> None:
        self.parts.append(("img", (png, alt)))

    def to_markdown(self, root: Path) -> str:
        out = [f"<!-- {MARK} report -->"]
        for kind, val in self.parts:
            if kind == "h":
                out += [f"{'#' * val[0]} {val[1]}", ""]
            elif kind in ("p", "warn"):
                out += [("> **warning:** " if kind == "warn" else "") + val, ""]
            elif kind == "ul":
                out += [f"- {line}" for line in val] + [""]
            elif kind == "table":
                headers, rows = val
                out.append("| " + " | ".join(headers) + " |")
                out.append("|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|")
                out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
                out.append("")
            elif kind == "img":
                out += [f"![{val[1]}]({val[0].relative_to(root).as_posix()})", ""]
        return "\n".join(out)

    def to_html(self, title: str) -> str:
        body = []
        for kind, val in self.parts:
            if kind == "h":
                body.append(f"<h{val[0]}>{_inline(val[1])}</h{val[0]}>")
            elif kind == "p":
                body.append(f"<p>{_inline(val)}</p>")
            elif kind == "warn":
                body.append(f'<div class="warn"><b>warning:</b> {_inline(val)}</div>')
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in val) + "</ul>")
            elif kind == "table":
                headers, rows = val
                head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
                trs = "".join("<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in rows)
                body.append(
                    f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table></div>'
                )
            elif kind == "img":
                data = base64.b64encode(val[0].read_bytes()).decode("ascii")
                body.append(
                    f'<figure><img alt="{html.escape(val[1])}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{html.escape(val[1])}</figcaption></figure>"
                )
        return (
            "<!DOCTYPE html>\n"
            f"<!-- {MARK} report -->\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<meta name="generator" content="retrain {__version__} report">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body)
            + f"\n<script>{SCRIPT}</script>\n</body></html>\n"
        )


def _cell(c: Any) -> str:
    if c is None or (isinstance(c, float) and not math.isfinite(c)):
        return "n/a"
    if isinstance(c, float):
        return f"{c:.4g}"
    return str(c)


def _inline(text: str) -> str:
    """Escape, then turn `code` spans into <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _td(c: Any) -> str:
    text = _cell(c)
    cls = (
        f' class="{text}"'
        if text
        in (
            "statistically_significant_improvement",
            "significant_degradation",
            "insufficient_statistical_evidence",
            "CONFIRMED",
            "FAILED",
            "INCONCLUSIVE",
        )
        else ""
    )
    return f"<td{cls}>{html.escape(text)}</td>"


def _run_state(run: Run, manifest: dict | None) -> str:
    """The run's state: run.json's status, else the manifest's, else inferred from its step count."""
    status = read_json(run.run_dir / "run.json").get("status")
    if isinstance(status, str):
        return status
    for entry in (manifest or {}).get("runs", []) or []:
        if isinstance(entry, dict) and entry.get("name") == run.name and isinstance(entry.get("state"), str):
            return entry["state"]
    max_steps = (manifest or {}).get("max_steps")
    if isinstance(max_steps, int) and run.last_step is not None:
        # the same words run.json uses (docs/metrics.md), so a table never mixes "done" and "completed"
        return "completed" if run.last_step + 1 >= max_steps else "partial"
    return "unknown"


def _median_int(runs: list[Run], key: str) -> int | None:
    vals = [r.header[key] for r in runs if isinstance(r.header.get(key), int) and not isinstance(r.header[key], bool)]
    return int(statistics.median(vals)) if vals else None


def split_label(label: str) -> tuple[str, str, str]:
    """'maxrl+gtpo_sepa~sepa.steps=5' → ('maxrl', 'gtpo_sepa', 'sepa.steps=5'); no '+' → ('', label, '')."""
    base, _, overrides = label.partition("~")
    adv, plus, transform = base.partition("+")
    return (adv, transform, overrides) if plus else ("", base, overrides)


def pick_sepa_hicra(conditions: list[str]) -> tuple[str, str] | None:
    """(HICRA, SEPA) condition labels with the same advantage mode (overrides after '~' allowed,
    e.g. 'maxrl+gtpo_sepa~sepa.steps=100'), maxrl preferred, then the shortest labels; None if absent."""
    parsed = [(c, *split_label(c)) for c in conditions]
    pairs = [
        (h, s)
        for s, adv_s, tr_s, _ in parsed
        if tr_s == "gtpo_sepa"
        for h, adv_h, tr_h, _ in parsed
        if tr_h == "gtpo_hicra" and adv_h == adv_s and adv_s
    ]
    pairs.sort(key=lambda p: (split_label(p[1])[0] != "maxrl", len(p[0]) + len(p[1]), p))
    return pairs[0] if pairs else None


def _prepare_out_dir(out_dir: Path) -> None:
    """An output dir is usable when everything in it is ours: report.{html,md,json} and figures/
    written by an earlier `retrain report` (then regenerated). Anything else there is refused."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise RetrainError(f"--out {out_dir}: exists and is not a directory. Pass a directory path.")
        foreign = []
        for entry in out_dir.iterdir():
            if entry.name in ("report.html", "report.md", "report.json") and entry.is_file() and is_ours(entry):
                continue
            if entry.name == "figures" and entry.is_dir() and all(f.is_file() and is_ours(f) for f in entry.iterdir()):
                continue
            foreign.append(entry.name)
        if foreign:
            raise RetrainError(
                f"--out {out_dir}: this directory holds files that are not a retrain report "
                f"({', '.join(sorted(foreign)[:5])}); refusing to write into it. "
                f"Pass an empty or new directory."
            )
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)


@dataclass
class ReportContext:
    """What every section and warning check of a report sees: the loaded campaign and the settings."""

    campaign_dir: Path
    runs: list[Run]  # runs with at least one usable metrics row, sorted by condition then seed
    skipped: list[Run]  # run dirs without a usable metrics row (left out of every table)
    manifest: dict | None
    by_cond: dict[str, list[Run]]
    baseline: str
    window: tuple[int, int]
    alpha: float
    resamples: int
    seed: int
    data: dict[str, Any]  # report.json; sections add their numbers, checks read them


def data_problem_warnings(ctx: ReportContext) -> list[str]:
    """One line per damaged log file (skipped lines and values, counted) and per run left out."""
    out = [text for r in ctx.runs + ctx.skipped for text in r.problems]
    out += [f"{r.run_dir}: no usable metrics row; left out of this report" for r in ctx.skipped]
    return out


# Checks that look at the whole campaign and return warnings for the top of the page (and
# report.json "warnings"), e.g. damaged logs or a comparison that cannot mean anything. A check is
# `fn(ctx: ReportContext) -> list[str]`; it runs after the sections, so it can read `ctx.data`
# (the runs table, comparisons and litmus) as well as the runs. Append one here to add a warning.
def void_comparison_warnings(ctx: ReportContext) -> list[str]:
    """Planning conditions with ~0 planning tokens, and conditions with identical metrics (analysis/void.py)."""
    return campaign_void_warnings(ctx.by_cond)


WARNING_CHECKS: list[Callable[[ReportContext], list[str]]] = [data_problem_warnings, void_comparison_warnings]


def build_report(
    campaign_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    baseline: str | None = None,
    window: tuple[int | None, int | None] | None = None,
    alpha: float = 0.05,
    resamples: int = 20000,
    seed: int = 0,
) -> dict[str, Path]:
    """Write report.html, report.md, report.json and figures/ for a campaign; returns their paths."""
    campaign_dir = Path(campaign_dir)
    loaded = load_runs(campaign_run_dirs(campaign_dir), REPORT_COLUMNS)
    runs = sorted((r for r in loaded if r.num_steps), key=lambda r: (r.condition, r.seed is None, r.seed or 0, r.name))
    if not runs:
        raise RetrainError(f"{campaign_dir}: no run under runs/ has logged a step yet; nothing to report.")
    conditions = sorted({r.condition for r in runs})
    by_cond = {c: [r for r in runs if r.condition == c] for c in conditions}
    if baseline is not None and baseline not in by_cond:
        raise RetrainError(
            f"--baseline {baseline!r}: no run of this condition in {campaign_dir}. "
            f"Conditions there: {', '.join(conditions)}."
        )
    out_dir = Path(out_dir) if out_dir is not None else campaign_dir / "report"
    _prepare_out_dir(out_dir)
    start, end, is_default = resolve_window(runs, window)
    ctx = ReportContext(
        campaign_dir=campaign_dir,
        runs=runs,
        skipped=[r for r in loaded if not r.num_steps],
        manifest=load_manifest(campaign_dir),
        by_cond=by_cond,
        baseline=baseline or DEFAULT_BASELINE,
        window=(start, end),
        alpha=alpha,
        resamples=resamples,
        seed=seed,
        data={
            "generator": "retrain report",
            "campaign": str(campaign_dir),
            "conditions": conditions,
            "window": {"start": start, "end": end, "default": is_default},
            "baseline": baseline or DEFAULT_BASELINE,
            "comparisons": {},
            "warnings": [],
        },
    )
    head, body = Doc(), Doc()
    head.h(1, f"Campaign report: {campaign_dir.name}")
    seeds = sorted({r.seed for r in runs if r.seed is not None})
    head.items(
        [
            f"campaign: `{campaign_dir}`",
            f"conditions: {', '.join(f'`{c}`' for c in conditions)}",
            f"seeds: {', '.join(map(str, seeds))}; runs: {len(runs)}",
            f"comparison window: steps [{start}, {end})" + (" (last 20% of steps)" if is_default else ""),
            f"statistics: alpha {alpha}, {resamples} resamples, seed {seed}",
            f"generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} by retrain {__version__}",
        ]
    )
    figs = out_dir / "figures"
    _runs_section(body, ctx)
    _curves_section(body, ctx, figs)
    _eval_section(body, ctx, figs)
    _conditions_section(body, ctx)
    _sepa_hicra_section(body, ctx)
    _power_section(body, ctx)
    _squeeze_section(body, ctx)

    # warnings go first: a damaged log or a void comparison changes how everything below reads
    found = [w for check in WARNING_CHECKS for w in check(ctx)]
    ctx.data["warnings"] = found + ctx.data["warnings"]
    if ctx.data["warnings"]:
        head.h(2, "Warnings")
        for w in ctx.data["warnings"]:
            head.p(w, warn=True)
    doc = Doc(head.parts + body.parts)
    title = f"retrain report: {campaign_dir.name}"
    return {
        "html": write_text(out_dir / "report.html", doc.to_html(title)),
        "markdown": write_text(out_dir / "report.md", doc.to_markdown(out_dir)),
        "json": write_json(out_dir / "report.json", ctx.data),
        "figures": figs,
    }


def _has_evals(runs: list[Run]) -> bool:
    return any(len(r.series(EVAL_METRIC)[0]) for r in runs)


def _eval_point(run: Run, which: str, metric: str = EVAL_METRIC) -> float | None:
    """The run's held-out `metric` before training (after_step = -1) or at its last eval point."""
    steps, values = run.series(metric)
    if which == "before":
        hit = np.flatnonzero(steps == -1)
        return float(values[hit[0]]) if len(hit) else None
    return float(values[-1]) if len(values) and steps[-1] >= 0 else None


def _runs_section(doc: Doc, ctx: ReportContext) -> None:
    start, end = ctx.window
    evals = _has_evals(ctx.runs)
    doc.h(2, "Runs")
    headers = [
        "condition",
        "seed",
        "state",
        "steps",
        "last step",
        "final correct_rate",
        "window correct_rate",
        "window mean_reward",
        "completions",
    ]
    keys = [
        "condition",
        "seed",
        "state",
        "steps",
        "last_step",
        "final_correct_rate",
        "window_correct_rate",
        "window_mean_reward",
        "completions",
    ]
    if evals:
        headers += ["eval before training", "final eval"]
        keys += ["eval_before", "eval_final"]
    rows = []
    for r in ctx.runs:
        row = [
            r.condition,
            r.seed,
            _run_state(r, ctx.manifest),
            r.num_steps,
            r.last_step,
            r.metric_by_step("correct_rate").get(r.last_step),
            window_mean(r, "correct_rate", start, end),
            window_mean(r, "mean_reward", start, end),
            r.completions(),
        ]
        if evals:
            row += [_eval_point(r, "before"), _eval_point(r, "final")]
        rows.append(row)
    doc.table(headers, rows)
    ctx.data["runs"] = [dict(zip(keys, row, strict=True)) for row in rows]


def _curves_section(doc: Doc, ctx: ReportContext, figs: Path) -> None:
    from retrain.analysis.plot import MECHANISM_METRICS, condition_colors, plot_curves, plot_mechanism

    colors = condition_colors(ctx.by_cond)
    df = runs_to_frame(ctx.runs, ["correct_rate", "mean_reward", *(m for m, _ in MECHANISM_METRICS)])
    doc.h(2, "Learning curves")
    for metric in ("correct_rate", "mean_reward"):
        if df[metric].notna().any():
            png, _ = plot_curves(df, metric, figs / f"curves_{metric}.png", colors=colors)
            doc.figure(png, f"{metric} per condition, mean ± std over seeds")
    doc.h(2, "Mechanism: entropy and SEPA λ")
    png, _ = plot_mechanism(df, figs / "mechanism.png", colors=colors)
    doc.figure(png, "exec_entropy_var, plan_entropy_mean and sepa_lambda; dashed: SEPA gate opened")


def _eval_section(doc: Doc, ctx: ReportContext, figs: Path) -> None:
    """Held-out accuracy: the one number the training reward cannot game. Per condition, the base
    model's score (after_step = -1), the last eval, and the mean over the window's eval points."""
    from retrain.analysis.plot import condition_colors, plot_curves

    doc.h(2, "Held-out accuracy (eval_correct_rate)")
    if not _has_evals(ctx.runs):
        doc.p(
            "No held-out evals in this campaign: set `[eval] every = N` to score the model on held-out "
            "prompts every N steps (and once before training)."
        )
        return
    start, end = ctx.window
    rows, data = [], {}
    for cond, runs in ctx.by_cond.items():
        with_evals = [r for r in runs if len(r.series(EVAL_METRIC)[0])]
        if not with_evals:
            continue
        before = [v for v in (_eval_point(r, "before") for r in with_evals) if v is not None]
        final = [v for v in (_eval_point(r, "final") for r in with_evals) if v is not None]
        # Paired per run: a run missing one point (its before-training eval lost, no eval yet) would
        # otherwise shift one mean and not the other, and seeds differ more than conditions do.
        changes = [
            f - b
            for b, f in ((_eval_point(r, "before"), _eval_point(r, "final")) for r in with_evals)
            if b is not None and f is not None
        ]
        last_steps = sorted({int(r.series(EVAL_METRIC)[0][-1]) for r in with_evals})
        window_means = [m for m in (window_mean(r, EVAL_METRIC, start, end) for r in with_evals) if math.isfinite(m)]
        entry = {
            "runs": len(with_evals),
            "before_mean": float(np.mean(before)) if before else None,
            "final_mean": float(np.mean(final)) if final else None,
            "final_sd": float(np.std(final, ddof=1)) if len(final) > 1 else None,
            "final_after_steps": last_steps,
            "change": float(np.mean(changes)) if changes else None,  # mean over runs of (final − before)
            "change_runs": len(changes),
            "window_mean": float(np.mean(window_means)) if window_means else None,
            "window_points": {r.name: r.window_steps(EVAL_METRIC, start, end) for r in with_evals},
        }
        data[cond] = entry
        rows.append(
            [
                cond,
                entry["runs"],
                entry["before_mean"],
                entry["final_mean"],
                entry["final_sd"],
                ", ".join(map(str, last_steps)),
                entry["change"],
                entry["window_mean"],
            ]
        )
    ctx.data["eval"] = data
    doc.p(
        'Greedy accuracy on held-out prompts the runs never train on, mean over seeds. "before" is the base '
        'model (after_step = -1 in eval.jsonl); "final" is each run\'s last eval; the window mean averages '
        f'each run\'s eval points in steps [{start}, {end}) (those are what the comparisons below use); "change" is '
        "the mean over runs of (final − before), from the runs that have both."
    )
    doc.table(
        ["condition", "runs", "before training", "final", "final sd", "final after step", "change", "window mean"], rows
    )
    df = runs_to_frame(ctx.runs, [EVAL_METRIC])
    png, _ = plot_curves(
        df,
        EVAL_METRIC,
        figs / f"curves_{EVAL_METRIC}.png",
        colors=condition_colors(ctx.by_cond),
        title="held-out eval_correct_rate by condition (mean ± std over seeds; step -1 = before training)",
    )
    doc.figure(png, "eval_correct_rate per condition (points: eval steps; -1: the base model), mean ± std over seeds")
    _sampled_eval_table(doc, ctx)


def _sampled_eval_table(doc: Doc, ctx: ReportContext) -> None:
    """pass@k and mean@k ([eval] k > 1) per condition, before training and at the last eval."""
    sampled = {cond: [r for r in runs if len(r.series("eval_pass_at_k")[0])] for cond, runs in ctx.by_cond.items()}
    if not any(sampled.values()):
        return
    rows = []
    for cond, runs in sampled.items():
        if not runs:
            continue
        ks = sorted({r.eval_k for r in runs if r.eval_k is not None})
        entry = {"k": ks[0] if len(ks) == 1 else ks}
        for metric in ("eval_pass_at_k", "eval_mean_at_k"):
            for which in ("before", "final"):
                vals = [v for v in (_eval_point(r, which, metric) for r in runs) if v is not None]
                entry[f"{metric}_{which}"] = float(np.mean(vals)) if vals else None
        ctx.data["eval"].setdefault(cond, {})["sampled"] = entry
        rows.append(
            [
                cond,
                len(runs),
                ", ".join(map(str, ks)) or "?",
                entry["eval_pass_at_k_before"],
                entry["eval_pass_at_k_final"],
                entry["eval_mean_at_k_before"],
                entry["eval_mean_at_k_final"],
            ]
        )
    doc.p(
        "Sampled evaluation (`[eval] k` completions per held-out prompt at `[eval].temperature`), mean over "
        "seeds: pass@k is the share of prompts with at least one correct completion, mean@k the share of correct "
        "completions (one sample's expected accuracy). Greedy accuracy (above) is neither."
    )
    doc.table(["condition", "runs", "k", "pass@k before", "pass@k final", "mean@k before", "mean@k final"], rows)


def _metrics_to_compare(ctx: ReportContext) -> tuple[str, ...]:
    return ("correct_rate", "mean_reward", EVAL_METRIC) if _has_evals(ctx.runs) else ("correct_rate", "mean_reward")


def _conditions_section(doc: Doc, ctx: ReportContext) -> None:
    base_label, alpha = ctx.baseline, ctx.alpha
    doc.h(2, f"Each condition vs the baseline `{base_label}`")
    if base_label not in ctx.by_cond:
        doc.p(
            f"The baseline condition `{base_label}` is not in this campaign; pass `--baseline COND` "
            f"(one of {', '.join(ctx.by_cond)}).",
            warn=True,
        )
        return
    rows, sparse = [], {}
    for cond in ctx.by_cond:
        if cond == base_label:
            continue
        res = compare_arms(
            ctx.by_cond[base_label],
            ctx.by_cond[cond],
            metrics=_metrics_to_compare(ctx),
            window=_window_arg(ctx),
            alpha=alpha,
            resamples=ctx.resamples,
            seed=ctx.seed,
        )
        ctx.data["comparisons"][f"{base_label} vs {cond}"] = res
        ep = res["episode_level"]["correct_rate"]
        for metric, m in res["seed_level"].items():
            if m.get("points_description"):
                sparse.setdefault(metric, set()).add(m["points_description"])
            if not m["available"]:
                continue
            rows.append(
                [
                    cond,
                    metric,
                    m["delta"],
                    f"[{m['ci_low']:+.4f}, {m['ci_high']:+.4f}]",
                    f"{_cell(m['p_value'])}{'' if m['paired'] else ' (perm.)'}",
                    m["hedges_g"],
                    m["seeds_per_arm_for_power"],
                    ep.get("p_value") if metric == "correct_rate" else None,
                    ep.get("design_effect") if metric == "correct_rate" else None,
                    m["recommendation"],
                ]
            )
        ctx.data["warnings"] += [f"{cond}: {w}" for w in res["warnings"]]
    doc.p(
        "Seed-level tests on run means over the window (primary): p from the paired sign-flip test when "
        "the arms share their seeds, else from the permutation test (marked perm.); g = Hedges' g; "
        "seeds for 80% power at the observed effect. Fisher p on pooled episodes is shown with its design "
        "effect (DEFF) for reference only."
    )
    doc.table(
        [
            "candidate",
            "metric",
            "delta",
            f"{round(100 * (1 - alpha))}% CI",
            "p",
            "g",
            "seeds for 80%",
            "Fisher p (pooled)",
            "DEFF",
            "verdict",
        ],
        rows,
    )
    for metric, descriptions in sparse.items():
        doc.p(
            f"{metric} is logged on some steps only: each run's value is the mean of its points in steps "
            f"[{ctx.window[0]}, {ctx.window[1]}): {'; '.join(sorted(descriptions))}."
        )


def _window_arg(ctx: ReportContext) -> tuple[int, int] | None:
    """The window as compare_arms takes it: None for the default (so results say "last 20% of steps")."""
    return None if ctx.data["window"]["default"] else ctx.window


def _sepa_hicra_section(doc: Doc, ctx: ReportContext) -> None:
    doc.h(2, "SEPA vs HICRA")
    pair = pick_sepa_hicra(list(ctx.by_cond))
    if pair is None:
        doc.p("This campaign has no matching `<adv>+gtpo_hicra` / `<adv>+gtpo_sepa` pair.")
        return
    hicra, sepa = pair
    res = compare_arms(
        ctx.by_cond[hicra],
        ctx.by_cond[sepa],
        metrics=_metrics_to_compare(ctx),
        window=_window_arg(ctx),
        alpha=ctx.alpha,
        resamples=ctx.resamples,
        seed=ctx.seed,
    )
    ctx.data["comparisons"][f"{hicra} vs {sepa}"] = res
    _compare_section(doc, res)
    lit = litmus_mod.evaluate_litmus(
        ctx.by_cond[hicra], ctx.by_cond[sepa], litmus_mod.get_profile("default"), _window_arg(ctx)
    )
    ctx.data["litmus"] = lit
    doc.h(3, f"Litmus (profile `default`): {lit['status']}")
    doc.table(
        ["check", "baseline", "candidate", "delta", "threshold", "result"],
        [
            [
                f"{c['metric']} {c['kind']}",
                c["baseline"],
                c["candidate"],
                c["delta"],
                f">= {c['threshold']:g}",
                "PASS" if c["passed"] else "FAIL",
            ]
            for c in lit["checks"]
        ],
    )
    doc.table(
        ["gate", "threshold", "passed", "failures"],
        [[g["gate"], g["threshold"], "yes" if g["passed"] else "NO", "; ".join(g["failures"])] for g in lit["gates"]],
    )
    ctx.data["warnings"] += [f"SEPA vs HICRA: {w}" for w in res["warnings"]]


def _squeeze_section(doc: Doc, ctx: ReportContext) -> None:
    squeeze = (ctx.manifest or {}).get("squeeze")
    if isinstance(squeeze, dict) and isinstance(squeeze.get("table"), list):
        doc.h(2, "LoRA-Squeeze")
        doc.p(
            f"Recommended rank: {squeeze.get('recommended_rank')} (source rank {squeeze.get('source_rank')}, "
            f"threshold {squeeze.get('threshold')} of variance retained)."
        )
        doc.table(
            ["rank", "mean retained", "min", "max"],
            [
                [row.get("rank"), row.get("mean"), row.get("min"), row.get("max")]
                for row in squeeze["table"]
                if isinstance(row, dict)
            ],
        )
        ctx.data["squeeze"] = squeeze


def _compare_section(doc: Doc, res: dict[str, Any]) -> None:
    doc.p(
        f"Baseline `{res['baseline']['label']}` vs candidate `{res['candidate']['label']}`: "
        f"recommendation `{res['recommendation']}` (seed-level test on {res['primary_metric']})."
    )
    rows = []
    for metric, m in res["seed_level"].items():
        if m["available"]:
            rows.append(
                [
                    metric,
                    m["baseline_mean"],
                    m["candidate_mean"],
                    m["delta"],
                    f"[{m['ci_low']:+.4f}, {m['ci_high']:+.4f}]",
                    m["p_value"],
                    TEST_LABELS[m["test"]],
                    m["method"],
                    m["hedges_g"],
                    m["recommendation"],
                ]
            )
    doc.table(["metric", "baseline", "candidate", "delta", "CI", "p", "test", "method", "Hedges' g", "verdict"], rows)
    ep = res["episode_level"]["correct_rate"]
    if ep.get("available"):
        doc.p(
            f"Pooled episodes: {ep['baseline_correct']}/{ep['baseline_total']} vs {ep['candidate_correct']}/"
            f"{ep['candidate_total']}, Fisher p = {_cell(ep['p_value'])}; design effect {_cell(ep['design_effect'])}, "
            f"design-adjusted p = {_cell(ep['design_adjusted_p_value'])}."
        )
    for w in res["warnings"]:
        doc.p(w, warn=True)
    for n in res["notes"]:
        doc.p(f"note: {n}")


def _power_section(doc: Doc, ctx: ReportContext) -> None:
    by_cond, runs, data, alpha = ctx.by_cond, ctx.runs, ctx.data, ctx.alpha
    ref = ctx.baseline if ctx.baseline in by_cond else next(iter(by_cond))
    start, end = ctx.window
    doc.h(2, "Power")
    counts = [window_counts(r, start, end) for r in by_cond[ref]]
    total = sum(t for _, t in counts)
    if total == 0:
        doc.p("No completion counts in the window; power not computed.")
        return
    p0 = sum(c for c, _ in counts) / total
    b, g = _median_int(runs, "batch_size") or 8, _median_int(runs, "group_size") or 16
    n_seeds = len(by_cond[ref])
    rates = np.array([window_mean(r, "correct_rate", start, end) for r in by_cond[ref]])
    rates = rates[np.isfinite(rates)]
    run_sd = float(np.std(rates, ddof=1)) if len(rates) > 1 else None
    lifts = sorted({0.005, 0.01, GUIDE_LIFT, 0.02, 0.05})
    rows = []
    for lift in lifts:
        if p0 + lift > 1:
            continue
        n = power_mod.episodes_per_arm(p0, lift, alpha)
        k = power_mod.seeds_per_arm(lift, run_sd, alpha) if run_sd else None
        rows.append([lift, n, power_mod.steps_per_run(n, b, g, n_seeds), k])
    data["power"] = {
        "reference_condition": ref,
        "baseline_rate": p0,
        "batch_size": b,
        "group_size": g,
        "seeds": n_seeds,
        "run_sd": run_sd,
        "rows": [
            dict(
                zip(["lift", "episodes_per_arm", "steps_per_run_at_seeds", "seeds_per_arm_seed_level"], r, strict=True)
            )
            for r in rows
        ],
    }
    doc.p(
        f"Baseline rate {p0:.4f} (`{ref}`, pooled over the window); {b} x {g} = {b * g} episodes per step; "
        f"{n_seeds} seeds; run-mean sd across seeds {_cell(run_sd)}. Episode counts assume independent episodes; "
        f"the last column sizes the seed-level test from the observed seed-to-seed spread."
    )
    doc.table(["lift", "episodes/arm (rate test)", f"steps per run at {n_seeds} seeds", "seeds/arm (seed-level)"], rows)
