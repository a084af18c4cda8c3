"""Data sources: `load_dataset` picks one from `[data].source`; the run draws batches through a `Cursor`.

Every source is a function `(data_cfg, eval_cfg, seed) -> Dataset` with one entry in `SOURCES`; a
`"module:function"` source is a plugin with the same signature (its return value is checked),
e.g. (`my_data.py`):

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
from retrain.data.reasoning_gym import load_reasoning_gym
from retrain.errors import RetrainError
from retrain.registry import Registry, Variant

__all__ = ["SOURCES", "Cursor", "Dataset", "Example", "SourceFn", "load_dataset"]

logger = logging.getLogger(__name__)

SourceFn = Callable[[Any, Any, int], Dataset]


def _source_plugin(fn: SourceFn, path: str) -> Variant[SourceFn]:
    """A plugin source, its return value checked (a Dataset of Examples)."""

    def checked(data_cfg: Any, eval_cfg: Any, seed: int) -> Dataset:
        return _check(fn(data_cfg, eval_cfg, seed), path)

    return Variant(path, checked, f"plugin {path}", plugin=True)


def _check(dataset: Any, source: str) -> Dataset:
    """A plugin's return value must be a Dataset of Examples; say so clearly when it is not."""
    if not isinstance(dataset, Dataset):
        raise RetrainError(f"[data].source = {source!r} returned {type(dataset).__name__}, not a retrain Dataset")
    for part in ("train", "eval"):
        bad = [e for e in getattr(dataset, part) if not isinstance(e, Example)]
        if bad:
            raise RetrainError(f"[data].source = {source!r}: {part} holds {type(bad[0]).__name__}, not retrain Example")
    return dataset


def _arithmetic_only(cfg: Any) -> list[str]:
    """`prompt_style` words the arithmetic source's prompts; another built-in source has its own
    wording, so a non-default style there would silently do nothing."""
    if cfg.data.prompt_style == "answer":
        return []
    return [
        (
            f'[data].prompt_style = "{cfg.data.prompt_style}" words arithmetic prompts only; remove it, '
            'or use source = "arithmetic"'
        )
    ]


def _needs_path(cfg: Any) -> list[str]:
    problems = _arithmetic_only(cfg)
    if cfg.data.path:
        return problems
    return problems + [
        '[data].path: required when source = "jsonl"; set path = "train.jsonl" (rows {"prompt", "answer"})'
    ]


SOURCES: Registry[SourceFn] = Registry("[data].source", "[data].source", _source_plugin)
SOURCES.register(
    "arithmetic", summary="generated offline, seeded (operand_digits, max_operand, operations, prompt_style)"
)(load_arithmetic)
SOURCES.register(
    "math", summary="Hendrycks MATH through `datasets`, or a local copy at [data].path", check=_arithmetic_only
)(load_math)
SOURCES.register("gsm8k", summary="GSM8K through `datasets`, or a local copy at [data].path", check=_arithmetic_only)(
    load_gsm8k
)
SOURCES.register("jsonl", summary='rows {"prompt", "answer"} from [data].path', check=_needs_path)(load_jsonl)
SOURCES.register(
    "reasoning_gym",
    summary="a reasoning-gym task, written reasoning_gym:<task> (optional extra)",
    takes_argument=True,
    check=_arithmetic_only,
)(load_reasoning_gym)


def resolve_source(source: str) -> SourceFn:
    """The loader for `[data].source`: a built-in, `reasoning_gym:<task>` (the loader reads its
    task from the source itself), or a `module:function` plugin."""
    return SOURCES.resolve(source)


def load_dataset(data_cfg: Any, eval_cfg: Any, seed: int) -> Dataset:
    """The train and held-out eval examples for `[data]` and `[eval]`, reproducible from `seed`.

    After the source loads: train examples whose prompt is also an eval prompt are dropped (held-out
    means never trained on, also when a file repeats a problem), then `max_examples` > 0 keeps the first
    `max_examples` train examples. Ordering and reshuffling per epoch are the Cursor's job.
    """
    dataset = resolve_source(data_cfg.source)(data_cfg, eval_cfg, seed)
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
