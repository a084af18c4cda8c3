"""One RL step, top to bottom.

    λ for this step → sample the groups → score them → episode advantages → token advantages
    → datums → one optimizer step → the step's metrics → the SEPA controller learns from the step

Everything a step needs arrives in a `StepContext` (built once per run by `retrain.run`);
everything it produces leaves in a `StepResult`. The only state it touches is the SEPA
controller's (through `resolve_lambda` and `observe`); the data cursor, back-pressure (it picks
how many prompts the run draws before the step and times the whole step around it),
checkpoints and sinks live in `run.py`. Notation (`_P`, `_G`, `_T`, `_D`): docs/design.md.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from retrain.backends.base import (
    Backend,
    Completion,
    Datum,
    SamplingParams,
    TrainResult,
)
from retrain.data.base import Example
from retrain.registry import Variant
from retrain.rl.advantages import AdvantageFn, is_uninformative
from retrain.rl.planning import find_planning_phrases, planning_mask
from retrain.rl.sepa import SEPAController
from retrain.rl.ties import reward_tie_stats
from retrain.rl.transforms import TokenTransform, knob_values, sepa_pool
from retrain.rl.uncertainty import UNCERTAINTIES, token_uncertainty

CORRECT_THRESHOLD = 0.5  # a completion is correct iff its reward > 0.5 (docs/metrics.md)


class Scorer(Protocol):
    """Scores completions against their examples, never raising (`retrain.rewards.Scorer`, which runs
    the reward in worker processes: the step and the evals hand it a whole batch at once). Only what
    they call is here; `retrain.rewards.Scorer` also scores one completion (`score`).

    Example::

        class ExactScorer:
            def score_batch(self, completions: Sequence[str], examples: Sequence[Example]) -> list[float]:
                return [float(c.strip() == e.answer) for c, e in zip(completions, examples, strict=True)]
            def pop_counts(self) -> dict[str, int]:
                return {"reward_failures": 0, "reward_timeouts": 0}
    """

    def score_batch(self, completions: Sequence[str], examples: Sequence[Example]) -> list[float]:
        """Each (completion, example) pair's reward, in order (one round trip to the reward workers)."""
        ...

    def pop_counts(self) -> dict[str, int]:
        """Reward failures and timeouts since the previous call (per-step metrics)."""
        ...


@dataclass
class StepContext:
    """What a step needs; built once per run from the config (see `run.build_context`)."""

    backend: Backend
    scorer: Scorer
    advantage_fn: AdvantageFn  # rewards_G -> adv_G
    transform: Variant[TokenTransform]  # its `consumes` decides which knobs (and λ) it is handed
    sepa: SEPAController  # λ before the step, `observe` after it
    uncertainty_kind: str
    strategic_grams: list[str]
    gtpo_beta: float
    hicra_alpha: float
    group_size: int
    sampling: SamplingParams  # max_tokens / temperature / top_p; the seed is set per step
    lr: float
    generations_per_prompt: int = 1  # 0 = every completion of the group
    generation_max_chars: int = 500  # 0 = the full text


@dataclass
class StepResult:
    metrics: dict[str, Any]  # the step's metrics (run.py adds step, seed, counters, back-pressure, timing)
    generations: list[dict[str, Any]] = field(default_factory=list)  # rows for emergence/generations.jsonl
    correct_count: int = 0
    total_count: int = 0
    num_tokens: int = 0  # prompt + completion tokens processed, for back-pressure throughput


