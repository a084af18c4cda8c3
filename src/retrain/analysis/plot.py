"""Learning curves and the SEPA mechanism panel, as PNG + SVG (matplotlib, no pyplot state).

Colours are fixed per condition label (`condition_colors`), so a condition has the same colour in
every figure of a report and across campaigns for the guide's conditions.

Example::

    from retrain.analysis import load_campaign
    from retrain.analysis.plot import plot_curves, plot_mechanism
    df = load_campaign("logs/campaign_X")
    plot_curves(df, "correct_rate", "curves.png")      # writes curves.png and curves.svg
    plot_mechanism(df, "mechanism.png")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The guide's ablation conditions (and their grpo twins) get fixed colours: grey baseline, the
# transforms in the order of the guide's expected ranking, SEPA red.
FIXED_COLORS = {
    "grpo+none": "#7f7f7f",
    "maxrl+none": "#1f77b4",
    "maxrl+gtpo": "#2ca02c",
    "maxrl+gtpo_hicra": "#ff7f0e",
    "maxrl+gtpo_sepa": "#d62728",
    "grpo+gtpo": "#98df8a",
    "grpo+gtpo_hicra": "#ffbb78",
    "grpo+gtpo_sepa": "#ff9896",
}
EXTRA_COLORS = (
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
    "#aec7e8",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#dbdb8d",
    "#9edae5",
)
MECHANISM_METRICS = (
    ("exec_entropy_var", "execution entropy variance"),
    ("plan_entropy_mean", "planning entropy (mean)"),
    ("sepa_lambda", "SEPA λ"),
)
# A curve with more steps than this is drawn as the means of this many equal step bins: a figure
# is ~1000 px wide, and 50,000 points per line made the SVG tens of MB and the plot minutes long.
MAX_DRAWN_POINTS = 1000
# A curve with at most this many points (e.g. eval_correct_rate, logged every N steps) is drawn as
# markers with error bars joined by lines: a band between a handful of points hides where they are.
SPARSE_POINTS = 60


def condition_colors(conditions) -> dict[str, str]:
    """{condition: colour}: the fixed colour for known labels (also with '~overrides' when no other
    condition shares the base label); the others take EXTRA_COLORS in sorted label order (cycling),
    so the mapping depends only on the set of labels, not on plotting order."""
    conditions = sorted(set(conditions))
    bases = [c.partition("~")[0] for c in conditions]
    out = {
        c: FIXED_COLORS[b] for c, b in zip(conditions, bases, strict=True) if b in FIXED_COLORS and bases.count(b) == 1
    }
    for i, c in enumerate(c for c in conditions if c not in out):
        out[c] = EXTRA_COLORS[i % len(EXTRA_COLORS)]
    return out


def curve_stats(df, metric: str):
    """Per (condition, step): mean, std (ddof=1; 0 with one seed) and n of `metric` over seeds."""
    import pandas as pd

    if metric not in df.columns:
        return pd.DataFrame(columns=["condition", "step", "mean", "std", "n"])
    vals = pd.to_numeric(df[metric], errors="coerce")
    g = df.assign(_v=vals).dropna(subset=["_v"]).groupby(["condition", "step"], observed=True)["_v"]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def pd_has_values(col) -> bool:
    """Whether a frame column holds at least one number (not only nulls / NaN)."""
    import pandas as pd

    return bool(pd.to_numeric(col, errors="coerce").notna().any())


def is_sepa_condition(label: str) -> bool:
    """True for labels whose transform is SEPA ('maxrl+gtpo_sepa', 'grpo+gtpo_sepa~sepa.steps=5')."""
    return label.partition("~")[0].partition("+")[2].endswith("sepa")


def gate_open_steps(df) -> dict[str, list[int]]:
    """{SEPA condition: [first step with sepa_gate_open true, per run whose gate opened]}.

    Only SEPA conditions: the trainer runs the controller (and logs its gate) for every run, but the
    gate only matters where λ is used.
    """
    if "sepa_gate_open" not in df.columns:
        return {}
    opened = df[(df["sepa_gate_open"] == True) & df["condition"].map(is_sepa_condition)]  # noqa: E712 — may hold None
    firsts = opened.groupby(["condition", "run"], observed=True)["step"].min()
    out: dict[str, list[int]] = {}
    for (cond, _), step in firsts.items():
        out.setdefault(cond, []).append(int(step))
    return out


def _save(fig, out_png: str | Path) -> list[Path]:
    """Write `<stem>.png` and `<stem>.svg`, both marked as ours; never replace a file we did not write."""
    from retrain.analysis.outputs import MARK, is_ours
    from retrain.errors import RetrainError

    out_png = Path(out_png)
    if out_png.suffix.lower() != ".png":
        out_png = out_png.with_suffix(".png")
    out_svg = out_png.with_suffix(".svg")
    for path in (out_png, out_svg):
        if path.exists() and not is_ours(path):
            raise RetrainError(
                f"{path}: refusing to overwrite a file retrain did not write. "
                f"Pass another --out, or move that file away first."
            )
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120, bbox_inches="tight", metadata={"Software": f"{MARK} plot"})
    fig.savefig(out_svg, bbox_inches="tight", metadata={"Date": None, "Creator": f"{MARK} plot"})
    return [out_png, out_svg]


def binned(s, max_points: int = MAX_DRAWN_POINTS):
    """One condition's curve stats (step, mean, std) reduced to at most `max_points` rows: the mean
    step, mean and std over equal-width step bins (the curve itself when it is short enough)."""
    import numpy as np

    if len(s) <= max_points:
        return s
    edges = np.linspace(s["step"].min(), s["step"].max(), max_points + 1)
    bins = np.clip(np.searchsorted(edges, s["step"], side="right") - 1, 0, max_points - 1)
    return s.groupby(bins)[["step", "mean", "std"]].mean().reset_index(drop=True)


def _draw_band(ax, stats_df, cond: str, color: str, label: str) -> None:
    """Mean ± std over seeds: a line with a band, or markers with error bars for a sparse curve."""
    s = binned(stats_df[stats_df["condition"] == cond].sort_values("step"))
    if len(s) <= SPARSE_POINTS:
        ax.errorbar(s["step"], s["mean"], yerr=s["std"], color=color, lw=1.5, marker="o", ms=4, capsize=3, label=label)
        return
    ax.plot(s["step"], s["mean"], color=color, lw=1.8, label=label)
    ax.fill_between(s["step"], s["mean"] - s["std"], s["mean"] + s["std"], color=color, alpha=0.18, lw=0)


def plot_curves(
    df,
    metric: str,
    out_png: str | Path,
    colors: dict[str, str] | None = None,
    title: str | None = None,
    known_metrics: list[str] | None = None,
) -> list[Path]:
    """Mean ± std over seeds of `metric` per condition vs step (a band, or markers with error bars
    for a sparse metric such as eval_correct_rate). Writes PNG and SVG; returns both paths.

    A metric with no value in `df` is a RetrainError listing `known_metrics` (default: the frame's
    columns that hold numbers), never an empty figure.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from retrain.errors import RetrainError

    st = curve_stats(df, metric)
    if st.empty:
        known = known_metrics or sorted(
            c for c in df.columns if c not in ("condition", "seed", "step", "run") and pd_has_values(df[c])
        )
        hint = " Held-out evals are logged when [eval] every > 0." if metric == "eval_correct_rate" else ""
        raise RetrainError(
            f"--metric {metric!r}: no run logged a value of it, so there is nothing to draw.{hint} "
            f"Logged metrics: {', '.join(known) or 'none'}"
        )
    conditions = sorted(df["condition"].unique())
    colors = colors or condition_colors(conditions)
    seeds = df.groupby("condition", observed=True)["run"].nunique()
    fig = Figure(figsize=(9, 5.2))
    ax = fig.add_subplot()
    for cond in conditions:
        if (st["condition"] == cond).any():
            _draw_band(ax, st, cond, colors[cond], f"{cond} (n={seeds[cond]})")
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} by condition (mean ± std over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=9, frameon=False)
    return _save(fig, out_png)


