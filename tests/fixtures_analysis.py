"""Synthetic run and campaign directories in the trainer's layout (docs/metrics.md), for the analysis tests.

Written from the file formats alone (the trainer is developed in parallel): metrics.jsonl with every
documented field, emergence/steps.jsonl with correct_count/total_count consistent with correct_rate,
emergence/generations.jsonl, and campaign dirs with manifest.json + runs/<condition>_s<seed>/.
Import the pytest fixtures into a test module with `from fixtures_analysis import small_campaign`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

GUIDE_CONDITIONS = ("grpo+none", "maxrl+none", "maxrl+gtpo", "maxrl+gtpo_hicra", "maxrl+gtpo_sepa")
# The guide's expected ordering, as a planted late-training lift over grpo+none.
GUIDE_LIFTS = {
    "grpo+none": 0.0,
    "maxrl+none": 0.02,
    "maxrl+gtpo": 0.04,
    "maxrl+gtpo_hicra": 0.06,
    "maxrl+gtpo_sepa": 0.08,
}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def write_run(
    run_dir: Path,
    *,
    condition: str,
    seed: int,
    num_steps: int = 20,
    base_rate: float = 0.2,
    lift: float = 0.0,
    slope: float = 0.1,
    seed_effect: float = 0.0,
    batch_size: int = 8,
    group_size: int = 16,
    exec_var: float = 0.5,
    gate_open_step: int | None = None,
    rng_seed: int | None = None,
    emergence: bool = True,
    eval_every: int = 0,
    eval_examples: int = 40,
    eval_k: int = 1,
) -> Path:
    """One run dir. The true correct rate at step s is
    clip(base_rate + slope·s/num_steps + lift·s/num_steps + seed_effect, 0.01, 0.99)
    (the lift grows in, as training would); counts are Binomial(batch·group, rate).

    With `eval_every` > 0 the run also has held-out evals as the trainer writes them: eval.jsonl rows
    after step -1 (the base model) and after every `eval_every`-th step and the last one, and the
    same value in that step's metrics row (`eval_correct_rate`, null on the other steps). The eval
    rate after step s is Binomial(eval_examples, p(s + 1)) / eval_examples, drawn from its own
    generator so the training rows are the same with or without evals. With `eval_k` > 1 each eval
    also samples eval_k completions per prompt, each correct with that probability, and logs pass@k
    (prompts with any correct one) and mean@k (correct / all) as the trainer does."""
    seed_value = rng_seed if rng_seed is not None else abs(hash((condition, seed))) % 2**32
    rng = np.random.default_rng(seed_value)
    eval_rng = np.random.default_rng([seed_value, 7919])
    total = batch_size * group_size
    evals = []

    def eval_rate(after_step: int) -> float:
        p = min(max(base_rate + (slope + lift) * (after_step + 1) / max(num_steps, 1) + seed_effect, 0.01), 0.99)
        rate = int(eval_rng.binomial(eval_examples, p)) / eval_examples
        row = {
            "after_step": after_step,
            "num_updates": after_step + 1,
            "eval_correct_rate": rate,
            "num_examples": eval_examples,
            "eval_time_s": 0.5,
        }
        if eval_k > 1:
            correct_P = eval_rng.binomial(eval_k, p, size=eval_examples)
            row.update(
                {
                    "eval_pass_at_k": float((correct_P > 0).mean()),
                    "eval_mean_at_k": float(correct_P.sum() / (eval_k * eval_examples)),
                    "eval_k": eval_k,
                    "eval_temperature": 1.0,
                }
            )
        evals.append(row)
        return rate

    if eval_every > 0:
        eval_rate(-1)
    sepa = condition.endswith("gtpo_sepa")
    metrics, steps, gens = [], [], []
    running_c = running_t = 0
    for s in range(num_steps):
        frac = s / max(num_steps, 1)
        p = min(max(base_rate + (slope + lift) * frac + seed_effect, 0.01), 0.99)
        correct = int(rng.binomial(total, p))
        running_c, running_t = running_c + correct, running_t + total
        rate = correct / total
        gate = sepa and gate_open_step is not None and s >= gate_open_step
        lam = min(max((s - (gate_open_step or 0)) / max(num_steps, 1), 0.0), 1.0) if gate else 0.0
        ev = exec_var * (1 - 0.8 * lam) * (1 + 0.05 * rng.standard_normal())
        row = {
            "step": s,
            "condition": condition,
            "seed": seed,
            "correct_rate": rate,
            "running_correct_rate": running_c / running_t,
            "mean_reward": rate + 0.02 * (1 - rate),
            "exec_entropy_mean": 1.2,
            "exec_entropy_var": ev,
            "plan_entropy_mean": 2.0 + 0.1 * frac,
            "plan_entropy_var": 0.7,
            "post_exec_entropy_var": ev * (1 - lam),
            "sepa_lambda": lam,
            "sepa_gate_open": bool(gate),
            "max_token_hit_rate": 0.01,
            "loss": -0.003,
            "loss_is_placeholder": False,
            "backend_reports_sync_loss": True,
            "num_datums": 96,
            "reward_tie_group_rate": 0.5,
            "reward_uniform_group_rate": 0.2,
            "reward_tie_pair_rate": 0.4,
            "reward_unique_fraction_mean": 0.3,
            "bp_regime": "warmup",
            "bp_action": "hold",
            "bp_p_star": None,
            "batch_size": batch_size,
            "group_size": group_size,
            "step_time_s": 3.2,
            "sample_time_s": 2.0,
            "train_time_s": 1.2,
            "tokens_per_second": 900.0,
            "sampler_train_kl": 1e-4,
            "planning_token_fraction": 0.02,
            "correct_count": correct,
            "total_count": total,
            "eval_correct_rate": (
                eval_rate(s) if eval_every > 0 and ((s + 1) % eval_every == 0 or s == num_steps - 1) else None
            ),
        }
        if eval_k > 1:
            done = row["eval_correct_rate"] is not None
            row["eval_pass_at_k"] = evals[-1]["eval_pass_at_k"] if done else None
            row["eval_mean_at_k"] = evals[-1]["eval_mean_at_k"] if done else None
        metrics.append(row)
        steps.append(
            {
                "step": s,
                "condition": condition,
                "mean_reward": row["mean_reward"],
                "correct_count": correct,
                "total_count": total,
                "exec_entropy_mean": 1.2,
                "exec_entropy_var": ev,
                "plan_entropy_mean": row["plan_entropy_mean"],
                "plan_entropy_var": 0.7,
                "sepa_lambda": lam,
                "planning_token_fraction": 0.02,
            }
        )
        gens.append(
            {
                "step": s,
                "prompt": "What is 2 + 3?",
                "completion": "Let me think. \\boxed{5}",
                "reward": 1.0,
                "correct": True,
                "num_tokens": 9,
                "hit_max_tokens": False,
                "planning_phrases": ["let me think"],
            }
        )
    write_jsonl(run_dir / "metrics.jsonl", metrics)
    if evals:
        write_jsonl(run_dir / "eval.jsonl", evals)
    if emergence:
        write_jsonl(run_dir / "emergence" / "steps.jsonl", steps)
        write_jsonl(run_dir / "emergence" / "generations.jsonl", gens)
    return run_dir


def write_campaign(
    root: Path,
    *,
    conditions: tuple[str, ...] = GUIDE_CONDITIONS,
    seeds=(42, 101, 202),
    num_steps: int = 20,
    lifts: dict[str, float] | None = None,
    seed_sd: float = 0.01,
    squeeze: bool = True,
    gate_open_step: int = 3,
    base_rate: float = 0.2,
    exec_vars: dict[str, float] | None = None,
    eval_every: int = 0,
    eval_k: int = 1,
) -> Path:
    """A campaign dir: manifest.json + runs/<condition>_s<seed>/. Seed effects are shared across
    conditions (same seed = same data order and init), drawn once per seed. exec_entropy_var starts at
    `exec_vars[condition]` (default 0.3 for HICRA, 0.5 otherwise) and SEPA shrinks it as λ grows.
    `eval_every` > 0 adds held-out evals (eval.jsonl and eval_correct_rate, see `write_run`)."""
    lifts = GUIDE_LIFTS if lifts is None else lifts
    exec_vars = exec_vars or {}
    rng = np.random.default_rng(12345)
    seed_effects = {s: float(rng.normal(0, seed_sd)) for s in seeds}
    runs = []
    for ci, cond in enumerate(conditions):
        for seed in seeds:
            name = f"{cond}_s{seed}"
            write_run(
                root / "runs" / name,
                condition=cond,
                seed=seed,
                num_steps=num_steps,
                base_rate=base_rate,
                lift=lifts.get(cond, 0.0),
                seed_effect=seed_effects[seed],
                exec_var=exec_vars.get(cond, 0.3 if "hicra" in cond else 0.5),
                gate_open_step=gate_open_step,
                rng_seed=1000 * ci + seed,
                eval_every=eval_every,
                eval_k=eval_k,
            )
            runs.append(
                {"name": name, "condition": cond, "seed": seed, "state": "completed", "log_dir": f"runs/{name}"}
            )
    manifest = {
        "conditions": list(conditions),
        "seeds": list(seeds),
        "max_steps": num_steps,
        "runs": runs,
        "squeeze": (
            {
                "recommended_rank": 8,
                "source_rank": 32,
                "threshold": 0.95,
                "table": [
                    {"rank": r, "mean": m, "min": m - 0.02, "max": min(1.0, m + 0.01)}
                    for r, m in ((4, 0.81), (8, 0.955), (16, 0.99), (32, 1.0))
                ],
            }
            if squeeze
            else None
        ),
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


@pytest.fixture(scope="module")
def small_campaign(tmp_path_factory) -> Path:
    """5 guide conditions × 3 seeds × 20 steps, SEPA gate opening at step 3, squeeze table present."""
    return write_campaign(tmp_path_factory.mktemp("camp") / "campaign_20260101_000000")


@pytest.fixture(scope="module")
def eval_campaign(tmp_path_factory) -> Path:
    """grpo+none, maxrl+gtpo_hicra and maxrl+gtpo_sepa × 3 seeds × 20 steps with held-out evals after
    step -1 (the base model), 4, 9, 14 and 19 (`eval_every=5`)."""
    return write_campaign(
        tmp_path_factory.mktemp("camp") / "campaign_20260303_000000",
        eval_every=5,
        conditions=("grpo+none", "maxrl+gtpo_hicra", "maxrl+gtpo_sepa"),
        squeeze=False,
    )


@pytest.fixture(scope="module")
def long_campaign(tmp_path_factory) -> Path:
    """5 guide conditions × 3 seeds × 500 steps (the guide's `compare_entropy` reads steps 400-500)."""
    return write_campaign(
        tmp_path_factory.mktemp("camp") / "campaign_20260202_000000", num_steps=500, gate_open_step=50
    )


def run_cli(argv: list[str]) -> int:
    """Parse `argv` with a bare parser holding only the analysis verbs and run it, mapping
    RetrainError to exit 2 as the main CLI does (litmus handles its own errors and returns 3)."""
    import argparse

    from retrain.analysis.cli import register
    from retrain.errors import RetrainError

    parser = argparse.ArgumentParser(prog="retrain")
    register(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except RetrainError as err:
        print(f"retrain: error: {err}")
        return err.exit_code


def two_arm_campaign(
    root: Path,
    *,
    lift: float,
    seeds=(1, 2, 3, 4, 5, 6, 7, 8),
    num_steps: int = 20,
    seed_sd: float = 0.01,
    base_rate: float = 0.2,
    exec_vars: dict[str, float] | None = None,
    eval_every: int = 0,
) -> Path:
    """A campaign with conditions maxrl+gtpo_hicra (baseline) and maxrl+gtpo_sepa (lift planted)."""
    return write_campaign(
        root,
        conditions=("maxrl+gtpo_hicra", "maxrl+gtpo_sepa"),
        seeds=seeds,
        num_steps=num_steps,
        lifts={"maxrl+gtpo_sepa": lift},
        seed_sd=seed_sd,
        base_rate=base_rate,
        squeeze=False,
        exec_vars=exec_vars,
        eval_every=eval_every,
    )
