"""A counting semaphore shared by the processes of one machine: N lock files, one `flock` each.

    limiter = FileLimiter(Path("logs/campaign_x/tinker_limiter"), slots=4)
    with limiter.slot():              # blocks until one of the 4 slots is free
        send_request()
    token = limiter.acquire()         # or hold a slot across threads: release it from a callback
    future.add_done_callback(lambda _: limiter.release(token))

Why lock files: the kernel drops an `flock` when the process holding it dies, even by SIGKILL, so a
crashed run never leaks a slot: no stale-lock cleanup, no daemon. Every process on one host that
opens the same directory shares the N slots (a campaign's process executor, or several campaigns
pointed at one directory). Ray workers on other nodes count alone: the limit is per machine.
Where `fcntl` does not exist (Windows), the slots are shared by this process's threads only.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

POLL_S = 0.02  # first wait between tries when every slot is busy; grows to POLL_MAX_S
POLL_MAX_S = 0.5


class FileLimiter:
    """At most `slots` holders at once among every process using `directory` (see module docstring)."""

    def __init__(self, directory: str | os.PathLike, slots: int):
        if slots < 1:
            raise ValueError(f"a limiter needs at least one slot, got {slots}")
        self.directory = Path(directory)
        self.slots = slots
        self._local = threading.BoundedSemaphore(slots)  # this process's threads never exceed it either
        if fcntl is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    def acquire(self) -> int | None:
        """Block until a slot is free; returns the token to pass to `release`."""
        self._local.acquire()
        if fcntl is None:
            return None
        wait = POLL_S
        while True:
            for index in random.sample(range(self.slots), self.slots):  # spread holders over the files
                fd = os.open(self.directory / f"slot_{index}.lock", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return fd
                except BlockingIOError:
                    os.close(fd)
            time.sleep(wait * (0.5 + random.random()))  # jitter: waiting processes do not retry in step
            wait = min(wait * 2, POLL_MAX_S)

    def release(self, token: int | None) -> None:
        """Give back the slot `acquire` returned (closing the file drops the lock)."""
        if token is not None:
            os.close(token)
        self._local.release()

    @contextmanager
    def slot(self) -> Iterator[None]:
        token = self.acquire()
        try:
            yield
        finally:
            self.release(token)
