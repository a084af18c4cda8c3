"""The built-in offline task: seeded two-operand integer arithmetic with exact answers.

"What is 37 + 58? Answer with just the number." → "95", scored on the last number in the completion
(`answer_format = "number"`): SmolLM2-135M, the embedded default model, never writes `\\boxed{}`
(measured 0/40 over 4 prompt wordings) but starts at ~35% greedy accuracy on two-digit addition, the
range where GRPO groups have reward variance to learn from.

`[data].prompt_style = "steps"` asks for the working instead ("Solve it step by step."): the same
model then writes reasoning moves ("to solve this", "we need to", "start by", "step by step"), so
planning-token methods (HICRA, SEPA) have planning tokens to act on. docs/cpu_task.md has the
measurements behind it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from retrain.data.base import Dataset, Example
from retrain.data.cursor import seeded_rng
from retrain.errors import RetrainError

OPERATIONS = ("+", "-", "*")
DEFAULT_TRAIN_SIZE = 10_000
# Operands stay below 2**62 so that numpy's int64 draws are exact; Python ints do the arithmetic.
_MAX_OPERAND_LIMIT = 2**62 - 1

Problem = tuple[int, str, int]

# `[data].prompt_style` → the prompt's wording. Both keep the answer the last number of a good
# completion, so both are scored with answer_format "number".
PROMPT_STYLES: dict[str, str] = {
    # Just the answer: ~35% greedy accuracy on 2-digit addition, but no planning phrases at all.
    "answer": "What is {a} {op} {b}? Answer with just the number.",
    # The working: phrases such as "to solve this", "we need to", "first add" in most completions,
    # ~55 tokens each at max_tokens = 64 (docs/cpu_task.md), so budget tokens for it.
    "steps": "What is {a} {op} {b}? Solve it step by step.",
}


def solve(a: int, op: str, b: int) -> int:
    """The exact answer of `a op b` for op in {+, -, *} (Python ints: no overflow, no rounding)."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    raise ValueError(f"unknown operation {op!r}")


def to_example(problem: Problem, style: str = "answer") -> Example:
    """`problem` worded per `PROMPT_STYLES[style]` (measured on the default model); the answer is the
    exact integer, scored on the last number of the completion."""
    a, op, b = problem
    return Example(
        prompt=PROMPT_STYLES[style].format(a=a, op=op, b=b),
        answer=str(solve(a, op, b)),
        id=f"arith-{a}{op}{b}",
        answer_format="number",
    )


def operand_max(operand_digits: int, max_operand: int) -> int:
    """Largest operand: `max_operand` when > 0, else 10**operand_digits − 1 (2 digits → 99)."""
    return max_operand if max_operand > 0 else 10**operand_digits - 1


def _draw(rng: np.random.Generator, hi: int, operations: tuple[str, ...], k: int) -> list[Problem]:
    """k problems, operands uniform in [0, hi], operation uniform over `operations`."""
    a_P = rng.integers(0, hi, size=k, endpoint=True)
    b_P = rng.integers(0, hi, size=k, endpoint=True)
    op_P = rng.integers(0, len(operations), size=k)
    return [(int(a), operations[int(o)], int(b)) for a, o, b in zip(a_P, op_P, b_P, strict=True)]


def generate(
    seed: int, n_train: int, n_eval: int, hi: int, operations: tuple[str, ...]
) -> tuple[list[Problem], list[Problem]]:
    """(train, eval) problems: eval = n_eval distinct problems from the seed's eval stream; train = n_train
    draws (with replacement) from the seed's train stream, skipping every eval problem.

    Eval is drawn first and independently of n_train, so changing `max_examples` never changes the
    held-out set, and train ∩ eval = ∅ on (a, op, b) by construction.
    """
    space = (hi + 1) ** 2 * len(operations)
    if n_eval >= space:
        raise RetrainError(
            f"[eval].num_examples = {n_eval} held-out problems leave none of the {space} possible "
            "arithmetic problems for training; raise [data].operand_digits / max_operand or lower "
            "[eval].num_examples"
        )
    eval_rng, train_rng = seeded_rng(seed, "arithmetic-eval"), seeded_rng(seed, "arithmetic-train")
    eval_P: list[Problem] = []
    seen: set[Problem] = set()
    while len(eval_P) < n_eval:
        for problem in _draw(eval_rng, hi, operations, n_eval - len(eval_P)):
            if problem not in seen and len(eval_P) < n_eval:
                seen.add(problem)
                eval_P.append(problem)
    train_P: list[Problem] = []
    while len(train_P) < n_train:
        batch = _draw(train_rng, hi, operations, n_train - len(train_P))
        train_P.extend(p for p in batch if p not in seen)
    return train_P, eval_P


def _operations(data_cfg: Any) -> tuple[str, ...]:
    ops = tuple(dict.fromkeys(data_cfg.operations))  # keep order, drop repeats
    bad = [op for op in ops if op not in OPERATIONS]
    if bad or not ops:
        raise RetrainError(
            f"[data].operations = {list(data_cfg.operations)!r}: use a non-empty subset of {list(OPERATIONS)}"
        )
    return ops


def load_arithmetic(data_cfg: Any, eval_cfg: Any, seed: int) -> Dataset:
    """The `arithmetic` source: `max_examples` (0 → 10000) train problems, `[eval].num_examples` held out,
    worded per `prompt_style`."""
    if data_cfg.prompt_style not in PROMPT_STYLES:
        raise RetrainError(f"[data].prompt_style = {data_cfg.prompt_style!r}: use one of {list(PROMPT_STYLES)}")
    if data_cfg.operand_digits < 1:
        raise RetrainError(f"[data].operand_digits = {data_cfg.operand_digits}: must be >= 1")
    if data_cfg.max_operand < 0 or data_cfg.max_operand > _MAX_OPERAND_LIMIT:
        raise RetrainError(f"[data].max_operand = {data_cfg.max_operand}: must be in [0, 2**62)")
    hi = operand_max(data_cfg.operand_digits, data_cfg.max_operand)
    if hi > _MAX_OPERAND_LIMIT:
        raise RetrainError(f"[data].operand_digits = {data_cfg.operand_digits} is too large; use at most 18 digits")
    n_train = data_cfg.max_examples if data_cfg.max_examples > 0 else DEFAULT_TRAIN_SIZE
    train_P, eval_P = generate(seed, n_train, max(eval_cfg.num_examples, 0), hi, _operations(data_cfg))
    style = data_cfg.prompt_style
    return Dataset(train=[to_example(p, style) for p in train_P], eval=[to_example(p, style) for p in eval_P])
