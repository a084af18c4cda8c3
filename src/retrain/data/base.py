"""Data sources: a source yields examples; the run draws batches through a seeded Cursor."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    prompt: str  # the user message (the backend applies the chat template)
    answer: str  # the reference the reward compares against
    id: str = ""
    # How the reward extracts the model's answer: "boxed" = last \boxed{...} (the default);
    # "number" = last number in the text. The arithmetic source uses "number" because SmolLM2-135M
    # never writes \boxed{} (measured: 0/40 boxed answers over 4 prompt wordings, 11-30% last-number).
    answer_format: str = "boxed"


@dataclass
class Dataset:
    train: list[Example]
    eval: list[Example]  # held out: never drawn for training
