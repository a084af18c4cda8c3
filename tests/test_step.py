"""`rl_step` on its own: a scripted backend (the Backend protocol, no model), hand-computed values.

One step, two prompts x two completions. Prompt "2+2" gets one right answer whose first token is
a planning phrase ("let me check") and one wrong one; prompt "3+4" gets two wrong ones, so its
group ties and adds no datums. Every advantage below is computed by hand from the formulas in
docs/algorithms.md.
"""

from __future__ import annotations

import pytest

from retrain.backends.base import (
    Backend,
    Completion,
    Datum,
    SamplingParams,
    TrainResult,
)
from retrain.data.base import Example
from retrain.rl.advantages import maxrl_advantages
from retrain.rl.sepa import SEPAController
from retrain.rl.step import StepContext, rl_step
from retrain.rl.transforms import TRANSFORMS, transform_variant

MAXRL_EPS = 1e-6


def _completion(pieces: list[str], logprobs: list[float]) -> Completion:
    """A completion whose tokens are `pieces` (their character spans make the offsets)."""
    offsets, start = [], 0
    for piece in pieces:
        offsets.append((start, start + len(piece)))
        start += len(piece)
    return Completion(
        prompt_ids=[1, 2],
        token_ids=list(range(10, 10 + len(pieces))),
        logprobs=logprobs,
        text="".join(pieces),
        offsets=offsets,
        hit_max_tokens=False,
    )


SCRIPT = {
    "2+2": [_completion(["let me check", " 4", " ok"], [-0.5, -2.0, -1.0]), _completion(["5"], [-1.0])],
    "3+4": [_completion(["6"], [-0.1]), _completion(["8"], [-0.3])],
}


class ScriptedBackend:
    """The Backend protocol with scripted completions; records what the step hands it."""

    reports_sync_loss = True

    def __init__(self) -> None:
        self.params: list[SamplingParams] = []
        self.datums: list[list[Datum]] = []

    def sample(self, prompts: list[str], n: int, params: SamplingParams) -> list[list[Completion]]:
        self.params.append(params)
        return [SCRIPT[p][:n] for p in prompts]

    def train_step(self, datums: list[Datum], lr: float) -> TrainResult:
        self.datums.append(datums)
        return TrainResult(
            loss=0.25,
            clip_fraction=0.0,
            kl_ref=0.0,
            sampler_train_kl=0.001,
            grad_norm=2.0,
            num_tokens=sum(len(d.completion_ids) for d in datums),
        )

    def save(self, path: str) -> None: ...

    def load(self, path: str) -> None: ...


class WordScorer:
    """1.0 when the reference is one of the completion's words. Only the `Scorer` protocol's two
    methods: a step must not need more."""

    def score_batch(self, completions, examples) -> list[float]:
        return [float(e.answer in c.split()) for c, e in zip(completions, examples, strict=True)]

    def pop_counts(self) -> dict[str, int]:
        return {"reward_failures": 0, "reward_timeouts": 7}


EXAMPLES = [Example("2+2", "4"), Example("3+4", "7")]


def _ctx(transform="gtpo_sepa", gate=0.0) -> StepContext:
    entry = TRANSFORMS.entry(transform) if isinstance(transform, str) else transform
    return StepContext(
        backend=ScriptedBackend(),
        scorer=WordScorer(),
        advantage_fn=maxrl_advantages,
        transform=entry,
        sepa=SEPAController(steps=4, schedule="linear", delay_steps=0, correct_rate_gate=gate),
        uncertainty_kind="surprisal",
        strategic_grams=["let me check"],
        gtpo_beta=0.1,
        hicra_alpha=0.2,
        group_size=2,
        sampling=SamplingParams(max_tokens=8, temperature=0.7),
        lr=1e-3,
    )


def _var(xs):
    mean = sum(xs) / len(xs)
    return sum((x - mean) ** 2 for x in xs) / len(xs)


def test_backend_fake_implements_the_protocol():
    assert isinstance(ScriptedBackend(), Backend)


