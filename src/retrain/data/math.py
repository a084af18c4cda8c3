"""Competition mathematics (Hendrycks MATH): a local JSONL copy, or `EleutherAI/hendrycks_math` via `datasets`.

Rows are `{"problem", "solution"}` where the solution ends in `\\boxed{answer}` (an explicit `"answer"`
field, as in MATH-500 exports, wins). Use `[reward].type = "math"`: MATH answers are LaTeX expressions
that match only up to equivalence (`\\frac{1}{2}` vs `0.5`).
"""

from __future__ import annotations

import logging
from typing import Any

from retrain.data.base import Dataset, Example
from retrain.data.gsm8k import BOXED_INSTRUCTION, hub_rows
from retrain.data.jsonl import load_local, require_str, sample_examples, with_ids
from retrain.errors import RetrainError
from retrain.rewards import extract_boxed

logger = logging.getLogger(__name__)

_HUB_NAME = "EleutherAI/hendrycks_math"
# The hub copy is split by subject, one config each; the source concatenates all seven.
_HUB_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)


def math_row(row: dict[str, Any], where: str, index: int) -> Example:
    """`{"problem", "solution"}` (or with `"answer"`) → Example(problem + boxed instruction, answer)."""
    expected = '{"problem": ..., "solution": "... \\\\boxed{answer}"}'
    problem = require_str(row, "problem", where, expected)
    if "answer" in row:
        answer = require_str(row, "answer", where, expected)
    else:
        answer = extract_boxed(require_str(row, "solution", where, expected))
        if answer is None:
            raise RetrainError(f'{where}: the solution has no balanced \\boxed{{...}} answer; add an "answer" field')
    return Example(prompt=problem + BOXED_INSTRUCTION, answer=answer.strip())


def _from_hub(split: str) -> list[Example]:
    """All subjects of one hub split; rows without a boxed answer are skipped (a handful use \\fbox)."""
    examples, skipped = [], 0
    for subject in _HUB_SUBJECTS:
        for i, row in enumerate(hub_rows(_HUB_NAME, subject, split, "math")):
            try:
                examples.append(math_row(row, f"{_HUB_NAME}/{subject}[{split}] row {i}", i))
            except RetrainError:
                skipped += 1
    if skipped:
        logger.warning("%s[%s]: skipped %d problems without a \\boxed{} answer", _HUB_NAME, split, skipped)
    return with_ids(examples, f"math-{split}")


def load_math(data_cfg: Any, eval_cfg: Any, seed: int) -> Dataset:
    """The `math` source: local JSONL (`[data].path`) or the hub; eval is `[eval].num_examples`, seeded."""
    if data_cfg.path:
        return load_local(data_cfg.path, data_cfg.split, data_cfg.eval_split, eval_cfg.num_examples, seed, math_row)
    train = _from_hub(data_cfg.split)
    return Dataset(train=train, eval=sample_examples(_from_hub(data_cfg.eval_split), eval_cfg.num_examples, seed))
