"""Data sources: `load_dataset` picks one from `[data].source`; the run draws batches through a `Cursor`.

Every source is a function `(data_cfg, eval_cfg, seed) -> Dataset` listed in `SOURCES`; a
`"module:function"` source is a plugin with the same signature, e.g. (`my_data.py`):

    from retrain.data import Dataset, Example

    def capitals(data_cfg, eval_cfg, seed):
        rows = [("France", "Paris"), ("Peru", "Lima"), ("Kenya", "Nairobi")]
        examples = [Example(f"Capital of {c}? Put it in \\\\boxed{{}}.", a, id=c) for c, a in rows]
        return Dataset(train=examples[:2], eval=examples[2:])

with `[data] source = "my_data:capitals"`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from retrain.data.arithmetic import load_arithmetic
from retrain.data.base import Dataset, Example
from retrain.data.cursor import Cursor
from retrain.data.gsm8k import load_gsm8k
from retrain.data.jsonl import load_jsonl
from retrain.data.math import load_math
from retrain.data.reasoning_gym import PREFIX as REASONING_GYM_PREFIX
from retrain.data.reasoning_gym import load_reasoning_gym
from retrain.errors import RetrainError

__all__ = ["SOURCES", "Cursor", "Dataset", "Example", "SourceFn", "load_dataset"]

logger = logging.getLogger(__name__)

SourceFn = Callable[[Any, Any, int], Dataset]

# The one table of sources. "reasoning_gym" takes its task after a colon ("reasoning_gym:chain_sum").
SOURCES: dict[str, SourceFn] = {
    "arithmetic": load_arithmetic,
    "gsm8k": load_gsm8k,
    "math": load_math,
    "jsonl": load_jsonl,
    REASONING_GYM_PREFIX.rstrip(":"): load_reasoning_gym,
}


def resolve_source(source: str) -> SourceFn:
    """The loader for `[data].source`: a name in SOURCES, `reasoning_gym:<task>`, or a `module:function`
    plugin (through `retrain.rl.registry`, the one plugin mechanism)."""
    from retrain.rl.registry import resolve

    if source.partition(":")[0] == "reasoning_gym":
        return SOURCES["reasoning_gym"]  # it reads (and checks) its task from the source itself
    return resolve(source, SOURCES, "[data].source")


def _check(dataset: Any, source: str) -> Dataset:
    """A plugin's return value must be a Dataset of Examples; say so clearly when it is not."""
    if not isinstance(dataset, Dataset):
        raise RetrainError(
            f"[data].source = {source!r} returned {type(dataset).__name__}, not a retrain Dataset"
        )
    for part in ("train", "eval"):
        bad = [e for e in getattr(dataset, part) if not isinstance(e, Example)]
        if bad:
            raise RetrainError(
                f"[data].source = {source!r}: {part} holds {type(bad[0]).__name__}, not retrain Example"
            )
    return dataset


def load_dataset(data_cfg: Any, eval_cfg: Any, seed: int) -> Dataset:
    """The train and held-out eval examples for `[data]` and `[eval]`, reproducible from `seed`.

    After the source loads: train examples whose prompt is also an eval prompt are dropped (held-out
    means never trained on, also when a file repeats a problem), then `max_examples` > 0 keeps the first
    `max_examples` train examples. Ordering and reshuffling per epoch are the Cursor's job.
    """
    dataset = _check(resolve_source(data_cfg.source)(data_cfg, eval_cfg, seed), data_cfg.source)
    eval_prompts = {e.prompt for e in dataset.eval}
    train = [e for e in dataset.train if e.prompt not in eval_prompts]
    if len(train) < len(dataset.train):
        dropped = len(dataset.train) - len(train)
        logger.info("dropped %d train examples that repeat a held-out eval prompt", dropped)
    if data_cfg.max_examples > 0:
        train = train[: data_cfg.max_examples]
    if not train:
        raise RetrainError(f"[data].source = {data_cfg.source!r} gave no training examples")
    return Dataset(train=train, eval=list(dataset.eval))
