"""One RL step, top to bottom.

    sample the groups → score them → episode advantages → token advantages → datums
    → one optimizer step → the step's metrics

Everything a step needs arrives in a `StepContext` (built once per run by `retrain.run`);
everything it produces leaves in a `StepResult`. Controllers (SEPA, back-pressure), the data
cursor, checkpoints and sinks live in `run.py`: this file has no state of its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from retrain.backends.base import Backend, Completion, Datum, SamplingParams
from retrain.data.base import Example
from retrain.rl.advantages import is_uninformative
from retrain.rl.planning import find_planning_phrases, planning_mask
from retrain.rl.ties import reward_tie_stats
from retrain.rl.transforms import sepa_pool
from retrain.rl.uncertainty import token_uncertainty

CORRECT_THRESHOLD = 0.5  # a completion is correct iff its reward > 0.5 (SPEC §4)


@dataclass
class StepContext:
    """What a step needs; built once per run from the config (see `run.build_context`)."""

    backend: Backend
    score: object  # Scorer: .score(completion_text, example) -> float
    advantage_fn: object  # AdvantageFn: rewards_G -> adv_G
    transform_fn: object  # TokenTransform: (A, h_T, mask_T, *, beta, alpha, sepa_lambda) -> adv_T
    uncertainty_kind: str
    strategic_grams: list[str]
    gtpo_beta: float
    hicra_alpha: float
    group_size: int
    sampling: SamplingParams  # max_tokens / temperature / top_p; the seed is set per step
    lr: float
    generations_per_prompt: int = 1


@dataclass
class StepResult:
    metrics: dict  # the step's own metrics (run.py adds step, seed, controllers, timing)
    generations: list[dict] = field(default_factory=list)  # rows for emergence/generations.jsonl
    exec_uncertainties: list[float] = field(default_factory=list)  # fed to the SEPA controller
    correct_count: int = 0
    total_count: int = 0
    num_tokens: int = 0  # prompt + completion tokens processed, for back-pressure throughput


def rl_step(ctx: StepContext, examples_P: list[Example], *, sepa_lambda: float, seed: int) -> StepResult:
    t0 = time.perf_counter()

    # Sample: group_size completions per prompt; the seed comes from (run seed, step) so a
    # resumed run draws exactly the samples an uninterrupted one would.
    params = SamplingParams(
        max_tokens=ctx.sampling.max_tokens,
        temperature=ctx.sampling.temperature,
        top_p=ctx.sampling.top_p,
        seed=seed,
        want_entropy=ctx.uncertainty_kind == "shannon_entropy",
    )
    groups_P_G = ctx.backend.sample([ex.prompt for ex in examples_P], ctx.group_size, params)
    sample_time = time.perf_counter() - t0

    # Score every completion; a reward that fails scores 0 and is counted by the scorer.
    rewards_P_G = [
        [ctx.score.score(c.text, ex) for c in group_G]
        for ex, group_G in zip(examples_P, groups_P_G, strict=True)
    ]
    score_time = time.perf_counter() - t0 - sample_time
    t_adv = time.perf_counter()  # credit assignment: uncertainty, planning masks, advantages, datums

    # Token uncertainty and planning masks for every completion. Needed even for
    # transforms that ignore them: the entropy metrics compare conditions (research guide).
    h_P_G_T = [
        [token_uncertainty(ctx.uncertainty_kind, c.logprobs, c.entropies) for c in group_G]
        for group_G in groups_P_G
    ]
    mask_P_G_T = [
        [planning_mask(c.text, c.offsets, ctx.strategic_grams) for c in group_G]
        for group_G in groups_P_G
    ]

    # Episode advantages per group, then token advantages per completion → datums.
    # A group whose rewards all tie carries no learning signal: no datums, but it still counts
    # in every reward metric below (SPEC §3.1).
    datums_D: list[Datum] = []
    for group_G, rewards_G, h_G_T, mask_G_T in zip(groups_P_G, rewards_P_G, h_P_G_T, mask_P_G_T, strict=True):
        if is_uninformative(rewards_G):
            continue
        adv_G = ctx.advantage_fn(rewards_G)
        for c, adv, h_T, m_T in zip(group_G, adv_G, h_G_T, mask_G_T, strict=True):
            if not c.token_ids:
                continue
            adv_T = ctx.transform_fn(
                adv, h_T, m_T, beta=ctx.gtpo_beta, alpha=ctx.hicra_alpha, sepa_lambda=sepa_lambda,
            )
            datums_D.append(Datum(c.prompt_ids, c.token_ids, c.logprobs, list(adv_T)))
    adv_time = time.perf_counter() - t_adv

    # One optimizer step over every datum (the backend micro-batches without changing the result).
    t_train = time.perf_counter()
    train = ctx.backend.train_step(datums_D, lr=ctx.lr) if datums_D else None
    train_time = time.perf_counter() - t_train

    # The step's own metrics; run.py adds the controllers' and the timing.
    completions = [c for group_G in groups_P_G for c in group_G]
    flat_rewards = [r for rewards_G in rewards_P_G for r in rewards_G]
    correct = sum(r > CORRECT_THRESHOLD for r in flat_rewards)
    exec_h, plan_h, post_exec_h = _split_uncertainty(h_P_G_T, mask_P_G_T, sepa_lambda)
    n_tokens = sum(len(c.token_ids) for c in completions)
    n_plan = sum(sum(m) for ms in mask_P_G_T for m in ms)
    metrics = {
        "correct_rate": correct / len(flat_rewards) if flat_rewards else 0.0,
        "mean_reward": float(np.mean(flat_rewards)) if flat_rewards else 0.0,
        "exec_entropy_mean": _mean(exec_h),
        "exec_entropy_var": _var(exec_h),
        "plan_entropy_mean": _mean(plan_h),
        "plan_entropy_var": _var(plan_h),
        "post_exec_entropy_var": _var(post_exec_h),
        "planning_token_fraction": n_plan / n_tokens if n_tokens else 0.0,
        "max_token_hit_rate": sum(c.hit_max_tokens for c in completions) / max(len(completions), 1),
        "mean_completion_tokens": n_tokens / max(len(completions), 1),
        "num_datums": len(datums_D),
        "loss": train.loss if train else None,
        "clip_fraction": train.clip_fraction if train else None,
        "kl_ref": train.kl_ref if train else None,
        "sampler_train_kl": train.sampler_train_kl if train else None,
        "grad_norm": train.grad_norm if train else None,
        **reward_tie_stats(rewards_P_G),
        "sample_time_s": sample_time,
        "score_time_s": score_time,
        "advantage_time_s": adv_time,
        "train_time_s": train_time,
    }
    generations = [
        _generation_row(ex, c, r, ctx.strategic_grams)
        for ex, group_G, rewards_G in zip(examples_P, groups_P_G, rewards_P_G, strict=True)
        for c, r in list(zip(group_G, rewards_G, strict=True))[: ctx.generations_per_prompt]
    ]
    prompt_tokens = sum(len(c.prompt_ids) for c in completions)
    return StepResult(
        metrics=metrics,
        generations=generations,
        exec_uncertainties=exec_h,
        correct_count=correct,
        total_count=len(flat_rewards),
        num_tokens=prompt_tokens + n_tokens,
    )


def _split_uncertainty(h_P_G_T, mask_P_G_T, sepa_lambda: float):
    """Execution and planning uncertainties over the whole step, before SEPA pooling, plus the
    execution uncertainties after pooling with this step's λ (what the SEPA transform trains on)."""
    exec_h, plan_h, post_exec_h = [], [], []
    for h_G_T, mask_G_T in zip(h_P_G_T, mask_P_G_T, strict=True):
        for h_T, m_T in zip(h_G_T, mask_G_T, strict=True):
            pooled_T = sepa_pool(h_T, m_T, sepa_lambda) if sepa_lambda > 0 else h_T
            for h, p, m in zip(h_T, pooled_T, m_T, strict=True):
                (plan_h if m else exec_h).append(float(h))
                if not m:
                    post_exec_h.append(float(p))
    return exec_h, plan_h, post_exec_h


def _generation_row(ex: Example, c: Completion, reward: float, grams: list[str]) -> dict:
    return {
        "prompt": ex.prompt[:200],
        "completion": c.text[:500],
        "reward": reward,
        "correct": reward > CORRECT_THRESHOLD,
        "num_tokens": len(c.token_ids),
        "hit_max_tokens": c.hit_max_tokens,
        "planning_phrases": find_planning_phrases(c.text, grams),
    }


def _mean(xs: list[float]) -> float | None:
    # None, not NaN, when a step has no tokens of a kind: JSON has no NaN and readers skip None.
    return float(np.mean(xs)) if xs else None


def _var(xs: list[float]) -> float | None:
    return float(np.var(xs)) if xs else None
