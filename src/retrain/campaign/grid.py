"""The campaign grid: conditions x seeds -> one fully resolved run config each.

A pure function of the TOML (DESIGN: "campaigns are data"); executors only run what it returns.

    runs = expand_campaign(load_config("sweep.toml"))
    [r.name for r in runs]   # ["grpo+none_s42", "grpo+none_s101", ..., "maxrl+gtpo_sepa_s202"]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from retrain.config import ABLATION_CONDITIONS, Config, condition_label
from retrain.errors import RetrainError

__all__ = ["RunSpec", "campaign_conditions", "condition_label", "expand_campaign"]


@dataclass(frozen=True)
class RunSpec:
    """One run of a campaign: its condition label, seed, directory name and full config."""

    label: str
    seed: int
    name: str  # f"{label}_s{seed}"
    config: Config


def campaign_conditions(cfg: Config) -> list[tuple[str, str, dict[str, Any]]]:
    """(advantage_mode, transform_mode, overrides) per condition; the 5-condition ablation when
    `[campaign]` lists none."""
    if cfg.campaign is None:
        raise RetrainError("this config has no [campaign] table; add one to run a campaign")
    if not cfg.campaign.conditions:
        return [(adv, tr, {}) for adv, tr in ABLATION_CONDITIONS]
    return [(c.advantage_mode, c.transform_mode, dict(c.overrides)) for c in cfg.campaign.conditions]


def expand_campaign(cfg: Config) -> list[RunSpec]:
    """Every run of the campaign, condition-major (all seeds of condition 1, then condition 2, ...).

    Each run's config is the full config with the condition's modes and overrides applied,
    `training.seed` = the seed, `training.max_steps` = `[campaign].max_steps` when > 0,
    `logging.condition` = the label, `logging.log_dir` = "" (the campaign runner places runs)
    and no `[campaign]` or `[squeeze]` table (a run config describes one run; the campaign does
    the squeeze). Nothing else changes.
    """
    conditions = campaign_conditions(cfg)
    assert cfg.campaign is not None
    base = cfg.model_copy(update={"campaign": None, "squeeze": None})  # the campaign squeezes, not its runs
    runs: list[RunSpec] = []
    for adv, transform, overrides in conditions:
        label = condition_label(adv, transform, overrides)
        for seed in cfg.campaign.seeds:
            run_overrides: dict[str, Any] = {
                "algorithm.advantage_mode": adv,
                "algorithm.transform_mode": transform,
                **overrides,
                "training.seed": seed,
                "logging.condition": label,
                "logging.log_dir": "",
            }
            if cfg.campaign.max_steps > 0:
                run_overrides["training.max_steps"] = cfg.campaign.max_steps
            runs.append(RunSpec(label, seed, f"{label}_s{seed}", base.with_overrides(run_overrides)))
    return runs
