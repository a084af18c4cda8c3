"""Sampled held-out evaluation ([eval] k > 1): pass@k and mean@k, logged, reproducible, training untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
from runutil import read_jsonl, write_tiny_config

from retrain.config import load_config
from retrain.run import TIMING_KEYS, Evaluator, build_components, mean_at_k, pass_at_k, train

SAMPLED = {"eval.k": 3, "eval.temperature": 1.5}
EVAL_KEYS = {"eval_correct_rate", "eval_pass_at_k", "eval_mean_at_k"}


def test_pass_at_k_and_mean_at_k_hand_values():
    assert [pass_at_k(4, c, 4) for c in range(5)] == [0.0, 1.0, 1.0, 1.0, 1.0]  # n = k: any correct one
    assert pass_at_k(4, 1, 2) == 0.5  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(5, 2, 3) == pytest.approx(0.9)  # 1 - C(3,3)/C(5,3) = 1 - 1/10
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(10, 0, 5) == 0.0
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 3)
    assert mean_at_k([0, 1, 4], 4) == pytest.approx(5 / 12)


def _cfg(tmp_path: Path, name: str, overrides: dict | None = None):
    cfg = load_config(write_tiny_config(tmp_path / f"{name}.toml", tmp_path / name, steps=3))
    return cfg.with_overrides(overrides) if overrides else cfg


def test_evaluator_counts_the_sampled_completions(tmp_path):
    """pass@k and mean@k are the counts of the real model's k samples scored by the real scorer."""
    from dataclasses import replace

    from retrain.logs import JsonlFile
    from retrain.rl.step import CORRECT_THRESHOLD

    cfg = _cfg(tmp_path, "ev", {**SAMPLED, "reward.custom": "retrain_test_plugins:has_digit"})
    c = build_components(cfg)
    ev = Evaluator(cfg, c.ctx.backend, c.ctx.scorer, c.data.eval, JsonlFile(tmp_path / "eval.jsonl"))
    out = ev.run(after_step=4, num_updates=5)
    row = read_jsonl(tmp_path / "eval.jsonl")[0]
    assert (row["after_step"], row["eval_k"], row["eval_temperature"]) == (4, 3, 1.5)
    # the same draws again, counted here by hand
    from retrain.run import EVAL_SEED_SALT, step_seed

    params = replace(ev.sampled, seed=step_seed(cfg.training.seed ^ EVAL_SEED_SALT, 5))
    with pytest.warns(UserWarning, match="sampling at T=1.5"):  # the Evaluator silences this one
        groups = c.ctx.backend.sample([ex.prompt for ex in ev.examples], 3, params)
    correct_P = [
        sum(c.ctx.scorer.score(g.text, ex) > CORRECT_THRESHOLD for g in group)
        for group, ex in zip(groups, ev.examples, strict=True)
    ]
    assert out["eval_pass_at_k"] == row["eval_pass_at_k"] == sum(n > 0 for n in correct_P) / len(correct_P)
    assert out["eval_mean_at_k"] == row["eval_mean_at_k"] == sum(correct_P) / (3 * len(correct_P))
    assert 0 < out["eval_mean_at_k"] <= out["eval_pass_at_k"] <= 1  # has_digit: random tokens often hold one


@pytest.mark.slow
def test_sampled_eval_is_logged_and_leaves_training_alone(tmp_path):
    assert train(_cfg(tmp_path, "greedy")) == 0
    assert train(_cfg(tmp_path, "sampled", SAMPLED)) == 0
    g_rows, s_rows = (
        read_jsonl(tmp_path / "greedy" / "metrics.jsonl"),
        read_jsonl(tmp_path / "sampled" / "metrics.jsonl"),
    )
    evals = read_jsonl(tmp_path / "sampled" / "eval.jsonl")
    assert [e["after_step"] for e in evals] == [-1, 1, 2]
    for e in evals:
        assert e["eval_k"] == 3 and e["eval_temperature"] == 1.5
        assert 0 <= e["eval_mean_at_k"] <= e["eval_pass_at_k"] <= 1
        assert (e["eval_pass_at_k"] * 4).is_integer() and (e["eval_mean_at_k"] * 12).is_integer()
    # the metrics rows carry them on eval steps (null otherwise); a k = 1 run has no such keys
    assert [(r["eval_pass_at_k"], r["eval_mean_at_k"]) for r in s_rows] == [
        (None, None),
        *((e["eval_pass_at_k"], e["eval_mean_at_k"]) for e in evals[1:]),
    ]
    assert "eval_pass_at_k" not in g_rows[0]

    # its own sampling stream: training metrics and the greedy eval are those of the k = 1 run
    def strip(rows):
        return [
            {k: v for k, v in r.items() if k not in TIMING_KEYS and k not in EVAL_KEYS - {"eval_correct_rate"}}
            for r in rows
        ]

    assert strip(s_rows) == strip(g_rows)
    # and the same seed gives the same sampled eval
    assert train(_cfg(tmp_path, "again", SAMPLED)) == 0
    again = read_jsonl(tmp_path / "again" / "eval.jsonl")
    assert [(e["eval_pass_at_k"], e["eval_mean_at_k"]) for e in again] == [
        (e["eval_pass_at_k"], e["eval_mean_at_k"]) for e in evals
    ]
