"""Void comparisons: ~0 planning tokens (HICRA = GTPO, SEPA pools everything) and conditions with identical
metrics are named, with the reason, by report, litmus and the end of a run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fixtures_analysis import run_cli, write_campaign

from retrain.void import (
    identical_condition_warnings,
    identical_metrics,
    planning_void_warning,
    planning_void_warnings,
    uses_planning,
)

CONDITIONS = ("maxrl+gtpo", "maxrl+gtpo_hicra", "maxrl+gtpo_sepa")


def test_planning_void_warning_threshold_and_labels():
    assert planning_void_warning("x", 0.0).startswith("x: planning_token_fraction = 0.0000 (below 0.001)")
    assert planning_void_warning("x", 0.0009) is not None
    assert planning_void_warning("x", 0.001) is None and planning_void_warning("x", None) is None
    assert planning_void_warning("x", float("nan")) is None
    assert [
        uses_planning(c)
        for c in ("maxrl+gtpo_hicra", "grpo+gtpo_sepa~sepa.steps=5", "maxrl+gtpo", "maxrl+none", "maxrl+my.mod:fn")
    ] == [True, True, False, False, False]
    rows = [{"planning_token_fraction": 0.0}, {"planning_token_fraction": None}, {}]
    assert planning_void_warnings({"maxrl+gtpo": [rows], "maxrl+gtpo_hicra": [rows]}) == [
        planning_void_warning("maxrl+gtpo_hicra", 0.0)
    ]
    # a condition that never logged the fraction is not accused
    assert planning_void_warnings({"maxrl+gtpo_hicra": [[{}]]}) == []


def test_identical_metrics_ignores_timing_backpressure_and_the_label():
    a = [
        {
            "step": 0,
            "condition": "maxrl+gtpo",
            "correct_rate": 0.5,
            "loss": -0.1,
            "step_time_s": 3.0,
            "bp_sigma": 0.1,
            "bp_regime": "warmup",
        }
    ]
    b = [{**a[0], "condition": "maxrl+gtpo_hicra", "step_time_s": 9.0, "bp_sigma": 0.7, "bp_regime": "linear"}]
    assert identical_metrics(a, b)
    assert not identical_metrics(a, [{**b[0], "loss": -0.1000001}])
    assert not identical_metrics(a, a + a) and not identical_metrics([], [])
    warnings = identical_condition_warnings(
        {"maxrl+gtpo": {1: a, 2: a}, "maxrl+gtpo_hicra": {1: b}, "maxrl+gtpo_sepa": {1: [{**a[0], "sepa_lambda": 0.3}]}}
    )
    assert warnings == [warnings[0]] and warnings[0].startswith(
        "maxrl+gtpo and maxrl+gtpo_hicra produced identical metrics on seed(s) 1: every non-timing metric"
    )
    assert "no token is a planning token" in warnings[0]
    # no shared seed: nothing to say
    assert identical_condition_warnings({"a+b": {1: a}, "a+c": {2: a}}) == []


@pytest.fixture(scope="module")
def void_campaign(tmp_path_factory) -> Path:
    """gtpo, gtpo_hicra and gtpo_sepa × 3 seeds, planning_token_fraction 0 everywhere, and every gtpo_hicra
    run a copy of the gtpo run of its seed (what a HICRA run with no planning token logs)."""
    root = write_campaign(
        tmp_path_factory.mktemp("void") / "campaign_void",
        conditions=CONDITIONS,
        lifts={"maxrl+gtpo_sepa": 0.05},
        squeeze=False,
    )
    for run in (root / "runs").iterdir():
        for rel in ("metrics.jsonl", "emergence/steps.jsonl"):
            rows = [json.loads(line) for line in (run / rel).read_text().splitlines()]
            (run / rel).write_text("".join(json.dumps({**r, "planning_token_fraction": 0.0}) + "\n" for r in rows))
    for seed in (42, 101, 202):
        hicra, gtpo = root / "runs" / f"maxrl+gtpo_hicra_s{seed}", root / "runs" / f"maxrl+gtpo_s{seed}"
        shutil.rmtree(hicra)
        shutil.copytree(gtpo, hicra)
        for rel in ("metrics.jsonl", "emergence/steps.jsonl"):
            text = (hicra / rel).read_text().replace('"maxrl+gtpo"', '"maxrl+gtpo_hicra"')
            (hicra / rel).write_text(text.replace('"step_time_s": 3.2', '"step_time_s": 4.1'))
    return root


IDENTICAL = "maxrl+gtpo and maxrl+gtpo_hicra produced identical metrics on seed(s) 42, 101, 202"


def test_report_names_the_void_comparisons(void_campaign, tmp_path):
    assert run_cli(["report", str(void_campaign), "--out", str(tmp_path / "r"), "--resamples", "200"]) == 0
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    void = data["warnings"]
    assert any(w.startswith("maxrl+gtpo_hicra: planning_token_fraction = 0.0000") for w in void)
    assert any(w.startswith("maxrl+gtpo_sepa: planning_token_fraction = 0.0000") for w in void)
    assert not any(w.startswith("maxrl+gtpo:") for w in void)  # gtpo does not use planning tokens
    assert any(w.startswith(IDENTICAL) for w in void), void
    md = (tmp_path / "r" / "report.md").read_text()
    html = (tmp_path / "r" / "report.html").read_text()
    for text in (md, html):
        assert "gtpo_hicra trains like gtpo" in text and "produced identical metrics" in text


def test_litmus_names_the_void_comparisons(void_campaign, tmp_path, capsys):
    code = run_cli(
        [
            "litmus",
            str(void_campaign),
            "--baseline",
            "maxrl+gtpo",
            "--candidate",
            "maxrl+gtpo_hicra",
            "--output",
            str(tmp_path / "l.json"),
            "--markdown",
            str(tmp_path / "l.md"),
        ]
    )
    assert code in (0, 1, 2)
    out = capsys.readouterr().out
    ident = "baseline maxrl+gtpo and candidate maxrl+gtpo_hicra produced identical metrics on seed(s) 42, 101, 202"
    assert f"warning: {ident}" in out
    assert "warning: maxrl+gtpo_hicra: planning_token_fraction = 0.0000" in out
    result = json.loads((tmp_path / "l.json").read_text())
    assert any(w.startswith(ident) for w in result["warnings"])
    assert "## Warnings" in (tmp_path / "l.md").read_text()
    # SEPA vs HICRA: both planning transforms, both with no planning token
    run_cli(["litmus", str(void_campaign), "--baseline", "maxrl+gtpo_hicra", "--candidate", "maxrl+gtpo_sepa"])
    out = capsys.readouterr().out
    assert "warning: maxrl+gtpo_hicra: planning_token_fraction" in out
    assert "warning: maxrl+gtpo_sepa: planning_token_fraction" in out and "identical" not in out


def test_a_sound_comparison_gets_no_void_warning(tmp_path, capsys):
    root = write_campaign(tmp_path / "campaign_ok", conditions=CONDITIONS, squeeze=False)
    run_cli(["litmus", str(root), "--baseline", "maxrl+gtpo_hicra", "--candidate", "maxrl+gtpo_sepa"])
    assert "warning:" not in capsys.readouterr().out
    assert run_cli(["report", str(root), "--resamples", "200"]) == 0
    assert json.loads((root / "report" / "report.json").read_text())["warnings"] == []


@pytest.mark.slow
def test_end_of_run_summary_warns_when_hicra_saw_no_planning_token(tmp_path, capsys):
    from runutil import write_tiny_config

    from retrain.config import load_config
    from retrain.run import train

    cfg = load_config(
        write_tiny_config(tmp_path / "c.toml", tmp_path / "run", steps=2, transform="gtpo_hicra", save_every=0),
        ["--planning.strategic_grams", '["start over"]'],
    )
    assert train(cfg) == 0
    out = capsys.readouterr().out
    assert "warning: maxrl+gtpo_hicra (this run): planning_token_fraction = 0.0000" in out
    assert "gtpo_hicra trains like gtpo" in out
