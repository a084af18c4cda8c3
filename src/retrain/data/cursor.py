"""Seeded, resumable order over a training set: which example indices each step draws."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from retrain.errors import RetrainError


def seeded_rng(seed: int, stream: str, *extra: int) -> np.random.Generator:
    """An independent generator per (seed, stream name, extra ints), stable across processes and versions.

    The stream name goes through crc32 (not `hash()`, which is salted per process) so that, e.g., the
    arithmetic train and eval streams of one seed never share draws, and a restarted run re-derives them.
    Negative seeds are folded into [0, 2**64) because numpy's SeedSequence takes non-negative entropy.
    """
    return np.random.default_rng([zlib.crc32(stream.encode()), seed % 2**64, *extra])


class Cursor:
    """Yields example indices in a seeded permutation, reshuffled every epoch, resumable mid-epoch.

    The permutation of epoch e is a pure function of (seed, e), so `state_dict()` needs only
    `{"epoch", "position"}` and a restored cursor continues exactly where the saved one stopped. With
    `shuffle=False` every epoch is 0..n-1 in order.

    >>> c = Cursor(5, seed=0)
    >>> first = c.next_batch(3); state = c.state_dict(); rest = c.next_batch(4)
    >>> d = Cursor(5, seed=0); d.load_state_dict(state); d.next_batch(4) == rest
    True
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        if n <= 0:
            raise RetrainError(f"cannot draw batches from an empty training set (n = {n})")
        self.n = n
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0
        self._order_epoch = -1
        self._order: list[int] = []

    def _epoch_order(self) -> list[int]:
        """The permutation for self.epoch, computed once per epoch."""
        if self._order_epoch != self.epoch:
            if self.shuffle:
                perm = seeded_rng(self.seed, "cursor", self.epoch).permutation(self.n)
                self._order = [int(i) for i in perm]
            else:
                self._order = list(range(self.n))
            self._order_epoch = self.epoch
        return self._order

    def __iter__(self) -> Cursor:
        return self

    def __next__(self) -> int:
        if self.position >= self.n:
            self.epoch += 1
            self.position = 0
        index = self._epoch_order()[self.position]
        self.position += 1
        return index

    def next_batch(self, k: int) -> list[int]:
        """The next k indices; a batch that crosses an epoch end continues into the next permutation."""
        if k < 0:
            raise ValueError(f"batch size must be >= 0, got {k}")
        return [next(self) for _ in range(k)]

    def state_dict(self) -> dict[str, Any]:
        """`{"epoch", "position"}`: JSON-able, enough to resume (the permutation is re-derived)."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict()` taken from a cursor with the same n, seed and shuffle."""
        try:
            epoch, position = int(state["epoch"]), int(state["position"])
        except (KeyError, TypeError, ValueError) as e:
            raise RetrainError(
                f"cursor state {state!r} is not valid: expected {{'epoch': int, 'position': int}}"
            ) from e
        if epoch < 0 or not 0 <= position <= self.n:
            raise RetrainError(
                f"cursor state {state!r} does not fit a training set of {self.n} examples "
                "(did the data config change since the checkpoint?)"
            )
        self.epoch, self.position = epoch, position
