"""The Backend protocol: what the RL step needs from a model runtime.

A backend samples completions with per-token logprobs (and entropies when asked) and takes one
optimizer step on a list of datums. `rl/step.py` talks to nothing else.

Example (any backend)::

    backend = make_backend(cfg)                     # retrain.backends.make_backend
    groups_P_G = backend.sample(["What is 2 + 3?"], n=4, params=SamplingParams(max_tokens=16))
    c = groups_P_G[0][0]                            # a Completion
    datum = Datum(prompt_ids=c.prompt_ids, completion_ids=c.token_ids,
                  old_logprobs_T=c.logprobs, advantages_T=[1.0] * len(c.token_ids))
    result = backend.train_step([datum], lr=1e-4)  # TrainResult(loss=..., ...)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

# LoRA defaults shared by the config ([model]) and the local backend; here, with no torch import.
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def effective_lora_alpha(alpha: float, rank: int) -> float:
    """The effective LoRA alpha: `alpha`, or 2·rank when it is 0 (`[model].lora_alpha = 0`)."""
    return alpha if alpha else 2 * rank


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int = 0  # sampling RNG seed; the run derives it from (run seed, step) so resume is exact
    want_entropy: bool = False  # per-token Shannon entropy of the sampling distribution
    greedy: bool = False  # argmax decoding (held-out evaluation)


@dataclass
class Completion:
    """One sampled completion. All `_T` lists have one entry per completion token."""

    prompt_ids: list[int]  # the chat-templated prompt, exactly as fed to the model
    token_ids: list[int]  # generated tokens, including the stop token when one was produced
    logprobs: list[float]  # log pi_sampler(token_t), same temperature scaling as the loss uses
    text: str  # decoded completion, special tokens skipped
    offsets: list[tuple[int, int]]  # (start, end) character span of each token in `text`
    hit_max_tokens: bool  # stopped because it reached max_tokens, not a stop token
    entropies: list[float] | None = None  # Shannon entropy per token when want_entropy


@dataclass
class Datum:
    """One training sequence: the loss covers exactly the completion tokens."""

    prompt_ids: list[int]
    completion_ids: list[int]
    old_logprobs_T: list[float]
    advantages_T: list[float]


@dataclass
class TrainResult:
    loss: float | None  # None when the backend took no step; placeholder when not synchronous
    clip_fraction: float = 0.0
    kl_ref: float = 0.0  # mean k3 KL to the reference policy (0 when kl_beta = 0)
    sampler_train_kl: float = 0.0  # mean (old_logprob - new_logprob) over completion tokens
    grad_norm: float | None = 0.0  # None when the backend cannot measure it (a remote service)
    num_tokens: int = 0  # completion tokens trained on


@runtime_checkable
class Backend(Protocol):
    reports_sync_loss: bool  # train_step's loss is the objective just optimised, not a placeholder

    def sample(self, prompts: list[str], n: int, params: SamplingParams) -> list[list[Completion]]:
        """`n` completions for each prompt (a list of groups, one per prompt, in order)."""
        ...

    def train_step(self, datums: list[Datum], lr: float) -> TrainResult:
        """One optimizer step over all datums (micro-batched internally)."""
        ...

    def save(self, path: str) -> str | None:
        """Write a checkpoint, adapter and optimizer state, into directory `path` (local: the PEFT
        adapter files + optimizer.pt). Returns a reference when the weights live elsewhere (tinker: the
        `tinker://` path, which run.py records in trainer_state.json), else None."""
        ...

    def load(self, path: str) -> None:
        """Restore what `save` wrote: `path` is the directory, or the reference `save` returned."""
        ...
