"""`retrain litmus`: gates, checks, profiles, exit codes 0 / 1 / 2 / 3, JSON + markdown."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures_analysis import run_cli, two_arm_campaign, write_run

from retrain.analysis import litmus
from retrain.analysis.load import resolve_arm
from retrain.errors import RetrainError
from retrain.scripts import sepa_litmus

BASE, CAND = "maxrl+gtpo_hicra", "maxrl+gtpo_sepa"


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """SEPA +0.1 correct rate over HICRA late in training, but its exec_entropy_var (0.9, shrunk by
    λ ≈ 0.5 to ≈ 0.55 in the window) stays above HICRA's 0.3: the mechanism check fails."""
    return two_arm_campaign(
        tmp_path_factory.mktemp("lit") / "c", lift=0.1, seeds=(1, 2, 3), num_steps=10, exec_vars={CAND: 0.9, BASE: 0.3}
    )


def arms(campaign, base=BASE, cand=CAND):
    return resolve_arm([base], campaign), resolve_arm([cand], campaign)


def test_checks_are_differences_of_seed_means(campaign):
    base, cand = arms(campaign)
    res = litmus.evaluate_litmus(base, cand, litmus.get_profile("default"))
    checks = {c["metric"]: c for c in res["checks"]}

    def arm_value(runs, metric):  # mean over runs of each run's mean over steps [8, 10)
        return np.mean([np.mean([row[metric] for row in r.metrics if 8 <= row["step"] < 10]) for r in runs])

    for metric in ("mean_reward", "correct_rate"):
        assert checks[metric]["delta"] == pytest.approx(arm_value(cand, metric) - arm_value(base, metric))
    ev = checks["exec_entropy_var"]
    assert ev["delta"] == pytest.approx(arm_value(base, "exec_entropy_var") - arm_value(cand, "exec_entropy_var"))
    assert res["inputs"]["window"] == {"start": 8, "end": 10, "default": True}


def test_confirmed_failed_inconclusive(campaign):
    base, cand = arms(campaign)
    # correct_rate / reward lifts pass; SEPA's entropy variance stays above HICRA's → FAILED
    res = litmus.evaluate_litmus(base, cand, litmus.get_profile("default"))
    assert res["evidence_ok"] and res["status"] == litmus.FAILED and res["exit_code"] == 1
    assert [c["passed"] for c in res["checks"]] == [True, True, False]
    # without the mechanism check every check passes → CONFIRMED
    prof = litmus.with_overrides(litmus.get_profile("default"), {"check_exec_entropy_var": False})
    res = litmus.evaluate_litmus(base, cand, prof)
    assert res["status"] == litmus.CONFIRMED and res["exit_code"] == 0
    # more seeds than we have → INCONCLUSIVE, with the checks still reported
    prof = litmus.with_overrides(litmus.get_profile("default"), {"min_seeds_per_arm": 4})
    res = litmus.evaluate_litmus(base, cand, prof)
    assert res["status"] == litmus.INCONCLUSIVE and res["exit_code"] == 2
    assert res["evidence_failures"] == ["baseline has 3; needs >= 4", "candidate has 3; needs >= 4"]
    assert len(res["checks"]) == 3


def test_gates_on_steps_and_completions(tmp_path):
    base = [
        write_run(tmp_path / f"b_s{s}", condition=BASE, seed=s, num_steps=7, batch_size=1, group_size=4, rng_seed=s)
        for s in (1, 2, 3)
    ]
    cand = [
        write_run(tmp_path / f"c_s{s}", condition=CAND, seed=s, num_steps=9, batch_size=1, group_size=4, rng_seed=s)
        for s in (1, 2, 3)
    ]
    res = litmus.evaluate_litmus(
        resolve_arm([str(p) for p in base]), resolve_arm([str(p) for p in cand]), litmus.get_profile("default")
    )
    gates = {g["gate"]: g for g in res["gates"]}
    assert gates["min_seeds_per_arm"]["passed"]
    assert not gates["min_steps_per_run"]["passed"]
    assert gates["min_steps_per_run"]["failures"][0] == "baseline:b_s1 has 7; needs >= 8"
    # 7 steps × 4 completions = 28 < 32; 9 × 4 = 36 passes
    assert sorted(gates["min_completions_per_run"]["values"].values()) == [28, 28, 28, 36, 36, 36]
    assert res["status"] == litmus.INCONCLUSIVE


