"""[logging] options for emergence/generations.jsonl: whole groups, the completion cap, the full length."""

from __future__ import annotations

import json

import pytest
from retrain_test_plugins import ScriptedBackend

from retrain.backends.base import SamplingParams
from retrain.config.tables import RewardConfig
from retrain.data.base import Example
from retrain.rewards import make_scorer
from retrain.rl.advantages import maxrl_advantages
from retrain.rl.sepa import SEPAController
from retrain.rl.step import StepContext, rl_step
from retrain.rl.transforms import TRANSFORMS


def step_generations(per_prompt: int, max_chars: int) -> list[dict]:
    ctx = StepContext(
        backend=ScriptedBackend(None),
        scorer=make_scorer(RewardConfig(type="match")),
        advantage_fn=maxrl_advantages,
        transform=TRANSFORMS.entry("gtpo"),
        sepa=SEPAController(steps=4, schedule="linear", delay_steps=0, correct_rate_gate=0.0),
        uncertainty_kind="surprisal",
        strategic_grams=["let me check", "let me think"],
        gtpo_beta=0.1,
        hicra_alpha=0.2,
        group_size=4,
        sampling=SamplingParams(max_tokens=8),
        lr=1e-4,
        generations_per_prompt=per_prompt,
        generation_max_chars=max_chars,
    )
    examples = [Example(prompt="What is 2 + 3?", answer="5"), Example(prompt="What is 1 + 5?", answer="6")]
    return rl_step(ctx, examples, step=0, seed=1).generations


def test_default_logs_the_first_completion_of_each_group_cut_at_500_chars():
    rows = step_generations(1, 500)
    assert [r["completion"] for r in rows] == [ScriptedBackend.TEXTS[0]] * 2
    assert rows[0]["completion_chars"] == len(ScriptedBackend.TEXTS[0]) and rows[0]["correct"] is True


def test_whole_groups_and_the_cap():
    rows = step_generations(0, 10)
    assert len(rows) == 2 * 4  # generations_per_prompt = 0: every completion of both groups
    assert [r["prompt"] for r in rows] == ["What is 2 + 3?"] * 4 + ["What is 1 + 5?"] * 4
    assert all(len(r["completion"]) <= 10 for r in rows)
    assert [r["completion_chars"] for r in rows[:4]] == [len(t) for t in ScriptedBackend.TEXTS]
    # planning phrases and outcomes come from the full text, not the logged prefix
    assert rows[2]["completion"] == "Wait, let " and rows[2]["planning_phrases"] == ["let me think"]
    assert [r["correct"] for r in rows[:4]] == [True, False, True, False]
    full = step_generations(0, 0)
    assert [r["completion"] for r in full[:4]] == list(ScriptedBackend.TEXTS)
    assert step_generations(3, 0)[:3] == full[:3] and len(step_generations(3, 0)) == 6


def test_logging_keys_are_checked_at_load(tmp_path):
    from retrain.config import load_config
    from retrain.errors import ConfigError

    with pytest.raises(ConfigError, match="generation_max_chars"):
        load_config(None, ["--logging.generation_max_chars", "-1"])
    cfg = load_config(None, ["--logging.generations_per_prompt", "0", "--logging.generation_max_chars", "0"])
    assert (cfg.logging.generations_per_prompt, cfg.logging.generation_max_chars) == (0, 0)
    json.dumps(cfg.logging.model_dump())
