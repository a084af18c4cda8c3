"""`retrain compare` end to end on synthetic campaigns: verdicts, numbers, outputs, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from fixtures_analysis import run_cli, small_campaign, two_arm_campaign, write_run  # noqa: F401
from scipy.stats import fisher_exact

from retrain.analysis.load import resolve_arm
from retrain.analysis.significance import compare_arms, window_counts
from retrain.analysis.stats import DEGRADATION, IMPROVEMENT, INSUFFICIENT
from retrain.errors import RetrainError
from retrain.scripts import sepa_significance

BASE, CAND = "maxrl+gtpo_hicra", "maxrl+gtpo_sepa"


@pytest.fixture(scope="module")
def effect_campaign(tmp_path_factory):
    return two_arm_campaign(tmp_path_factory.mktemp("eff") / "campaign_effect", lift=0.3)


@pytest.fixture(scope="module")
def null_campaign(tmp_path_factory):
    return two_arm_campaign(tmp_path_factory.mktemp("null") / "campaign_null", lift=0.0)


def arms(campaign, base=BASE, cand=CAND):
    return resolve_arm([base], campaign, "baseline"), resolve_arm([cand], campaign, "candidate")


def test_planted_effect_is_a_significant_improvement(effect_campaign):
    res = compare_arms(*arms(effect_campaign), resamples=20000, seed=0)
    cr = res["seed_level"]["correct_rate"]
    assert res["recommendation"] == IMPROVEMENT
    assert cr["paired"] and cr["test"] == "paired_sign_flip" and cr["method"] == "exact"
    # all 8 seed differences are positive: only the all-(+) and all-(−) sign vectors reach |mean d|
    assert all(
        d > 0 for d in np.subtract(list(cr["runs"]["candidate"].values()), list(cr["runs"]["baseline"].values()))
    )
    assert cr["p_value"] == pytest.approx(2 / 256)
    assert cr["ci_low"] > 0 and cr["delta"] > 0.15 and cr["hedges_g"] > 2
    assert res["window"] == {"start": 16, "end": 20, "default": True, "description": "last 20% of steps"}
    assert res["seed_level"]["mean_reward"]["recommendation"] == IMPROVEMENT


def test_swapped_arms_are_a_significant_degradation(effect_campaign):
    fwd = compare_arms(*arms(effect_campaign), resamples=2000)
    rev = compare_arms(*arms(effect_campaign, CAND, BASE), resamples=2000)
    assert rev["recommendation"] == DEGRADATION
    assert rev["seed_level"]["correct_rate"]["p_value"] == fwd["seed_level"]["correct_rate"]["p_value"]
    assert rev["seed_level"]["correct_rate"]["delta"] == pytest.approx(-fwd["seed_level"]["correct_rate"]["delta"])


def test_no_effect_is_insufficient_evidence(null_campaign):
    res = compare_arms(*arms(null_campaign), resamples=20000)
    assert res["recommendation"] == INSUFFICIENT
    assert res["seed_level"]["correct_rate"]["p_value"] > 0.05


def test_run_means_are_window_means(effect_campaign):
    base, cand = arms(effect_campaign)
    res = compare_arms(base, cand, window=(5, 10), resamples=500)
    assert res["window"]["start"] == 5 and res["window"]["end"] == 10 and not res["window"]["default"]
    run = base[0]
    rows = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    expected = np.mean([r["correct_rate"] for r in rows if 5 <= r["step"] < 10])
    assert res["seed_level"]["correct_rate"]["runs"]["baseline"][run.name] == pytest.approx(expected)


def test_episode_level_is_fisher_on_pooled_window_counts(effect_campaign):
    base, cand = arms(effect_campaign)
    res = compare_arms(base, cand, resamples=500)
    ep = res["episode_level"]["correct_rate"]
    cb = sum(window_counts(r, 16, 20)[0] for r in base)
    cc = sum(window_counts(r, 16, 20)[0] for r in cand)
    assert (ep["baseline_correct"], ep["candidate_correct"]) == (cb, cc)
    assert ep["baseline_total"] == ep["candidate_total"] == 8 * 4 * 128
    n = 8 * 4 * 128
    assert ep["p_value"] == fisher_exact([[cc, n - cc], [cb, n - cb]])[1]
    assert ep["effective_baseline_total"] == pytest.approx(n / ep["design_effect"])


def test_pooling_warning_when_seeds_vary(tmp_path):
    camp = two_arm_campaign(tmp_path / "c", lift=0.02, seed_sd=0.06, seeds=(1, 2, 3, 4, 5, 6))
    res = compare_arms(*arms(camp), resamples=2000)
    ep = res["episode_level"]["correct_rate"]
    assert ep["design_effect"] > 3
    assert any("Pooling overstates the evidence" in w for w in res["warnings"])


def test_unpaired_arms_use_the_permutation_test(tmp_path):
    a = [write_run(tmp_path / f"a_s{s}", condition=BASE, seed=s, num_steps=10, rng_seed=s) for s in range(1, 6)]
    b = [
        write_run(tmp_path / f"b_s{s}", condition=CAND, seed=s, num_steps=10, lift=0.2, rng_seed=s)
        for s in range(11, 16)
    ]
    res = compare_arms(resolve_arm([str(p) for p in a]), resolve_arm([str(p) for p in b]), resamples=20000)
    cr = res["seed_level"]["correct_rate"]
    assert not cr["paired"] and cr["test"] == "permutation" and cr["method"] == "exact"
    assert cr["relabelings"] == 252  # C(10, 5)
    assert cr["p_value"] == cr["permutation_p_value"]
    assert any("not paired" in n for n in res["notes"])


def test_reproducible_with_seed(tmp_path, effect_campaign):
    # 8 vs 8 unpaired (one arm's seeds relabelled) with 1000 < C(16,8) resamples: the Monte Carlo path
    base, cand = arms(effect_campaign)
    for i, r in enumerate(cand):
        r.seed = 1000 + i
    one = compare_arms(base, cand, resamples=1000, seed=7)
    two = compare_arms(base, cand, resamples=1000, seed=7)
    other = compare_arms(base, cand, resamples=1000, seed=8)
    m1, m2, m3 = (x["seed_level"]["correct_rate"] for x in (one, two, other))
    assert m1["method"] == "monte_carlo"
    assert (m1["p_value"], m1["ci_low"], m1["ci_high"]) == (m2["p_value"], m2["ci_low"], m2["ci_high"])
    assert (m1["ci_low"], m1["ci_high"]) != (m3["ci_low"], m3["ci_high"])


def test_too_few_seeds_note(small_campaign):
    res = compare_arms(*arms(small_campaign), resamples=1000)
    assert any("cannot reach significance" in n and "0.25" in n for n in res["notes"])  # 2 / 2**3


def test_user_errors(effect_campaign):
    base, cand = arms(effect_campaign)
    with pytest.raises(RetrainError, match="same run is in both arms"):
        compare_arms(base, base + cand)
    with pytest.raises(RetrainError, match="--alpha"):
        compare_arms(base, cand, alpha=0)
    with pytest.raises(RetrainError, match="--resamples"):
        compare_arms(base, cand, resamples=10)


def test_cli_writes_json_and_markdown(effect_campaign, tmp_path, capsys):
    out_json, out_md = tmp_path / "out" / "sig.json", tmp_path / "out" / "sig.md"
    argv = [
        "compare",
        str(effect_campaign),
        "--baseline",
        BASE,
        "--candidate",
        CAND,
        "--resamples",
        "2000",
        "--output",
        str(out_json),
        "--markdown",
        str(out_md),
    ]
    assert run_cli(argv) == 0
    out = capsys.readouterr().out
    assert f"Recommendation: {IMPROVEMENT}" in out and "correct_rate" in out
    data = json.loads(out_json.read_text())
    assert data["generator"] == "retrain compare" and data["recommendation"] == IMPROVEMENT
    md = out_md.read_text()
    assert md.startswith("<!-- generated by retrain compare -->") and "Seed-level tests" in md
    assert "paired sign-flip, exact (256 relabelings)" in md
    # re-running over our own outputs is fine; a file retrain did not write is never overwritten
    assert run_cli(argv) == 0
    foreign = tmp_path / "notes.md"
    foreign.write_text("my notes\n")
    assert run_cli(argv[:-1] + [str(foreign)]) == 2
    assert foreign.read_text() == "my notes\n"


def test_cli_user_errors_exit_2(effect_campaign, tmp_path, capsys):
    assert run_cli(["compare", str(effect_campaign), "--baseline", "nope", "--candidate", CAND]) == 2
    assert "no run of this condition" in capsys.readouterr().out
    assert run_cli(["compare", "--baseline", str(tmp_path / "x_s*"), "--candidate", CAND]) == 2
    assert run_cli(["compare", str(tmp_path / "missing"), "--baseline", BASE, "--candidate", CAND]) == 2
    assert run_cli(["compare", str(effect_campaign), "--baseline", BASE, "--candidate", CAND, "--window", "9"]) == 2


def test_script_main_and_module(effect_campaign, tmp_path, capsys):
    runs = effect_campaign / "runs"
    argv = [
        "--baseline",
        str(runs / f"{BASE}_s*"),
        "--candidate",
        str(runs / f"{CAND}_s*"),
        "--output",
        str(tmp_path / "s.json"),
        "--markdown",
        str(tmp_path / "s.md"),
        "--resamples",
        "2000",
        "--alpha",
        "0.05",
    ]
    assert sepa_significance.main(argv) == 0
    assert json.loads((tmp_path / "s.json").read_text())["recommendation"] == IMPROVEMENT
    assert sepa_significance.main(["--baseline", "nope", "--candidate", "nope2"]) == 2
    assert "error: --baseline 'nope'" in capsys.readouterr().err
    proc = subprocess.run(
        [sys.executable, "-m", "retrain.scripts.sepa_significance", *argv[:4], "--resamples", "500"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"Recommendation: {IMPROVEMENT}" in proc.stdout


def test_run_that_stopped_early_is_left_out_with_a_note(tmp_path):
    base = [write_run(tmp_path / f"{BASE}_s{s}", condition=BASE, seed=s, num_steps=20, rng_seed=s) for s in range(1, 7)]
    cand = [
        write_run(
            tmp_path / f"{CAND}_s{s}", condition=CAND, seed=s, num_steps=20 if s > 1 else 9, lift=0.3, rng_seed=50 + s
        )
        for s in range(1, 7)
    ]
    res = compare_arms(resolve_arm([str(p) for p in base]), resolve_arm([str(p) for p in cand]), resamples=2000)
    cr = res["seed_level"]["correct_rate"]
    assert res["window"]["start"] == 16  # the window follows the longest run, not the crashed one
    assert cr["n_candidate"] == 5 and cr["dropped_runs"] == [f"{CAND}_s1"]
    assert not cr["paired"]  # seed 1 is missing from the candidate arm, so the arms no longer pair up
    assert any(f"{CAND}_s1" in n for n in res["notes"])


def test_primary_metric_flag(effect_campaign, capsys):
    assert (
        run_cli(
            [
                "compare",
                str(effect_campaign),
                "--baseline",
                BASE,
                "--candidate",
                CAND,
                "--metric",
                "mean_reward",
                "--resamples",
                "500",
            ]
        )
        == 0
    )
    assert "(seed-level test on mean_reward)" in capsys.readouterr().out
    assert run_cli(["compare", str(effect_campaign), "--baseline", BASE, "--candidate", CAND, "--metric", "nope"]) == 2
    assert "cannot compare on nope" in capsys.readouterr().out
