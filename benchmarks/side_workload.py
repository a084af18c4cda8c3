"""The side-by-side workload, shared by retrain and the TRL child (stdlib only).

4 prompts × 8 completions of ≤ 32 tokens per step; prompts "What is A + B? Put the answer in
\\boxed{}." (A, B in 10..99, seeded); a continuous reward (the share of digit characters in the
completion) so that no group ties and both trainers train on all 32 completions of every step.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

N_PROMPTS, GROUP, MAX_TOKENS, TEMPERATURE, LR = 4, 8, 32, 1.0, 1e-5
LORA_RANK, LORA_ALPHA, LORA_DROPOUT = 16, 32, 0.05
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def problems(n: int = 64, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        rows.append({"prompt": f"What is {a} + {b}? Put the answer in \\boxed{{}}.", "answer": str(a + b)})
    return rows


def write_problems(path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in problems()), encoding="utf-8")
    return path


def digit_frac(completion, reference=None, **kw) -> float:
    """retrain custom reward `(completion, reference) -> float`: share of digit characters."""
    text = completion[0]["content"] if isinstance(completion, list) else completion
    return sum(ch.isdigit() for ch in text) / max(len(text), 1)


def trl_reward(completions, **kw) -> list[float]:
    """TRL reward function (a list of completions in, a list of floats out)."""
    return [digit_frac(c) for c in completions]