def rl_step(ctx: StepContext, examples_P: list[Example], *, step: int, seed: int) -> StepResult:
    """One RL step on `examples_P` (one prompt each); `seed` seeds this step's sampling."""
    t0 = time.perf_counter()
    # λ only means something to a transform that consumes it; the others log 0, so a non-SEPA
    # condition never shows a λ it did not use.
    uses_lambda = "sepa_lambda" in ctx.transform.consumes
    lam = ctx.sepa.resolve_lambda(step) if uses_lambda else 0.0

    # Sample: group_size completions per prompt; the seed comes from (run seed, step) so a
    # resumed run draws exactly the samples an uninterrupted one would.
    params = SamplingParams(
        max_tokens=ctx.sampling.max_tokens,
        temperature=ctx.sampling.temperature,
        top_p=ctx.sampling.top_p,
        seed=seed,
        want_entropy="entropies" in UNCERTAINTIES.entry(ctx.uncertainty_kind).consumes,
    )
    groups_P_G = ctx.backend.sample([ex.prompt for ex in examples_P], ctx.group_size, params)
    sample_time = time.perf_counter() - t0

    # Score every completion, the whole step in one batch: rewards run in worker processes that are
    # killed at the time limit (model output is untrusted input); a reward that fails scores 0 and is
    # counted by the scorer.
    flat_rewards = ctx.scorer.score_batch(
        [completion.text for group_G in groups_P_G for completion in group_G],
        [ex for ex, group_G in zip(examples_P, groups_P_G, strict=True) for _ in group_G],
    )
    rewards_P_G: list[list[float]] = []
    start = 0
    for group_G in groups_P_G:
        rewards_P_G.append(list(flat_rewards[start : start + len(group_G)]))
        start += len(group_G)
    score_time = time.perf_counter() - t0 - sample_time
    t_adv = time.perf_counter()  # credit assignment: uncertainty, planning masks, advantages, datums

    # Token uncertainty and planning masks for every completion. Needed even for transforms that
    # ignore them: the entropy metrics compare conditions (docs/metrics.md).
    h_P_G_T = [
        [token_uncertainty(ctx.uncertainty_kind, completion.logprobs, completion.entropies) for completion in group_G]
        for group_G in groups_P_G
    ]
    mask_P_G_T = [
        [planning_mask(completion.text, completion.offsets, ctx.strategic_grams) for completion in group_G]
        for group_G in groups_P_G
    ]
    datums_D = _datums(ctx, groups_P_G, rewards_P_G, h_P_G_T, mask_P_G_T, lam)
    adv_time = time.perf_counter() - t_adv

    # One optimizer step over every datum (the backend micro-batches without changing the result).
    t_train = time.perf_counter()
    train = ctx.backend.train_step(datums_D, lr=ctx.lr) if datums_D else None
    train_time = time.perf_counter() - t_train

    completions = [completion for group_G in groups_P_G for completion in group_G]
    n_tokens = sum(len(completion.token_ids) for completion in completions)  # completion tokens of the step
    correct = sum(r > CORRECT_THRESHOLD for r in flat_rewards)
    correct_rate = correct / len(flat_rewards) if flat_rewards else 0.0
    exec_h, plan_h, post_exec_h = _split_uncertainty(h_P_G_T, mask_P_G_T, lam)

    # The controller learns after the step: a gate that opens now acts from the next step.
    ctx.sepa.observe(correct_rate, exec_h, step=step)

    metrics = {
        "correct_rate": correct_rate,
        "mean_reward": float(np.mean(flat_rewards)) if flat_rewards else 0.0,
        **_token_metrics(completions, n_tokens, mask_P_G_T, exec_h, plan_h, post_exec_h),
        "num_datums": len(datums_D),
        **_train_metrics(train),
        **reward_tie_stats(rewards_P_G),
        "sample_time_s": sample_time,
        "score_time_s": score_time,
        "advantage_time_s": adv_time,
        "train_time_s": train_time,
        "correct_count": correct,
        "total_count": len(flat_rewards),
        "sepa_lambda": lam,
        "sepa_gate_open": ctx.sepa.gate_open,
        "sepa_gate_open_step": ctx.sepa.gate_open_step,
        "loss_is_placeholder": not ctx.backend.reports_sync_loss and train is not None and train.loss is not None,
        "backend_reports_sync_loss": ctx.backend.reports_sync_loss,
        **ctx.scorer.pop_counts(),
    }
    per_prompt = ctx.generations_per_prompt or ctx.group_size
    generations = [
        _generation_row(ex, completion, r, ctx.strategic_grams, ctx.generation_max_chars)
        for ex, group_G, rewards_G in zip(examples_P, groups_P_G, rewards_P_G, strict=True)
        for completion, r in list(zip(group_G, rewards_G, strict=True))[:per_prompt]
    ]
    prompt_tokens = sum(len(completion.prompt_ids) for completion in completions)
    return StepResult(
        metrics=metrics,
        generations=generations,
        correct_count=correct,
        total_count=len(flat_rewards),
        num_tokens=prompt_tokens + n_tokens,
    )


