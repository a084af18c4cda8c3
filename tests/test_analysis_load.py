"""Loading run and campaign directories."""

from __future__ import annotations

import json

import pytest
from fixtures_analysis import small_campaign, write_jsonl, write_run  # noqa: F401 — pytest fixture

from retrain.analysis import load_campaign, load_emergence, load_metrics, load_run
from retrain.analysis.load import MalformedLineWarning, dedupe_by_step, load_manifest, read_jsonl, resolve_arm
from retrain.errors import RetrainError


def test_load_metrics_and_emergence(tmp_path):
    run = write_run(tmp_path / "maxrl+gtpo_sepa_s7", condition="maxrl+gtpo_sepa", seed=7, num_steps=5, rng_seed=1)
    rows = load_metrics(run)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[0]["condition"] == "maxrl+gtpo_sepa" and rows[0]["seed"] == 7
    em = load_emergence(run)
    assert len(em["steps"]) == 5 and len(em["generations"]) == 5
    # correct_rate is correct_count / total_count, the same numbers in both files
    assert [s["correct_count"] / s["total_count"] for s in em["steps"]] == [r["correct_rate"] for r in rows]


def test_malformed_lines_warn_once_with_file_and_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "correct_rate": 0.1}\n\n{"step": 1, "corr\n[1, 2]\n{"step": 2, "correct_rate": 0.3}\n')
    with pytest.warns(MalformedLineWarning) as caught:
        rows = read_jsonl(path)
    assert [r["step"] for r in rows] == [0, 2]
    assert [str(w.message) for w in caught] == [
        f"{path}: skipped 2 lines (1 malformed JSON: line 3; 1 not a JSON object: line 4)"
    ]


def test_many_malformed_lines_are_one_counted_warning(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("garbage\n" * 12 + '{"step": 0}\n')
    with pytest.warns(MalformedLineWarning) as caught:
        assert read_jsonl(path) == [{"step": 0}]
    assert len(caught) == 1
    assert str(caught[0].message) == f"{path}: skipped 12 lines (12 malformed JSON: lines 1, 2, 3, 4, 5, ...)"


def test_missing_file_is_an_error_naming_the_path(tmp_path):
    with pytest.raises(RetrainError, match=str(tmp_path / "nope" / "metrics.jsonl")):
        load_metrics(tmp_path / "nope")
    (tmp_path / "r" / "emergence").mkdir(parents=True)
    write_jsonl(tmp_path / "r" / "emergence" / "steps.jsonl", [{"step": 0}])
    with pytest.raises(RetrainError, match="generations.jsonl"):
        load_emergence(tmp_path / "r")


def test_dedupe_keeps_last_row_per_step():
    rows = [
        {"step": 0, "v": 1},
        {"step": 1, "v": 2},
        {"step": 2, "v": 3},
        {"step": 1, "v": 20},
        {"step": 2, "v": 30},
        {"step": "x"},
        {"v": 9},
    ]
    assert dedupe_by_step(rows) == [{"step": 0, "v": 1}, {"step": 1, "v": 20}, {"step": 2, "v": 30}]


def test_load_run_counts_from_emergence_or_metrics(tmp_path):
    run = write_run(tmp_path / "grpo+none_s3", condition="grpo+none", seed=3, num_steps=4, rng_seed=2)
    r = load_run(run)
    assert (r.condition, r.seed, r.num_steps, r.last_step) == ("grpo+none", 3, 4, 3)
    from_emergence = r.episode_counts_by_step()
    assert r.completions() == 4 * 128
    # without emergence/, counts come from correct_rate × batch_size × group_size: the same numbers
    bare = write_run(tmp_path / "bare_s3", condition="grpo+none", seed=3, num_steps=4, rng_seed=2, emergence=False)
    assert load_run(bare).episode_counts_by_step() == from_emergence


def test_condition_and_seed_fall_back_to_dir_name(tmp_path):
    d = tmp_path / "maxrl+gtpo_s101"
    write_jsonl(d / "metrics.jsonl", [{"step": 0, "correct_rate": 0.5}])
    r = load_run(d)
    assert (r.condition, r.seed) == ("maxrl+gtpo", 101)


def test_load_campaign_is_tidy(small_campaign):
    df = load_campaign(small_campaign)
    assert list(df.columns[:4]) == ["condition", "seed", "step", "run"]
    assert len(df) == 5 * 3 * 20
    assert sorted(df.condition.unique()) == sorted(
        json.loads((small_campaign / "manifest.json").read_text())["conditions"]
    )
    assert df.groupby("run").step.nunique().eq(20).all()
    assert {"correct_rate", "mean_reward", "exec_entropy_var", "sepa_gate_open"} <= set(df.columns)
    assert load_manifest(small_campaign)["squeeze"]["recommended_rank"] == 8


def test_runs_dir_is_the_truth_not_the_manifest(tmp_path, small_campaign):
    import shutil

    camp = tmp_path / "c"
    shutil.copytree(small_campaign, camp)
    shutil.rmtree(camp / "runs" / "grpo+none_s42")  # listed in the manifest, gone from runs/
    write_run(camp / "runs" / "extra+cond_s9", condition="extra+cond", seed=9, num_steps=3, rng_seed=3)
    df = load_campaign(camp)
    assert "grpo+none_s42" not in set(df.run) and "extra+cond_s9" in set(df.run)


def test_resolve_arm_by_label_glob_and_dir(small_campaign):
    by_label = resolve_arm(["maxrl+gtpo_sepa"], small_campaign, "candidate")
    by_glob = resolve_arm([str(small_campaign / "runs" / "maxrl+gtpo_sepa_s*")], None, "candidate")
    by_dirs = resolve_arm([str(small_campaign / "runs" / f"maxrl+gtpo_sepa_s{s}") for s in (42, 101, 202)])
    names = sorted(r.name for r in by_label)
    assert names == sorted(r.name for r in by_glob) == sorted(r.name for r in by_dirs)
    assert names == ["maxrl+gtpo_sepa_s101", "maxrl+gtpo_sepa_s202", "maxrl+gtpo_sepa_s42"]
    # a glob relative to the campaign's runs/ also works when a campaign is given
    assert len(resolve_arm(["maxrl+gtpo_sepa_s*"], small_campaign)) == 3


def test_resolve_arm_errors(small_campaign, tmp_path):
    with pytest.raises(RetrainError, match="no run of this condition.*Conditions there: grpo\\+none"):
        resolve_arm(["maxrl+gtpo_sepa_typo"], small_campaign, "candidate")
    with pytest.raises(RetrainError, match="no run directory matches this glob"):
        resolve_arm([str(tmp_path / "runs" / "x_s*")], None, "baseline")
    with pytest.raises(RetrainError, match="no such run directory"):
        resolve_arm(["maxrl+gtpo_sepa"], None, "baseline")
    with pytest.raises(RetrainError, match="not a run dir.*pass the campaign dir first"):
        resolve_arm([str(small_campaign)], None, "baseline")


def test_counts_come_from_steps_jsonl_when_metrics_lack_batch_fields(tmp_path):
    d = tmp_path / "r_s1"
    write_jsonl(d / "metrics.jsonl", [{"step": i, "condition": "r", "seed": 1, "correct_rate": 0.5} for i in range(3)])
    write_jsonl(
        d / "emergence" / "steps.jsonl", [{"step": i, "correct_count": 3 + i, "total_count": 8} for i in range(3)]
    )
    r = load_run(d)
    assert r.episode_counts_by_step() == {0: (3, 8), 1: (4, 8), 2: (5, 8)}
    assert r.completions() == 24


def test_window_values_skip_nulls_and_bools(tmp_path):
    d = tmp_path / "r_s1"
    write_jsonl(
        d / "metrics.jsonl",
        [
            {"step": 0, "v": 1.0},
            {"step": 1, "v": None},
            {"step": 2, "v": True},
            {"step": 3, "v": 3},
            {"step": 4, "v": 5.0},
        ],
    )
    r = load_run(d)
    with pytest.warns(MalformedLineWarning, match="v: 1 true/false where a number belongs"):
        assert r.window_values("v", 0, 4).tolist() == [1.0, 3.0]  # read when first asked for
    assert r.window_steps("v", 0, 4) == [0, 3]
    assert r.steps_in_window(1, 3) == 2
