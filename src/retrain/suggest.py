"""Did-you-mean for config keys: the names people bring from other trainers, then spelling.

Plain string similarity answers `--training.learning_rate` with `temperature` and `--max-step` with
a list of tables (issue #11). So a key is matched, in order: exactly once '-' and '_' are treated
alike; by a synonym from other tools (`learning_rate` → `lr`, `max_new_tokens` → `max_tokens`); by
similarity of the last dotted component (`max_step` → `max_steps`); by similarity of the whole path.

    >>> closest_key("training.learning_rate", ["training.lr", "training.temperature"])
    'training.lr'
    >>> closest_key("max-step", ["training.max_steps", "sepa.steps"])
    'training.max_steps'
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

# Other trainers' (TRL, torchtune, verl, OpenRLHF) names for retrain's keys: last component → ours.
SYNONYMS = {
    "learning_rate": "lr", "learningrate": "lr", "actor_lr": "lr",
    "max_step": "max_steps", "num_steps": "max_steps", "total_steps": "max_steps", "steps": "max_steps",
    "num_train_steps": "max_steps", "train_steps": "max_steps",
    "max_new_tokens": "max_tokens", "max_completion_length": "max_tokens", "response_length": "max_tokens",
    "max_length": "max_tokens", "max_response_length": "max_tokens",
    "num_generations": "group_size", "num_samples": "group_size", "n_samples": "group_size",
    "samples_per_prompt": "group_size", "rollout_n": "group_size",
    "bs": "batch_size", "prompts_per_step": "batch_size", "train_batch_size": "batch_size",
    "rank": "lora_rank", "lora_r": "lora_rank",
    "temp": "temperature",
    "output_dir": "log_dir", "out_dir": "log_dir", "logdir": "log_dir", "logging_dir": "log_dir",
    "model_name": "name", "model_name_or_path": "name", "model_id": "name",
    "dataset": "source", "dataset_name": "source",
    "seeds": "seed", "random_seed": "seed",
    "wd": "weight_decay",
    "save_steps": "save_every", "checkpoint_every": "save_every",
    "eval_steps": "every", "eval_every": "every",
}  # fmt: skip


def _norm(text: str) -> str:
    return text.lower().replace("-", "_")


def closest_key(word: str, candidates: Sequence[str]) -> str | None:
    """The candidate `word` most likely meant (see the module docstring), or None."""
    by_norm = {_norm(c): c for c in candidates}
    w = _norm(word)
    if w in by_norm:
        return by_norm[w]
    table, _, last = w.rpartition(".")
    lasts: dict[str, list[str]] = {}
    for c in candidates:
        lasts.setdefault(_norm(c).rpartition(".")[2], []).append(c)

    def pick(options: list[str]) -> str:  # the typed table first: `--model.lr` still finds training.lr
        same = [c for c in options if _norm(c).rpartition(".")[0] == table]
        return (same or options)[0]

    synonym = SYNONYMS.get(last)
    if synonym in lasts:
        return pick(lasts[synonym])
    close = difflib.get_close_matches(last, list(lasts), n=1, cutoff=0.75)
    if close:
        return pick(lasts[close[0]])
    whole = difflib.get_close_matches(w, list(by_norm), n=1, cutoff=0.6)
    return by_norm[whole[0]] if whole else None
