"""The campaign grid: labels, ordering, per-run configs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrain.campaign.grid import RunSpec, campaign_conditions, condition_label, expand_campaign
from retrain.config import Config, config_to_dict, flatten_dict, load_config
from retrain.errors import RetrainError


def _load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "campaign.toml"
    path.write_text(text)
    return load_config(path)


def test_condition_label_without_and_with_overrides():
    assert condition_label("grpo", "none", {}) == "grpo+none"
    assert condition_label("maxrl", "gtpo_sepa", {"sepa.steps": 100}) == "maxrl+gtpo_sepa~sepa.steps=100"
    # sorted by key, TOML-style values, path-unsafe characters replaced (labels name directories)
    label = condition_label(
        "maxrl", "gtpo", {"training.lr": 1e-5, "data.shuffle": False, "model.name": "Qwen/Qwen3 4B"}
    )
    assert label == "maxrl+gtpo~data.shuffle=false~model.name=Qwen-Qwen3-4B~training.lr=1e-05"
    assert (
        condition_label("grpo", "none", {"data.operations": ["+", "*"]}) == "grpo+none~data.operations=+,-"
    )  # '*' is not path-safe


def test_default_ablation_in_condition_major_order(tmp_path):
    cfg = _load(tmp_path, "[campaign]\nseeds = [7, 3]\n")
    runs = expand_campaign(cfg)
    assert [r.name for r in runs] == [
        "grpo+none_s7", "grpo+none_s3",
        "maxrl+none_s7", "maxrl+none_s3",
        "maxrl+gtpo_s7", "maxrl+gtpo_s3",
        "maxrl+gtpo_hicra_s7", "maxrl+gtpo_hicra_s3",
        "maxrl+gtpo_sepa_s7", "maxrl+gtpo_sepa_s3",
    ]  # fmt: skip
    first = runs[0]
    assert isinstance(first, RunSpec) and (first.label, first.seed) == ("grpo+none", 7)
    assert (first.config.algorithm.advantage_mode, first.config.algorithm.transform_mode) == ("grpo", "none")
    assert all(r.config.condition == r.label and r.config.run_name == r.name for r in runs)


def test_overrides_reach_nested_tables_and_nothing_else_changes(tmp_path):
    text = (
        "[model]\nlora_rank = 8\n[training]\nmax_steps = 30\nlr = 1e-4\n[backend.options]\nmicro_batch_size = 2\n"
        '[squeeze]\nmin_variance_retention = 0.9\n[logging]\nlog_dir = "mine"\nwandb_project = "p"\n'
        "[campaign]\nseeds = [1]\nmax_steps = 12\n"
        '[[campaign.conditions]]\nadvantage_mode = "maxrl"\ntransform_mode = "gtpo_sepa"\n'
        '"sepa.steps" = 100\n"training.lr" = 1e-5\n"backend.options.micro_batch_size" = 4\n'
        '[[campaign.conditions]]\nadvantage_mode = "grpo"\ntransform_mode = "none"\n'
    )
    cfg = _load(tmp_path, text)
    sepa, grpo = expand_campaign(cfg)
    assert sepa.label == "maxrl+gtpo_sepa~backend.options.micro_batch_size=4~sepa.steps=100~training.lr=1e-05"
    assert (sepa.config.sepa.steps, sepa.config.training.lr, sepa.config.backend.options) == (
        100,
        1e-5,
        {"micro_batch_size": 4},
    )
    assert (grpo.config.sepa.steps, grpo.config.training.lr, grpo.config.backend.options) == (
        500,
        1e-4,
        {"micro_batch_size": 2},
    )

    base = flatten_dict(config_to_dict(cfg.model_copy(update={"campaign": None, "squeeze": None})))
    grid_set = {"training.seed": 1, "training.max_steps": 12, "logging.log_dir": ""}
    for run, own in [
        (sepa, {"sepa.steps": 100, "training.lr": 1e-5, "backend.options.micro_batch_size": 4,
                "algorithm.advantage_mode": "maxrl", "algorithm.transform_mode": "gtpo_sepa"}),
        (grpo, {"algorithm.advantage_mode": "grpo", "algorithm.transform_mode": "none"}),
    ]:  # fmt: skip
        flat = flatten_dict(config_to_dict(run.config))
        expected = {**base, **grid_set, **own, "logging.condition": run.label}
        assert flat == expected
        assert run.config.campaign is None and run.config.squeeze is None  # the campaign squeezes, not each run


def test_campaign_max_steps_zero_keeps_training_max_steps(tmp_path):
    cfg = _load(tmp_path, "[training]\nmax_steps = 9\n[campaign]\nseeds = [1]\n")
    assert {r.config.training.max_steps for r in expand_campaign(cfg)} == {9}


def test_a_config_without_campaign_is_refused():
    with pytest.raises(RetrainError, match=r"no \[campaign\] table"):
        expand_campaign(Config())
    with pytest.raises(RetrainError):
        campaign_conditions(Config())


@settings(max_examples=25, deadline=None)
@given(
    seeds=st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=6, unique=True),
    n_conditions=st.integers(min_value=1, max_value=4),
)
def test_grid_size_uniqueness_and_order(seeds, n_conditions):
    conditions = [
        {"advantage_mode": "maxrl", "transform_mode": "gtpo", "gtpo.beta": 0.1 * i} for i in range(n_conditions)
    ]
    cfg = Config().with_overrides({"campaign": {"seeds": seeds, "conditions": conditions}})
    runs = expand_campaign(cfg)
    assert len(runs) == n_conditions * len(seeds)
    assert len({r.name for r in runs}) == len(runs)
    # condition-major: the seed cycles fastest
    assert [r.seed for r in runs] == seeds * n_conditions
    assert [r.config.gtpo.beta for r in runs] == [0.1 * i for i in range(n_conditions) for _ in seeds]
