"""Data sources: a source yields examples; the run draws batches through a seeded Cursor."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    prompt: str  # the user message (the backend applies the chat template)
    answer: str  # the reference the reward compares against
    id: str = ""


@dataclass
class Dataset:
    train: list[Example]
    eval: list[Example]  # held out: never drawn for training