def test_gtpo_sepa_step_hand_computed():
    ctx = _ctx()
    out = rl_step(ctx, EXAMPLES, step=2, seed=123)
    backend = ctx.backend
    assert isinstance(backend, ScriptedBackend)
    # sampling: the step's seed, no entropies for surprisal
    assert backend.params == [SamplingParams(max_tokens=8, temperature=0.7, top_p=1.0, seed=123, want_entropy=False)]
    # λ = linear(step 2 of 4, no delay) = 0.5, gate 0 is open from the start
    lam = 0.5
    # prompt "2+2": rewards [1, 0] → MaxRL A = ±0.5 / (0.5 + 1e-6); "3+4" ties at [0, 0] → no datums
    a = 0.5 / (0.5 + MAXRL_EPS)
    [datums] = backend.datums
    assert len(datums) == 2
    right, wrong = datums
    assert (right.prompt_ids, right.completion_ids, right.old_logprobs_T) == ([1, 2], [10, 11, 12], [-0.5, -2.0, -1.0])
    # surprisal h = [0.5, 2.0, 1.0]; "let me check" is planning, the rest execution (mean 1.5);
    # SEPA pools execution tokens: h' = [0.5, 0.5·1.5 + 0.5·2.0, 0.5·1.5 + 0.5·1.0] = [0.5, 1.75, 1.25]
    pooled = [0.5, 1.75, 1.25]
    mean_h = sum(pooled) / 3
    weights = [1 + 0.1 * (h / mean_h - 1) for h in pooled]  # GTPO, β = 0.1
    assert right.advantages_T == pytest.approx([a * w for w in weights], rel=1e-12)
    assert weights == pytest.approx([0.942857142857, 1.05, 1.007142857143])
    assert wrong.advantages_T == pytest.approx([-a])  # one token: weight 1
    m = out.metrics
    exec_h = [2.0, 1.0, 1.0, 0.1, 0.3]  # before pooling, every completion of the step
    post_exec_h = [1.75, 1.25, 1.0, 0.1, 0.3]  # single-token completions pool to themselves
    assert (m["correct_rate"], m["mean_reward"], m["num_datums"]) == (0.25, 0.25, 2)
    assert (m["correct_count"], m["total_count"]) == (1, 4) == (out.correct_count, out.total_count)
    assert m["exec_entropy_mean"] == pytest.approx(sum(exec_h) / 5)
    assert m["exec_entropy_var"] == pytest.approx(_var(exec_h))
    assert (m["plan_entropy_mean"], m["plan_entropy_var"]) == (0.5, 0.0)
    assert m["post_exec_entropy_var"] == pytest.approx(_var(post_exec_h))
    assert m["planning_token_fraction"] == pytest.approx(1 / 6)
    assert (m["sepa_lambda"], m["sepa_gate_open"], m["sepa_gate_open_step"]) == (lam, True, 0)
    assert (m["loss"], m["grad_norm"], m["sampler_train_kl"]) == (0.25, 2.0, 0.001)
    assert (m["loss_is_placeholder"], m["backend_reports_sync_loss"]) == (False, True)
    assert (m["reward_failures"], m["reward_timeouts"]) == (0, 7)  # the scorer's counts, popped by the step
    assert m["reward_tie_group_rate"] == 0.5 and m["reward_uniform_group_rate"] == 0.5
    assert out.num_tokens == 4 * 2 + 6  # prompt ids + completion tokens
    assert [g["reward"] for g in out.generations] == [1.0, 0.0]  # generations_per_prompt = 1
    assert out.generations[0]["planning_phrases"] == ["let me check"]


def test_the_step_updates_sepa_and_lambda_acts_from_the_next_step():
    ctx = _ctx(gate=0.2)
    first = rl_step(ctx, EXAMPLES, step=2, seed=1)
    # the gate was closed while the step ran (λ = 0), and the step's correct_rate 0.25 opened it
    assert first.metrics["sepa_lambda"] == 0.0
    assert (first.metrics["sepa_gate_open"], first.metrics["sepa_gate_open_step"]) == (True, 2)
    assert first.metrics["post_exec_entropy_var"] == first.metrics["exec_entropy_var"]
    second = rl_step(ctx, EXAMPLES, step=3, seed=2)
    assert second.metrics["sepa_lambda"] == 0.75


def test_a_transform_that_does_not_ask_for_lambda_is_never_handed_it():
    seen = []

    def flat(advantage, h, planning_mask):  # no keyword-only knobs: consumes nothing
        seen.append(len(h))
        return [advantage] * len(h)

    ctx = _ctx(transform=transform_variant(flat, "flat"))
    out = rl_step(ctx, EXAMPLES, step=3, seed=1)
    assert seen == [3, 1]
    assert out.metrics["sepa_lambda"] == 0.0  # λ would be 0.75 for a transform that consumes it
    a = 0.5 / (0.5 + MAXRL_EPS)
    assert [d.advantages_T for d in ctx.backend.datums[0]] == [[a] * 3, [-a]]


def test_a_step_with_only_tied_groups_trains_nothing():
    ctx = _ctx()
    out = rl_step(ctx, [Example("3+4", "7")], step=0, seed=0)
    assert ctx.backend.datums == []
    assert (out.metrics["num_datums"], out.metrics["loss"], out.metrics["loss_is_placeholder"]) == (0, None, False)


def test_the_scorer_protocol_is_what_the_step_and_evals_call():
    """A scorer needs score_batch and pop_counts only (WordScorer above has nothing else)."""
    from retrain.rl.step import Scorer

    assert sorted(n for n in vars(Scorer) if not n.startswith("_")) == ["pop_counts", "score_batch"]
