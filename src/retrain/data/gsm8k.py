"""GSM8K grade-school word problems: a local JSONL copy, or `openai/gsm8k` through HF `datasets`.

Rows are `{"question", "answer"}` where the answer is a worked solution ending in `#### 72`; the
reference is the text after the last `####` with thousands separators removed.
"""

from __future__ import annotations

from typing import Any

from retrain.data.base import Dataset, Example
from retrain.data.jsonl import load_local, require_str, sample_examples, with_ids
from retrain.errors import RetrainError

BOXED_INSTRUCTION = "\nPut the final answer in \\boxed{}."

_HUB_NAME = "openai/gsm8k"


def gsm8k_answer(solution: str, where: str) -> str:
    """The final answer of a GSM8K solution: text after the last `####`, commas stripped ("1,000" → "1000")."""
    if "####" not in solution:
        raise RetrainError(f"{where}: the answer has no '#### <final answer>' line (GSM8K convention)")
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


def gsm8k_row(row: dict[str, Any], where: str, index: int) -> Example:
    """`{"question", "answer": "... #### 72"}` → Example(question + boxed instruction, "72")."""
    expected = '{"question": ..., "answer": "... #### <number>"}'
    question = require_str(row, "question", where, expected)
    answer = gsm8k_answer(require_str(row, "answer", where, expected), where)
    return Example(prompt=question + BOXED_INSTRUCTION, answer=answer)


def hub_rows(name: str, config: str | None, split: str, source: str) -> list[dict[str, Any]]:
    """Rows of a HF hub dataset split, with `datasets` imported only here (it is optional).

    Missing package or no network → RetrainError with both fixes: install `datasets`, or use a local copy.
    """
    fix = f"or set [data].path to a local copy ({source} reads JSONL files; see docs/data.md)"
    try:
        import datasets
    except ImportError:
        raise RetrainError(
            f"[data].source = {source!r} without [data].path loads {name} from the Hugging Face hub "
            f"with the `datasets` package, which is not installed: pip install 'retrain[datasets]', {fix}"
        ) from None
    try:
        rows = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # network, auth, unknown split: all fixed the same way
        raise RetrainError(f"could not load {name} split {split!r} ({type(e).__name__}: {e}); {fix}") from e
    return [dict(row) for row in rows]


def load_gsm8k(data_cfg: Any, eval_cfg: Any, seed: int) -> Dataset:
    """The `gsm8k` source: train from `[data].split`, eval (`[eval].num_examples`, seeded) from `eval_split`."""
    if data_cfg.path:
        return load_local(data_cfg.path, data_cfg.split, data_cfg.eval_split, eval_cfg.num_examples, seed, gsm8k_row)

    def from_hub(split: str) -> list[Example]:
        rows = hub_rows(_HUB_NAME, "main", split, "gsm8k")
        examples = [gsm8k_row(row, f"{_HUB_NAME}[{split}] row {i}", i) for i, row in enumerate(rows)]
        return with_ids(examples, split)

    train = from_hub(data_cfg.split)
    return Dataset(train=train, eval=sample_examples(from_hub(data_cfg.eval_split), eval_cfg.num_examples, seed))
