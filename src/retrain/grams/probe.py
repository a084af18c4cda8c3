"""What a gram list marks on a model's own completions: a short sample, measured like a training step.

    stats = planning_stats([(c.text, c.offsets) for c in completions], grams)      # pure
    report = probe_planning(cfg, num_prompts=4)                                     # samples with cfg's model
    print(render_probe(report))

`probe_planning` takes the run's first prompts (the seeded cursor's step-0 batch), samples them with the
run's backend and sampling settings (the step-0 seed), and marks planning tokens with
`retrain.rl.planning.planning_mask` over the tokenizer's offsets, as `rl_step` does, so
`planning_token_fraction` here is what step 0 of the run would log. It is the base model's behaviour:
training can make planning phrases more or less frequent later.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from retrain.rl.planning import find_planning_phrases, planning_mask


@dataclass
class PlanningStats:
    """Planning tokens over a set of completions (same definitions as the metrics of a step)."""

    completions: int = 0
    tokens: int = 0
    planning_tokens: int = 0
    completions_with_planning: int = 0
    gram_hits: dict[str, int] = field(default_factory=dict)  # completions containing each gram

    @property
    def planning_token_fraction(self) -> float:
        """planning tokens / completion tokens (0 when there are no tokens), as `rl_step` logs it."""
        return self.planning_tokens / self.tokens if self.tokens else 0.0

    @property
    def unmatched(self) -> list[str]:
        return [g for g, hits in self.gram_hits.items() if hits == 0]


def planning_stats(completions: Iterable[tuple[str, Sequence[tuple[int, int]]]], grams: Sequence[str]) -> PlanningStats:
    """Count planning tokens of each (text, token offsets) completion under `grams`.

        planning_token_fraction = Σ planning tokens / Σ completion tokens

    >>> offsets = [(0, 4), (4, 5), (5, 9), (9, 12), (12, 18), (18, 19)]    # Wait|,| let| me| check|.
    >>> s = planning_stats([("Wait, let me check.", offsets)], ["let me check", "start over"])
    >>> (s.planning_tokens, s.tokens, s.gram_hits)
    (3, 6, {'let me check': 1, 'start over': 0})
    """
    stats = PlanningStats(gram_hits={g: 0 for g in grams})
    for text, offsets in completions:
        mask_T = planning_mask(text, offsets, grams)
        stats.completions += 1
        stats.tokens += len(mask_T)
        stats.planning_tokens += sum(mask_T)
        stats.completions_with_planning += any(mask_T)
        for gram in find_planning_phrases(text, grams):
            stats.gram_hits[gram] += 1
    return stats


def probe_planning(
    cfg, *, num_prompts: int = 4, samples_per_prompt: int = 0, grams: Sequence[str] | None = None, backend=None
) -> dict[str, Any]:
    """Sample `num_prompts` × `samples_per_prompt` (0 = `[training].group_size`) completions of the run's
    first prompts and measure planning tokens under `grams` (None = `[planning].strategic_grams`).

    `backend`: an already built backend (otherwise one is built from `cfg`, loading the model)."""
    from retrain.backends import make_backend
    from retrain.backends.base import SamplingParams
    from retrain.data import load_dataset
    from retrain.data.cursor import Cursor
    from retrain.errors import RetrainError
    from retrain.rewards import make_scorer
    from retrain.rl.step import CORRECT_THRESHOLD
    from retrain.run import DATA_SEED, step_seed

    if num_prompts < 1 or samples_per_prompt < 0:
        raise RetrainError(
            f"--prompts {num_prompts} / --samples {samples_per_prompt}: need prompts >= 1 and samples >= 0"
        )
    t = cfg.training
    grams = list(cfg.planning.strategic_grams if grams is None else grams)
    n = samples_per_prompt or t.group_size
    data = load_dataset(cfg.data, cfg.eval, DATA_SEED)
    if not data.train:
        raise RetrainError(f"[data].source = {cfg.data.source!r} produced no training examples")
    cursor = Cursor(len(data.train), t.seed, shuffle=cfg.data.shuffle)
    examples = [data.train[i] for i in cursor.next_batch(min(num_prompts, len(data.train)))]
    params = SamplingParams(
        max_tokens=t.max_tokens, temperature=t.temperature, top_p=t.top_p, seed=step_seed(t.seed, 0)
    )
    own = backend is None
    backend = backend or make_backend(cfg)
    try:
        groups = backend.sample([ex.prompt for ex in examples], n, params)
    finally:
        if own and hasattr(backend, "close"):  # a remote backend ends its session, the openai engine its server
            backend.close("success")
    completions = [c for g in groups for c in g]
    with make_scorer(cfg.reward) as scorer:  # reward worker processes: stopped when scored
        rewards = scorer.score_batch(
            [c.text for c in completions], [ex for ex, g in zip(examples, groups, strict=True) for _ in g]
        )
    correct = sum(r > CORRECT_THRESHOLD for r in rewards)
    stats = planning_stats(((c.text, c.offsets) for c in completions), grams)
    shown = [c.text for c in completions if find_planning_phrases(c.text, grams)][:3] or [
        c.text for c in completions[:2]
    ]
    return {
        "model": cfg.model.name,
        "data": cfg.data.source,
        "prompts": len(examples),
        "samples_per_prompt": n,
        "max_tokens": t.max_tokens,
        "temperature": t.temperature,
        "grams": grams,
        **asdict(stats),
        "planning_token_fraction": stats.planning_token_fraction,
        "unmatched": stats.unmatched,
        "correct_rate": correct / len(completions) if completions else 0.0,
        "max_token_hit_rate": sum(c.hit_max_tokens for c in completions) / max(len(completions), 1),
        "examples": shown,
    }


def render_probe(report: dict[str, Any]) -> str:
    """The probe as text: the fraction, which grams matched, which never did, a few completions."""
    from retrain.void import planning_void_warning

    lines = [
        (
            f"planning probe: {report['model']} on {report['data']}, {report['prompts']} prompts x "
            f"{report['samples_per_prompt']} completions (max_tokens {report['max_tokens']}, "
            f"temperature {report['temperature']:g}); correct {report['correct_rate']:.0%}, "
            f"hit max_tokens {report['max_token_hit_rate']:.0%}"
        ),
        (
            f"planning_token_fraction {report['planning_token_fraction']:.4f} ({report['planning_tokens']} of "
            f"{report['tokens']} completion tokens); completions with a planning token: "
            f"{report['completions_with_planning']} of {report['completions']}"
        ),
    ]
    hits = sorted(((g, h) for g, h in report["gram_hits"].items() if h), key=lambda gh: (-gh[1], gh[0]))
    lines.append(
        "grams that matched (completions): " + (", ".join(f"{g!r} ({h})" for g, h in hits) if hits else "none")
    )
    if report["unmatched"]:
        lines.append(
            f"{len(report['unmatched'])} of {len(report['grams'])} grams never matched: "
            + ", ".join(repr(g) for g in report["unmatched"])
        )
    lines.append("sample completions:")
    lines += [f"  | {text[:300]!r}" for text in report["examples"]]
    warning = planning_void_warning("this gram list", report["planning_token_fraction"])
    if warning:
        lines.append(f"warning: {warning}")
    return "\n".join(lines) + "\n"
