"""`reasoning_gym:<task>`: procedural tasks from the optional `reasoning-gym` package (~100 generators).

`pip install reasoning-gym` (or `pip install 'retrain[reasoning-gym]'`). Items become examples with the
task's question + a `\\boxed{}` instruction and its answer string; scoring uses `[reward].type`
(`match`/`math`), not reasoning-gym's own scorers. Contamination warning: `gsm_symbolic` items are
templated variants of GSM8K *test* problems, so never evaluate on GSM8K test after training on it.
"""

from __future__ import annotations

import logging
from typing import Any

from retrain.data.arithmetic import DEFAULT_TRAIN_SIZE
from retrain.data.base import Dataset, Example
from retrain.data.gsm8k import BOXED_INSTRUCTION
from retrain.errors import RetrainError

logger = logging.getLogger(__name__)

PREFIX = "reasoning_gym:"
# Derived seeds for the two generator streams; reasoning-gym takes one int seed per dataset.
_TRAIN_STREAM, _EVAL_STREAM = 0x7A11, 0xE7A1


def task_name(source: str) -> str:
    """`"reasoning_gym:basic_arithmetic"` → `"basic_arithmetic"`; RetrainError when the task is empty."""
    task = source.removeprefix(PREFIX).strip() if source.startswith(PREFIX) else ""
    if not task:
        raise RetrainError(f"[data].source = {source!r}: name the task, e.g. 'reasoning_gym:basic_arithmetic'")
    return task


def _import_reasoning_gym() -> Any:
    try:
        import reasoning_gym
    except ImportError:
        raise RetrainError(
            "[data].source = 'reasoning_gym:<task>' needs the optional package reasoning-gym: "
            "pip install reasoning-gym  (or: pip install 'retrain[reasoning-gym]')"
        ) from None
    return reasoning_gym


def _items(rg: Any, task: str, seed: int, size: int) -> list[Example]:
    try:
        items = list(rg.create_dataset(task, seed=seed, size=size))
    except (ValueError, KeyError) as e:  # reasoning-gym: "Dataset 'x' not registered"
        raise RetrainError(f"[data].source = '{PREFIX}{task}': {e}") from None
    return [
        Example(
            prompt=str(item["question"]) + BOXED_INSTRUCTION,
            answer=str(item["answer"]).strip(),
            id=f"{task}-{seed}-{i}",
        )
        for i, item in enumerate(items)
    ]


def load_reasoning_gym(data_cfg: Any, eval_cfg: Any, seed: int) -> Dataset:
    """Train (`max_examples`, 0 → 10000) and eval (`[eval].num_examples`) items from two seeded streams.

    The two streams may generate the same question; load_dataset drops such train items, so eval stays
    held out.
    """
    task = task_name(data_cfg.source)
    rg = _import_reasoning_gym()
    if task == "gsm_symbolic":
        logger.warning("reasoning_gym:gsm_symbolic derives from GSM8K *test*: do not evaluate on GSM8K test")
    n_train = data_cfg.max_examples if data_cfg.max_examples > 0 else DEFAULT_TRAIN_SIZE
    # seed * 2**16 + stream: train and eval streams differ, and so do the streams of different run seeds.
    train = _items(rg, task, seed * 2**16 + _TRAIN_STREAM, n_train)
    n_eval = max(eval_cfg.num_examples, 0)
    eval_examples = _items(rg, task, seed * 2**16 + _EVAL_STREAM, n_eval) if n_eval else []
    return Dataset(train=train, eval=eval_examples)