def _datums(
    ctx: StepContext,
    groups_P_G: Sequence[Sequence[Completion]],
    rewards_P_G: Sequence[Sequence[float]],
    h_P_G_T: Sequence[Sequence[list[float]]],
    mask_P_G_T: Sequence[Sequence[list[int]]],
    lam: float,
) -> list[Datum]:
    """Episode advantages per group, then token advantages per completion, as datums.

    A group whose rewards all tie carries no learning signal: no datums, but it still counts in
    every reward metric (docs/algorithms.md). The transform is handed only the knobs it consumes.
    """
    knobs = knob_values(ctx.transform.consumes, beta=ctx.gtpo_beta, alpha=ctx.hicra_alpha, sepa_lambda=lam)
    transform_fn = ctx.transform.load()
    datums_D: list[Datum] = []
    for group_G, rewards_G, h_G_T, mask_G_T in zip(groups_P_G, rewards_P_G, h_P_G_T, mask_P_G_T, strict=True):
        if is_uninformative(rewards_G):
            continue
        adv_G = ctx.advantage_fn(list(rewards_G))
        for completion, adv, h_T, m_T in zip(group_G, adv_G, h_G_T, mask_G_T, strict=True):
            if not completion.token_ids:
                continue
            adv_T = transform_fn(adv, h_T, m_T, **knobs)
            datums_D.append(Datum(completion.prompt_ids, completion.token_ids, completion.logprobs, list(adv_T)))
    return datums_D


def _token_metrics(
    completions: Sequence[Completion],
    n_tokens: int,
    mask_P_G_T: Sequence[Sequence[list[int]]],
    exec_h: list[float],
    plan_h: list[float],
    post_exec_h: list[float],
) -> dict[str, Any]:
    n_plan = sum(sum(m) for ms in mask_P_G_T for m in ms)
    n_completions = max(len(completions), 1)
    return {
        "exec_entropy_mean": _mean(exec_h),
        "exec_entropy_var": _var(exec_h),
        "plan_entropy_mean": _mean(plan_h),
        "plan_entropy_var": _var(plan_h),
        "post_exec_entropy_var": _var(post_exec_h),
        "planning_token_fraction": n_plan / n_tokens if n_tokens else 0.0,
        "max_token_hit_rate": sum(completion.hit_max_tokens for completion in completions) / n_completions,
        "mean_completion_tokens": n_tokens / n_completions,
    }


def _train_metrics(train: TrainResult | None) -> dict[str, float | None]:
    """The optimizer step's numbers; all None on a step that trained nothing (no datums)."""
    return {
        "loss": train.loss if train else None,
        "clip_fraction": train.clip_fraction if train else None,
        "kl_ref": train.kl_ref if train else None,
        "sampler_train_kl": train.sampler_train_kl if train else None,
        "grad_norm": train.grad_norm if train else None,
    }


def _split_uncertainty(
    h_P_G_T: Sequence[Sequence[list[float]]], mask_P_G_T: Sequence[Sequence[list[int]]], sepa_lambda: float
) -> tuple[list[float], list[float], list[float]]:
    """Execution and planning uncertainties over the whole step, before SEPA pooling, plus the
    execution uncertainties after pooling with this step's λ (what the SEPA transform trains on)."""
    exec_h: list[float] = []
    plan_h: list[float] = []
    post_exec_h: list[float] = []
    for h_G_T, mask_G_T in zip(h_P_G_T, mask_P_G_T, strict=True):
        for h_T, m_T in zip(h_G_T, mask_G_T, strict=True):
            pooled_T = sepa_pool(h_T, m_T, sepa_lambda) if sepa_lambda > 0 else h_T
            for h, p, m in zip(h_T, pooled_T, m_T, strict=True):
                (plan_h if m else exec_h).append(float(h))
                if not m:
                    post_exec_h.append(float(p))
    return exec_h, plan_h, post_exec_h


def _generation_row(
    ex: Example, completion: Completion, reward: float, grams: list[str], max_chars: int
) -> dict[str, Any]:
    # completion_chars is the full length, so a reader (`retrain grams mine`) can tell a cut text.
    return {
        "prompt": ex.prompt[:200],
        "completion": completion.text[:max_chars] if max_chars else completion.text,
        "completion_chars": len(completion.text),
        "reward": reward,
        "correct": reward > CORRECT_THRESHOLD,
        "num_tokens": len(completion.token_ids),
        "hit_max_tokens": completion.hit_max_tokens,
        "planning_phrases": find_planning_phrases(completion.text, grams),
    }


def _mean(xs: list[float]) -> float | None:
    # None, not NaN, when a step has no tokens of a kind: JSON has no NaN and readers skip None.
    return float(np.mean(xs)) if xs else None


def _var(xs: list[float]) -> float | None:
    return float(np.var(xs)) if xs else None
