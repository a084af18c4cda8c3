"""One writer per run dir and per campaign dir: an exclusive lock whose error names its holder.

    with dir_lock(run_dir, "run"):          # LockHeld (exit 2) if another process holds it
        ...                                 # train or resume; released however the block ends

Why a kernel lock: `flock` on `<dir>/.retrain.lock` is released by the kernel when its holder
exits, however it exits (kill -9, OOM, a crashed node's lease expiring on NFS). So a lock left by a
dead process is simply free to take: no pid test decides it, and a recycled pid or a process on
another host can never be mistaken for the holder. The file itself stays (unlinking a lock file
races with a process about to lock it); after taking the lock the holder writes a record into it
(pid, host, start time, command) that is used only to word the message a second process gets.

Shared filesystems: Linux NFS clients turn `flock` into a server-side byte-range lock (NFSv4,
NLM), so two hosts exclude each other. Where a filesystem refuses locks (ENOLCK, EOPNOTSUPP: some
FUSE mounts) the record decides instead: a holder on this host is alive only if its pid exists
with the start time it recorded (pid reuse), and a holder on another host is assumed alive (the
message says how to clear it). `is_locked(dir)` asks the same question read-only, for `status`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

from retrain.errors import RetrainError
from retrain.jsonio import now_iso

LOCK_NAME = ".retrain.lock"
# errnos meaning "this filesystem does not do locks" rather than "someone holds it".
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
_HELD = {errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES}


class LockHeld(RetrainError):
    """Another live process holds the lock; `holder` is its record (may be {} if it had not written one yet)."""

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot, from /proc), or None where unknown.

    Together with the pid it names one process for good: a recycled pid has a later start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) is in parentheses and may hold spaces.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def holder_record(kind: str) -> dict:
    pid = os.getpid()
    return {
        "kind": kind,
        "pid": pid,
        "host": socket.gethostname(),
        "since": now_iso(),
        "pid_start": process_start_time(pid),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def read_holder(directory: Path | str, tries: int = 10) -> dict:
    """The record the current (or last) holder wrote; {} when none can be read.

    A holder writes its record just after locking, so an empty file is retried briefly."""
    path = Path(directory) / LOCK_NAME
    for _ in range(tries):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return {}
        if text.strip():
            try:
                doc = json.loads(text)
            except ValueError:
                return {}
            return doc if isinstance(doc, dict) else {}
        time.sleep(0.02)
    return {}


def describe_holder(holder: dict) -> str:
    """'pid 123 on host gpu-7 since 2025-02-15T14:30:22+01:00 (retrain resume logs/x)'."""
    if not holder:
        return "another process (it has not written its record yet)"
    text = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {holder.get('since', '?')}"
    if holder.get("command"):
        text += f" ({holder['command']})"
    return text


def _record_holder_alive(holder: dict) -> bool:
    """For filesystems without locks: whether the process a record names still runs."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if holder.get("host") != socket.gethostname():
        return True  # cannot look at another host's processes: assume it runs (the message says how to clear)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    started = process_start_time(pid)
    return started is None or holder.get("pid_start") in (None, started)


class DirLock:
    """An exclusive lock on a directory (which must exist). `acquire()` raises LockHeld; `release()` is idempotent."""

    def __init__(self, directory: Path | str, kind: str = "run"):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.kind = kind
        self._fd: int | None = None
        self._record_only = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DirLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            self._flock(fd)
        except OSError as e:
            if e.errno in _HELD:
                os.close(fd)
                raise self._held_error(read_holder(self.directory)) from None
            if e.errno not in _NO_LOCKS:
                os.close(fd)
                raise
            holder = read_holder(self.directory)
            if holder and _record_holder_alive(holder) and holder.get("pid") != os.getpid():
                os.close(fd)
                raise self._held_error(holder, record_only=True) from None
            self._record_only = True
        self._fd = fd
        self._write_record(holder_record(self.kind))
        return self

    def _flock(self, fd: int) -> None:
        """Take the lock or raise. A holder with no record yet is either a run that is just starting
        or `retrain status` peeking with a shared lock for a moment: give it a short while."""
        for attempt in range(20):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as e:
                if e.errno not in _HELD or read_holder(self.directory, tries=1) or attempt == 19:
                    raise
                time.sleep(0.05)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self._write_record(None)  # an empty record: nobody holds it (matters where the record decides)
        os.close(self._fd)  # closing the only descriptor releases the flock
        self._fd = None

    def _write_record(self, record: dict | None) -> None:
        text = (json.dumps(record) + "\n").encode() if record else b""
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, text, 0)

    def _held_error(self, holder: dict, record_only: bool = False) -> LockHeld:
        what = {"run": "run dir", "campaign": "campaign dir"}.get(self.kind, "directory")
        fix = {
            "run": "wait for it to finish, stop it, or choose another [logging].log_dir",
            "campaign": "wait for it to finish or stop it (Ctrl-C, or kill its pid); `retrain status` shows its progress",
        }.get(self.kind, "wait for it to finish")
        msg = f"{self.directory}: this {what} is in use by {describe_holder(holder)}; {fix}"
        if record_only:
            msg += (
                f". (This filesystem has no file locks, so only the record in {self.path} says so; if that "
                "process is really gone, delete the file.)"
            )
        return LockHeld(msg, holder)

    def __enter__(self) -> Self:
        if not self.held:
            self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def dir_lock(directory: Path | str, kind: str = "run") -> Iterator[DirLock]:
    """Hold an exclusive lock on `directory` for the block (see the module docstring)."""
    lock = DirLock(directory, kind).acquire()
    try:
        yield lock
    finally:
        lock.release()


def is_locked(directory: Path | str) -> bool | None:
    """Whether some process holds `directory`'s lock now; None when there is no lock file or no way to tell.

    Read-only (a shared lock attempt on a read-only descriptor), so `retrain status` may call it."""
    path = Path(directory) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in _HELD:
            return True
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
