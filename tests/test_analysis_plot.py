"""Plots: files, bands, fixed colours across figures, gate-open marker, the `plot` verb."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from fixtures_analysis import run_cli, small_campaign  # noqa: F401 — pytest fixture
from PIL import Image

from retrain.analysis import load_campaign
from retrain.analysis.plot import (
    FIXED_COLORS,
    condition_colors,
    curve_stats,
    gate_open_steps,
    plot_curves,
    plot_mechanism,
)
from retrain.errors import RetrainError


def nonblank(png) -> float:
    """Fraction of non-white pixels; also asserts the image has many colours."""
    img = np.asarray(Image.open(png).convert("RGB"))
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20
    return float((img.sum(-1) < 750).mean())


def test_condition_colors_fixed_and_order_free():
    assert condition_colors(["maxrl+gtpo_sepa", "grpo+none"]) == {"maxrl+gtpo_sepa": "#d62728", "grpo+none": "#7f7f7f"}
    a = condition_colors(["zeta+x", "alpha+y", "maxrl+gtpo_hicra"])
    b = condition_colors(["maxrl+gtpo_hicra", "alpha+y", "zeta+x"])
    assert a == b and a["maxrl+gtpo_hicra"] == FIXED_COLORS["maxrl+gtpo_hicra"]
    assert len(set(a.values())) == 3
    # a campaign label with overrides keeps its base condition's colour unless two variants share it
    assert condition_colors(["maxrl+gtpo_sepa~sepa.steps=5", "grpo+none"])["maxrl+gtpo_sepa~sepa.steps=5"] == "#d62728"
    two = condition_colors(["maxrl+gtpo_sepa~sepa.steps=5", "maxrl+gtpo_sepa~sepa.steps=50"])
    assert len(set(two.values())) == 2 and "#d62728" not in two.values()


def test_curve_stats_hand_values(small_campaign):
    df = load_campaign(small_campaign)
    st = curve_stats(df, "correct_rate")
    row = st[(st.condition == "grpo+none") & (st.step == 5)].iloc[0]
    vals = df[(df.condition == "grpo+none") & (df.step == 5)].correct_rate.to_numpy()
    assert row["n"] == 3
    assert row["mean"] == pytest.approx(vals.mean()) and row["std"] == pytest.approx(vals.std(ddof=1))


def test_gate_open_steps(small_campaign):
    assert gate_open_steps(load_campaign(small_campaign)) == {"maxrl+gtpo_sepa": [3, 3, 3]}


def test_plots_write_png_svg_with_consistent_colours(small_campaign, tmp_path):
    df = load_campaign(small_campaign)
    curves = plot_curves(df, "correct_rate", tmp_path / "curves.png")
    mech = plot_mechanism(df, tmp_path / "mech.png")
    assert [p.name for p in curves] == ["curves.png", "curves.svg"]
    assert [p.name for p in mech] == ["mech.png", "mech.svg"]
    assert nonblank(curves[0]) > 0.03 and nonblank(mech[0]) > 0.03
    curves_svg, mech_svg = curves[1].read_text(), mech[1].read_text()
    for cond, color in condition_colors(df.condition.unique()).items():
        assert color in curves_svg and color in mech_svg, cond  # same colour for the condition in both figures
        assert f"{cond} (n=3)" in curves_svg  # legend entry with the seed count
    for label in (
        "step",
        "correct_rate",
        "execution entropy variance",
        "SEPA λ",
        "gate open: maxrl+gtpo_sepa (step 3)",
    ):
        assert label in (curves_svg + mech_svg), label


def test_unknown_metric_is_a_user_error(small_campaign, tmp_path):
    with pytest.raises(RetrainError, match="--metric 'nope'.*Logged metrics:.*correct_rate"):
        plot_curves(load_campaign(small_campaign), "nope", tmp_path / "x.png")


def test_plot_cli_defaults_and_never_overwrites_foreign_files(small_campaign, tmp_path, capsys):
    camp = tmp_path / "camp"
    shutil.copytree(small_campaign, camp)
    assert run_cli(["plot", str(camp)]) == 0
    for name in ("correct_rate.png", "correct_rate.svg", "correct_rate_mechanism.png", "correct_rate_mechanism.svg"):
        assert (camp / "plots" / name).is_file(), name
    assert run_cli(["plot", str(camp)]) == 0  # regenerating our own figures is fine
    mine = tmp_path / "fig.png"
    mine.write_bytes(b"\x89PNG my own figure")
    assert run_cli(["plot", str(camp), "--out", str(mine)]) == 2
    assert mine.read_bytes() == b"\x89PNG my own figure"
    # run dirs / globs work too
    out = tmp_path / "sel" / "c.png"
    assert run_cli(["plot", str(camp / "runs" / "maxrl+gtpo*_s*"), "--out", str(out)]) == 0
    assert "maxrl+gtpo_sepa (n=3)" in out.with_suffix(".svg").read_text()


def test_gate_markers_only_for_sepa_conditions():
    import pandas as pd

    from retrain.analysis.plot import is_sepa_condition

    # the trainer logs the SEPA gate for every run; only SEPA conditions get a marker
    df = pd.DataFrame(
        {
            "condition": ["grpo+none", "grpo+none", "maxrl+gtpo_sepa~sepa.steps=5", "maxrl+gtpo_sepa~sepa.steps=5"],
            "run": ["a", "a", "b", "b"],
            "step": [0, 1, 0, 1],
            "sepa_gate_open": [True, True, False, True],
        }
    )
    assert gate_open_steps(df) == {"maxrl+gtpo_sepa~sepa.steps=5": [1]}
    assert is_sepa_condition("grpo+gtpo_sepa") and not is_sepa_condition("maxrl+gtpo_hicra")
