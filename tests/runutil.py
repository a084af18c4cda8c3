"""Helpers for end-to-end run tests on the tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

from retrain.run import TIMING_KEYS

TINY_TOML = """
[model]
name = "tiny-random"
lora_rank = 8
target_modules = ["q_proj", "k_proj", "v_proj", "o_proj", "lm_head"]

[algorithm]
advantage_mode = "{adv}"
transform_mode = "{transform}"

[training]
seed = {seed}
max_steps = {steps}
batch_size = 2
group_size = 4
max_tokens = 8
temperature = 1.0
lr = {lr}
save_every = {save_every}

[sepa]
steps = {steps}
delay_steps = 0
correct_rate_gate = 0.0

[data]
source = "arithmetic"

[reward]
type = "custom"
custom = "retrain_test_plugins:digit_fraction"

[eval]
every = 2
num_examples = 4

[logging]
log_dir = "{log_dir}"
"""


# The shared base of the tiny campaign TOMLs (tests/test_campaign_e2e.py, test_analysis_real_campaign.py).
TINY_CAMPAIGN_BASE = """
[model]
name = "tiny-random"
lora_rank = 4
target_modules = ["q_proj", "v_proj", "lm_head"]

[training]
max_steps = 50
batch_size = 2
group_size = 4
max_tokens = 8
temperature = 1.0
lr = 1e-2
save_every = {save_every}

[sepa]
delay_steps = 0
correct_rate_gate = 0.0

[data]
source = "arithmetic"

[reward]
type = "custom"
custom = "retrain_test_plugins:digit_fraction"
"""


def tiny_campaign_base(save_every: int) -> str:
    """Model, training, SEPA, data and reward tables for tiny campaigns (no braces left in it)."""
    return TINY_CAMPAIGN_BASE.format(save_every=save_every)


def write_tiny_config(
    path: Path,
    log_dir: Path,
    *,
    steps=3,
    seed=7,
    lr=1e-2,
    save_every=1,
    adv="maxrl",
    transform="gtpo_sepa",
    extra: str = "",
) -> Path:
    path.write_text(
        TINY_TOML.format(
            steps=steps,
            seed=seed,
            lr=lr,
            save_every=save_every,
            adv=adv,
            transform=transform,
            log_dir=log_dir.as_posix(),
        )
        + extra
    )
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]