def plot_mechanism(df, out_png: str | Path, colors: dict[str, str] | None = None) -> list[Path]:
    """Stacked panels of exec_entropy_var, plan_entropy_mean and sepa_lambda (mean ± std over seeds),
    with a dashed line where each condition's SEPA correctness gate opened (median over its runs)."""
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    conditions = sorted(df["condition"].unique())
    colors = colors or condition_colors(conditions)
    gates = gate_open_steps(df)
    fig = Figure(figsize=(9, 9))
    axes = fig.subplots(len(MECHANISM_METRICS), 1, sharex=True)
    for ax, (metric, label) in zip(axes, MECHANISM_METRICS, strict=True):
        st = curve_stats(df, metric)
        if st.empty:
            ax.text(0.5, 0.5, f"{metric} not logged", ha="center", va="center", transform=ax.transAxes)
        for cond in conditions:
            if (st["condition"] == cond).any():
                _draw_band(ax, st, cond, colors[cond], cond)
        for cond, steps in sorted(gates.items()):
            ax.axvline(
                float(np.median(steps)),
                color=colors.get(cond, "k"),
                ls="--",
                lw=1.2,
                label=f"gate open: {cond} (step {int(np.median(steps))})",
            )
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("step")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_title("SEPA mechanism: entropy and λ (mean ± std over seeds)")
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    axes[0].legend(handles.values(), handles.keys(), loc="best", fontsize=8, frameon=False)
    return _save(fig, out_png)