def test_missing_checked_metric_is_inconclusive(tmp_path):
    from fixtures_analysis import write_jsonl

    runs = {}
    for arm in ("b", "c"):
        for s in (1, 2, 3):
            d = tmp_path / f"{arm}_s{s}"
            write_jsonl(
                d / "metrics.jsonl",
                [
                    {
                        "step": i,
                        "condition": arm,
                        "seed": s,
                        "correct_rate": 0.5,
                        "mean_reward": 0.5,
                        "batch_size": 8,
                        "group_size": 16,
                    }
                    for i in range(10)
                ],
            )
            runs.setdefault(arm, []).append(str(d))
    res = litmus.evaluate_litmus(resolve_arm(runs["b"]), resolve_arm(runs["c"]), litmus.get_profile("default"))
    assert res["status"] == litmus.INCONCLUSIVE
    assert any("exec_entropy_var was not logged" in f for f in res["evidence_failures"])


def test_profiles():
    assert litmus.get_profile(" Official_V1 ").name == "official_v1"
    d = litmus.get_profile("default")
    assert (d.min_seeds_per_arm, d.min_steps_per_run, d.min_completions_per_run) == (3, 8, 32)
    assert (d.min_mean_reward_lift, d.min_correct_rate_lift, d.min_exec_entropy_var_reduction) == (0.01, 0.005, 0.0)
    with pytest.raises(RetrainError, match="unknown litmus profile.*default, official_v1, smoke"):
        litmus.get_profile("strict")
    changed = litmus.with_overrides(d, {"min_correct_rate_lift": 0.02, "min_steps_per_run": None})
    assert changed.min_correct_rate_lift == 0.02 and changed.min_steps_per_run == 8


def test_cli_exit_codes_and_outputs(campaign, tmp_path, capsys):
    common = [str(campaign), "--baseline", BASE, "--candidate", CAND]
    out_json, out_md = tmp_path / "lit.json", tmp_path / "lit.md"
    assert run_cli(["litmus", *common, "--output", str(out_json), "--markdown", str(out_md)]) == 1  # FAILED
    data = json.loads(out_json.read_text())
    assert data["status"] == "FAILED" and data["profile"]["name"] == "default"
    assert data["inputs"]["campaign"] == str(campaign) and data["inputs"]["baseline_args"] == [BASE]
    assert {g["gate"] for g in data["gates"]} == {"min_seeds_per_arm", "min_steps_per_run", "min_completions_per_run"}
    md = out_md.read_text()
    assert "# Litmus: FAILED" in md and "| exec_entropy_var (reduction (baseline - candidate))" in md
    assert run_cli(["litmus", *common, "--no-entropy-check"]) == 0  # CONFIRMED
    assert run_cli(["litmus", *common, "--min-seeds-per-arm", "5"]) == 2  # INCONCLUSIVE
    data = None
    assert (
        run_cli(["litmus", *common, "--min-correct-rate-lift", "0.5", "--no-entropy-check", "--output", str(out_json)])
        == 1
    )
    data = json.loads(out_json.read_text())
    assert data["overrides"] == {"min_correct_rate_lift": 0.5, "check_exec_entropy_var": False}
    assert data["profile"]["min_correct_rate_lift"] == 0.5
    capsys.readouterr()
    # errors of every kind exit 3, never 1 (FAILED) or 2 (INCONCLUSIVE)
    assert run_cli(["litmus", str(campaign), "--baseline", "nope", "--candidate", CAND]) == 3
    assert run_cli(["litmus", *common, "--profile", "nope"]) == 3
    assert "unknown litmus profile" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        run_cli(["litmus", "--candidate", CAND])  # usage error: --baseline missing
    assert exc.value.code == 3


def test_script_main(campaign, tmp_path, capsys):
    runs = campaign / "runs"
    argv = [
        "--baseline",
        str(runs / f"{BASE}_s*"),
        "--candidate",
        str(runs / f"{CAND}_s*"),
        "--output",
        str(tmp_path / "l.json"),
        "--markdown",
        str(tmp_path / "l.md"),
        "--no-entropy-check",
    ]
    assert sepa_litmus.main(argv) == 0
    assert json.loads((tmp_path / "l.json").read_text())["status"] == "CONFIRMED"
    assert sepa_litmus.main(["--baseline", str(tmp_path / "none_s*"), "--candidate", "x"]) == 3
    with pytest.raises(SystemExit) as exc:
        sepa_litmus.main(["--bogus"])
    assert exc.value.code == 3
