"""The analysis verbs on a real campaign: the trainer's own output on the tiny random model.

The other analysis tests use synthetic run dirs written from docs/metrics.md; this one catches drift between
what the trainer actually writes (labels with '~overrides', manifest states, fields) and what the
analysis reads. 2 conditions x 3 seeds x 3 steps of batch 2 x group 4, with auto-squeeze.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fixtures_analysis import run_cli
from runutil import tiny_campaign_base

from retrain.analysis import load_campaign
from retrain.analysis.load import load_campaign_runs

TESTS_DIR = Path(__file__).parent
HICRA, SEPA = "maxrl+gtpo_hicra", "maxrl+gtpo_sepa~sepa.steps=2"
CAMPAIGN_TOML = (
    tiny_campaign_base(100)
    + """
[campaign]
seeds = [11, 12, 13]
max_steps = 3
executor = "sequential"
log_root = "{root}"

[[campaign.conditions]]
advantage_mode = "maxrl"
transform_mode = "gtpo_hicra"

[[campaign.conditions]]
advantage_mode = "maxrl"
transform_mode = "gtpo_sepa"
"sepa.steps" = 2

[squeeze]
min_variance_retention = 0.9
"""
)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> Path:
    from retrain.campaign.runner import run_campaign
    from retrain.config import load_config

    tmp = tmp_path_factory.mktemp("real")
    path = tmp / "campaign.toml"
    path.write_text(CAMPAIGN_TOML.format(root=(tmp / "logs").as_posix()))
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), old]))  # the reward plugin
    try:
        assert run_campaign(load_config(path), str(path)) == 0
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    (camp,) = (tmp / "logs").glob("campaign_*")
    return camp


@pytest.mark.slow
def test_analysis_reads_the_trainers_campaign(campaign, capsys):
    runs = load_campaign_runs(campaign)
    assert sorted((r.condition, r.seed) for r in runs) == sorted((c, s) for c in (HICRA, SEPA) for s in (11, 12, 13))
    assert all(r.num_steps == 3 and r.completions() == 3 * 8 for r in runs)
    # counts from metrics (correct_rate × batch × group) equal the emergence/steps.jsonl counts
    for r in runs:
        assert r.episode_counts_by_step() == {
            row["step"]: (row["correct_count"], row["total_count"]) for row in r.steps
        }
    df = load_campaign(campaign)
    assert len(df) == 18 and {"correct_rate", "mean_reward", "exec_entropy_var", "sepa_lambda"} <= set(df.columns)

    out = campaign.parent / "out"
    assert (
        run_cli(
            [
                "compare",
                str(campaign),
                "--baseline",
                HICRA,
                "--candidate",
                SEPA,
                "--resamples",
                "500",
                "--output",
                str(out / "sig.json"),
            ]
        )
        == 0
    )
    sig = json.loads((out / "sig.json").read_text())
    assert sig["seed_level"]["correct_rate"]["paired"] and sig["window"] == {
        "start": 2,
        "end": 3,
        "default": True,
        "description": "last 20% of steps",
    }
    # 24 completions per run < 32: the default litmus gates say INCONCLUSIVE; the smoke profile decides
    assert run_cli(["litmus", str(campaign), "--baseline", HICRA, "--candidate", SEPA]) == 2
    assert run_cli(["litmus", str(campaign), "--baseline", HICRA, "--candidate", SEPA, "--profile", "smoke"]) in (0, 1)
    assert run_cli(["report", str(campaign), "--resamples", "500"]) == 0
    report = json.loads((campaign / "report" / "report.json").read_text())
    assert f"{HICRA} vs {SEPA}" in report["comparisons"]  # SEPA vs HICRA found despite the '~' label
    assert report["squeeze"]["source_rank"] == 4
    assert {r["state"] for r in report["runs"]} == {"completed"}
    html = (campaign / "report" / "report.html").read_text()
    assert "LoRA-Squeeze" in html and html.count("data:image/png;base64,") == 3
