"""Custom rewards that misbehave, for tests/test_reward_worker.py (imported by name in the worker)."""

from __future__ import annotations

import os
import sys
import time

_kept: list[bytearray] = []


def exact(completion: str, reference: str) -> float:
    return 1.0 if completion.strip() == reference.strip() else 0.0


def c_loop(completion: str, reference: str) -> float:
    """Minutes of C-level work holding the GIL (the built-in `sum` over a range never returns to the
    interpreter, so no signal handler and no other thread runs until it ends; `pow` would check)."""
    return float(sum(range(10**12)) % 2)


def slow(completion: str, reference: str) -> float:
    time.sleep(5)
    return 1.0


def spin(completion: str, reference: str) -> float:
    while True:
        pass


def swallow(completion: str, reference: str) -> float:
    try:
        time.sleep(5)
    except Exception:
        return 1.0
    return 1.0


def sleepy(completion: str, reference: str) -> float:
    """Sleeps as many seconds as the completion says, then is right."""
    time.sleep(float(completion))
    return 1.0


def hog(completion: str, reference: str) -> float:
    """Asks for 3 GB at once."""
    return float(len(bytearray(3 * 2**30)) > 0)


def grow(completion: str, reference: str) -> float:
    """Allocates 50 MB at a time (touching it) until something stops it."""
    chunks = []
    while True:
        chunks.append(bytearray(50 * 2**20))


def keep(completion: str, reference: str) -> float:
    """Keeps `completion` MB alive after returning (a leak)."""
    _kept.append(bytearray(int(completion) * 2**20))
    return 1.0


def rss_mb(completion: str, reference: str) -> float:
    """The worker's resident memory now (MB)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def torch_loaded(completion: str, reference: str) -> float:
    return 1.0 if "torch" in sys.modules else 0.0


def pid(completion: str, reference: str) -> float:
    return float(os.getpid())


def bad_exit(completion: str, reference: str) -> float:
    os._exit(3)


def segfault(completion: str, reference: str) -> float:
    import ctypes

    return float(ctypes.string_at(0))


def fails_on_held_out(completion: str, reference: str) -> float:
    """Raises for the held-out examples (answer "held-out"), scores the rest exactly."""
    if reference == "held-out":
        raise ValueError("no score for held-out examples")
    return exact(completion, reference)
