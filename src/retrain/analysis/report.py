"""`retrain report CAMPAIGN`: one self-contained HTML page (figures embedded) plus the same as markdown.

Sections: run table, learning curves, mechanism panel, every condition vs the baseline condition,
SEPA vs HICRA (compare + litmus), power, squeeze table (when the manifest has one).
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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from retrain import __version__
from retrain.analysis import litmus as litmus_mod
from retrain.analysis import power as power_mod
from retrain.analysis.load import Run, load_campaign_runs, load_manifest, runs_to_frame
from retrain.analysis.outputs import MARK, is_ours, write_json, write_text
from retrain.analysis.significance import (
    compare_arms,
    resolve_window,
    window_counts,
    window_mean,
)
from retrain.errors import RetrainError
from retrain.jsonio import read_json

DEFAULT_BASELINE = "grpo+none"
GUIDE_LIFT = 0.0126  # the guide's "+1.3% absolute lift"
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
SCRIPT = ("window.addEventListener('load',function(){document.querySelectorAll('img').forEach(function(i){"
          "i.setAttribute('data-rendered',(i.complete&&i.naturalWidth>0)?'yes':'no');});});")


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
                body.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table></div>')
            elif kind == "img":
                data = base64.b64encode(val[0].read_bytes()).decode("ascii")
                body.append(f'<figure><img alt="{html.escape(val[1])}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{html.escape(val[1])}</figcaption></figure>")
        return ("<!DOCTYPE html>\n" f"<!-- {MARK} report -->\n"
                '<html lang="en"><head><meta charset="utf-8">'
                '<meta name="viewport" content="width=device-width,initial-scale=1">'
                f'<meta name="generator" content="retrain {__version__} report">'
                f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
                + "\n".join(body) + f"\n<script>{SCRIPT}</script>\n</body></html>\n")


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
    cls = f' class="{text}"' if text in (
        "statistically_significant_improvement", "significant_degradation", "insufficient_statistical_evidence",
        "CONFIRMED", "FAILED", "INCONCLUSIVE") else ""
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
        # the same words run.json uses (SPEC §4), so a table never mixes "done" and "completed"
        return "completed" if run.last_step + 1 >= max_steps else "partial"
    return "unknown"


def _median_int(runs: list[Run], key: str) -> int | None:
    vals = [row[key] for r in runs for row in r.metrics[:1] if isinstance(row.get(key), int)]
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
    pairs = [(h, s) for s, adv_s, tr_s, _ in parsed if tr_s == "gtpo_sepa"
             for h, adv_h, tr_h, _ in parsed if tr_h == "gtpo_hicra" and adv_h == adv_s and adv_s]
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
            raise RetrainError(f"--out {out_dir}: this directory holds files that are not a retrain report "
                               f"({', '.join(sorted(foreign)[:5])}); refusing to write into it. "
                               f"Pass an empty or new directory.")
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)


def build_report(campaign_dir: str | Path, out_dir: str | Path | None = None, *, baseline: str | None = None,
                 window: tuple[int | None, int | None] | None = None, alpha: float = 0.05,
                 resamples: int = 20000, seed: int = 0) -> dict[str, Path]:
    """Write report.html, report.md, report.json and figures/ for a campaign; returns their paths."""
    from retrain.analysis.plot import condition_colors, plot_curves, plot_mechanism

    campaign_dir = Path(campaign_dir)
    runs = sorted(load_campaign_runs(campaign_dir), key=lambda r: (r.condition, r.seed is None, r.seed or 0, r.name))
    if not runs:
        raise RetrainError(f"{campaign_dir}: no run under runs/ has logged a step yet; nothing to report.")
    manifest = load_manifest(campaign_dir)
    conditions = sorted({r.condition for r in runs})
    by_cond = {c: [r for r in runs if r.condition == c] for c in conditions}
    if baseline is not None and baseline not in by_cond:
        raise RetrainError(f"--baseline {baseline!r}: no run of this condition in {campaign_dir}. "
                           f"Conditions there: {', '.join(conditions)}.")
    out_dir = Path(out_dir) if out_dir is not None else campaign_dir / "report"
    _prepare_out_dir(out_dir)
    base_label = baseline or DEFAULT_BASELINE
    start, end, is_default = resolve_window(runs, window)
    colors = condition_colors(conditions)
    df = runs_to_frame(runs)
    data: dict[str, Any] = {"generator": "retrain report", "campaign": str(campaign_dir), "conditions": conditions,
                            "window": {"start": start, "end": end, "default": is_default},
                            "baseline": base_label, "comparisons": {}, "warnings": []}
    doc = Doc()
    doc.h(1, f"Campaign report: {campaign_dir.name}")
    seeds = sorted({r.seed for r in runs if r.seed is not None})
    doc.items([f"campaign: `{campaign_dir}`",
               f"conditions: {', '.join(f'`{c}`' for c in conditions)}",
               f"seeds: {', '.join(map(str, seeds))}; runs: {len(runs)}",
               f"comparison window: steps [{start}, {end})" + (" (last 20% of steps)" if is_default else ""),
               f"statistics: alpha {alpha}, {resamples} resamples, seed {seed}",
               f"generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by retrain {__version__}"])

    doc.h(2, "Runs")
    rows = []
    for r in runs:
        c, t = window_counts(r, start, end)
        rows.append([r.condition, r.seed, _run_state(r, manifest), r.num_steps, r.last_step,
                     r.metric_by_step("correct_rate").get(r.last_step), window_mean(r, "correct_rate", start, end),
                     window_mean(r, "mean_reward", start, end), r.completions()])
    doc.table(["condition", "seed", "state", "steps", "last step", "final correct_rate",
               "window correct_rate", "window mean_reward", "completions"], rows)
    data["runs"] = [dict(zip(["condition", "seed", "state", "steps", "last_step", "final_correct_rate",
                              "window_correct_rate", "window_mean_reward", "completions"], row, strict=True))
                    for row in rows]

    doc.h(2, "Learning curves")
    figs = out_dir / "figures"
    for metric in ("correct_rate", "mean_reward"):
        if metric in df.columns:
            png, _ = plot_curves(df, metric, figs / f"curves_{metric}.png", colors=colors)
            doc.figure(png, f"{metric} per condition, mean ± std over seeds")
    doc.h(2, "Mechanism: entropy and SEPA λ")
    png, _ = plot_mechanism(df, figs / "mechanism.png", colors=colors)
    doc.figure(png, "exec_entropy_var, plan_entropy_mean and sepa_lambda; dashed: SEPA gate opened")

    doc.h(2, f"Each condition vs the baseline `{base_label}`")
    if base_label not in by_cond:
        doc.p(f"The baseline condition `{base_label}` is not in this campaign; pass `--baseline COND` "
              f"(one of {', '.join(conditions)}).", warn=True)
    else:
        rows = []
        for cond in conditions:
            if cond == base_label:
                continue
            res = compare_arms(by_cond[base_label], by_cond[cond], window=window, alpha=alpha,
                               resamples=resamples, seed=seed)
            data["comparisons"][f"{base_label} vs {cond}"] = res
            ep = res["episode_level"]["correct_rate"]
            for metric, m in res["seed_level"].items():
                if not m["available"]:
                    continue
                rows.append([cond, metric, m["delta"], f"[{m['ci_low']:+.4f}, {m['ci_high']:+.4f}]",
                             f"{_cell(m['p_value'])}{'' if m['paired'] else ' (perm.)'}", m["hedges_g"],
                             m["seeds_per_arm_for_power"],
                             ep.get("p_value") if metric == "correct_rate" else None,
                             ep.get("design_effect") if metric == "correct_rate" else None, m["recommendation"]])
            data["warnings"] += [f"{cond}: {w}" for w in res["warnings"]]
        doc.p("Seed-level tests on run means over the window (primary): p from the paired sign-flip test when "
              "the arms share their seeds, else from the permutation test (marked perm.); g = Hedges' g; "
              "seeds for 80% power at the observed effect. Fisher p on pooled episodes is shown with its design "
              "effect (DEFF) for reference only.")
        doc.table(["candidate", "metric", "delta", f"{round(100 * (1 - alpha))}% CI", "p",
                   "g", "seeds for 80%", "Fisher p (pooled)", "DEFF", "verdict"], rows)

    doc.h(2, "SEPA vs HICRA")
    pair = pick_sepa_hicra(conditions)
    if pair is None:
        doc.p("This campaign has no matching `<adv>+gtpo_hicra` / `<adv>+gtpo_sepa` pair.")
    else:
        hicra, sepa = pair
        res = compare_arms(by_cond[hicra], by_cond[sepa], window=window, alpha=alpha, resamples=resamples, seed=seed)
        data["comparisons"][f"{hicra} vs {sepa}"] = res
        _compare_section(doc, res)
        lit = litmus_mod.evaluate_litmus(by_cond[hicra], by_cond[sepa], litmus_mod.get_profile("default"), window)
        data["litmus"] = lit
        doc.h(3, f"Litmus (profile `default`): {lit['status']}")
        doc.table(["check", "baseline", "candidate", "delta", "threshold", "result"],
                  [[f"{c['metric']} {c['kind']}", c["baseline"], c["candidate"], c["delta"], f">= {c['threshold']:g}",
                    "PASS" if c["passed"] else "FAIL"] for c in lit["checks"]])
        doc.table(["gate", "threshold", "passed", "failures"],
                  [[g["gate"], g["threshold"], "yes" if g["passed"] else "NO", "; ".join(g["failures"])]
                   for g in lit["gates"]])
        data["warnings"] += [f"SEPA vs HICRA: {w}" for w in res["warnings"]]

    _power_section(doc, data, by_cond, base_label if base_label in by_cond else conditions[0], start, end, alpha, runs)

    squeeze = (manifest or {}).get("squeeze")
    if isinstance(squeeze, dict) and isinstance(squeeze.get("table"), list):
        doc.h(2, "LoRA-Squeeze")
        doc.p(f"Recommended rank: {squeeze.get('recommended_rank')} (source rank {squeeze.get('source_rank')}, "
              f"threshold {squeeze.get('threshold')} of variance retained).")
        doc.table(["rank", "mean retained", "min", "max"],
                  [[row.get("rank"), row.get("mean"), row.get("min"), row.get("max")]
                   for row in squeeze["table"] if isinstance(row, dict)])
        data["squeeze"] = squeeze
    if data["warnings"]:
        doc.h(2, "Warnings")
        for w in data["warnings"]:
            doc.p(w, warn=True)

    title = f"retrain report: {campaign_dir.name}"
    return {"html": write_text(out_dir / "report.html", doc.to_html(title)),
            "markdown": write_text(out_dir / "report.md", doc.to_markdown(out_dir)),
            "json": write_json(out_dir / "report.json", data), "figures": figs}


def _compare_section(doc: Doc, res: dict[str, Any]) -> None:
    doc.p(f"Baseline `{res['baseline']['label']}` vs candidate `{res['candidate']['label']}`: "
          f"recommendation `{res['recommendation']}` (seed-level test on {res['primary_metric']}).")
    rows = []
    for metric, m in res["seed_level"].items():
        if m["available"]:
            rows.append([metric, m["baseline_mean"], m["candidate_mean"], m["delta"],
                         f"[{m['ci_low']:+.4f}, {m['ci_high']:+.4f}]", m["p_value"], TEST_LABELS[m["test"]], m["method"],
                         m["hedges_g"], m["recommendation"]])
    doc.table(["metric", "baseline", "candidate", "delta", "CI", "p", "test", "method", "Hedges' g", "verdict"], rows)
    ep = res["episode_level"]["correct_rate"]
    if ep.get("available"):
        doc.p(f"Pooled episodes: {ep['baseline_correct']}/{ep['baseline_total']} vs {ep['candidate_correct']}/"
              f"{ep['candidate_total']}, Fisher p = {_cell(ep['p_value'])}; design effect {_cell(ep['design_effect'])}, "
              f"design-adjusted p = {_cell(ep['design_adjusted_p_value'])}.")
    for w in res["warnings"]:
        doc.p(w, warn=True)
    for n in res["notes"]:
        doc.p(f"note: {n}")


def _power_section(doc: Doc, data: dict[str, Any], by_cond: dict[str, list[Run]], ref: str, start: int, end: int,
                   alpha: float, runs: list[Run]) -> None:
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
    data["power"] = {"reference_condition": ref, "baseline_rate": p0, "batch_size": b, "group_size": g,
                     "seeds": n_seeds, "run_sd": run_sd,
                     "rows": [dict(zip(["lift", "episodes_per_arm", "steps_per_run_at_seeds", "seeds_per_arm_seed_level"],
                                       r, strict=True)) for r in rows]}
    doc.p(f"Baseline rate {p0:.4f} (`{ref}`, pooled over the window); {b} x {g} = {b * g} episodes per step; "
          f"{n_seeds} seeds; run-mean sd across seeds {_cell(run_sd)}. Episode counts assume independent episodes; "
          f"the last column sizes the seed-level test from the observed seed-to-seed spread.")
    doc.table(["lift", "episodes/arm (rate test)", f"steps per run at {n_seeds} seeds", "seeds/arm (seed-level)"], rows)
