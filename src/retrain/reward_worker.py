"""Reward worker processes: every reward call runs in a child process that can be killed.

Why a process: a time limit inside the caller's process cannot stop C-level work that holds the GIL
(sympy raising `9^{9^{9^{9}}}` spends minutes in one big-integer multiplication; a thread waiting
with `join(timeout)` blocks its caller that long, and no signal handler runs either), and memory a
parse grabbed stays with the process. A worker can be SIGKILLed at the limit and respawned, and its
memory is capped by `RLIMIT_DATA` (a MemoryError there fails one call, not the run).

    pool = WorkerPool(reward, Limits(timeout_s=5.0, memory_mb=1024), workers=1)
    results = pool.run([(completion, reference, answer_format), ...])   # one CallResult per item
    pool.close()

`reward` is any picklable callable `(completion, reference, answer_format) -> float` (a module-level
function or an instance of a module-level class: pickle sends it by name, the worker imports it).

How a call is limited, in the worker:
- a SIGALRM interval timer at `timeout_s` raises in Python code (sympy's pure-Python loops), so most
  timeouts cost no respawn;
- the parent kills the worker at `timeout_s + KILL_GRACE_S` when the call has not returned (C-level
  work), counts a timeout and starts a new worker;
- `RLIMIT_DATA` = the worker's resting data size + `memory_mb`: past it allocations fail with
  MemoryError; the worker then reports the failure and exits, so the memory goes back to the system;
- `RLIMIT_CPU` is armed per call at the call's CPU budget + 2 s, so a worker whose parent died while
  it was inside a C call still dies (nothing else can interrupt it there).

The worker imports only what the reward needs (a fresh `python -c`, not a fork of the training
process with torch and its OpenMP threads), is started once and kept across steps, and never
outlives its parent: it exits when its lifeline pipe closes or its parent pid changes (checked every
second by a watcher thread), on an `exit` message, or at `close()` / garbage collection / interpreter
exit of the parent (`weakref.finalize`).

Throughput: items go to a worker in chunks (one pickle per chunk, not per completion). Each result
is written to the result socket as soon as its call ends, with the call's start and end on the
system-wide monotonic clock, but the parent does not wake up for each one: it sleeps on a separate
wake pipe that the worker writes to only when a chunk is done (or it is ready, or it dies: EOF), and
otherwise until the running call's deadline. At a deadline it first reads every result already
written, so the call it then kills is exactly the one that was running. A 128-completion step costs
the parent a handful of wake-ups instead of 128 round trips.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

try:  # POSIX only; without it the limits that need it are skipped (the kill still works)
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

Item = tuple[str, str, str]  # (completion, reference, answer_format)

# Time between the worker's own timer and the parent's kill: long enough for a Python-level
# timeout to unwind (no respawn needed), short enough that a caller waits at most limit + ~0.3 s.
KILL_GRACE_S = 0.25
# A worker that has not said "ready" after this long is broken (sympy imports in ~1 s).
START_TIMEOUT_S = 120.0
# A worker whose resident memory after a call exceeds its resting size by this share of
# memory_mb is replaced: memory a pathological call grabbed must not stay held (issue: 7.7 GB kept).
RECYCLE_SHARE = 0.5
_DETAIL_CHARS = 300  # error messages may quote the (huge) input; keep what is useful
# Items per chunk at most: a chunk's results wait in the result socket until the parent reads them,
# and 64 results (< 30 KB) always fit its buffer, so a worker never blocks on a sleeping parent.
MAX_CHUNK = 64
CHUNK_CHARS = 4_000_000


@dataclass(frozen=True)
class Limits:
    """Per-call limits: wall time (seconds) and memory above the worker's resting size (MB)."""

    timeout_s: float = 5.0
    memory_mb: int = 1024


@dataclass(frozen=True)
class CallResult:
    """One reward call as the caller saw it.

    status: "ok" (value is the reward), "failed" (raised, returned a non-number or NaN/inf, ran out of
    memory, or the worker died) or "timeout"; value is 0.0 unless ok. seconds: how long the call ran,
    from its start in the worker to its result (or to the kill). peak_mb: the worker's peak resident
    memory during the call (its own measurement; None when it could not be taken), to set against
    `WorkerPool.base_mb`, the worker's resting size.
    """

    value: float
    status: str
    detail: str = ""
    seconds: float = 0.0
    peak_mb: float | None = None


# ---------------------------------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------------------------------

_BOOT = (
    "import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
    "from retrain.reward_worker import _child_main; "
    "_child_main(*map(int, sys.argv[2:]))"
)


def _import_path() -> list[str]:
    """The parent's sys.path (the worker must import the reward and retrain from where the parent
    does: a source checkout, a test's plugin directory), as strings."""
    out = []
    for entry in sys.path:
        try:
            out.append(os.fsdecode(os.fspath(entry)))
        except TypeError:  # an importer object, not a path: nothing a child could use
            continue
    return out


def _take_chunk(todo: deque[int], items: list[Item], most: int) -> list[int]:
    """The next chunk of item indices: at most `most` items and, after the first, CHUNK_CHARS
    characters of completions (the worker holds a whole chunk in memory, under its memory limit)."""
    batch = [todo.popleft()]
    chars = len(items[batch[0]][0])
    while todo and len(batch) < most and chars + len(items[todo[0]][0]) <= CHUNK_CHARS:
        chars += len(items[todo[0]][0])
        batch.append(todo.popleft())
    return batch


class WorkerStartError(RuntimeError):
    """A worker could not start (the reward does not import or unpickle there, or it died)."""


class _Worker:
    """One child process and the parent's view of it: `conn` carries requests and results, `wake` is
    written to when the parent should look (chunk done, ready) and reads EOF when the child is gone,
    `lifeline` is never written: the child exits when it closes."""

    def __init__(self, payload: bytes):
        parent_sock, child_sock = socket.socketpair()
        wake_r, wake_w = os.pipe()
        life_r, life_w = os.pipe()
        self._life_w: int | None = life_w
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _BOOT,
                    json.dumps(_import_path()),
                    str(child_sock.fileno()),
                    str(wake_w),
                    str(life_r),
                    str(os.getpid()),
                ],
                pass_fds=(child_sock.fileno(), wake_w, life_r),
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        except BaseException:
            parent_sock.close()
            os.close(wake_r)
            os.close(life_w)
            raise
        finally:
            child_sock.close()
            os.close(wake_w)
            os.close(life_r)
        self.conn = Connection(parent_sock.detach())
        self.wake_fd = wake_r
        self._results = select.poll()  # "is a result waiting?" without a fresh selector each time
        self._results.register(self.conn.fileno(), select.POLLIN)
        self.started = time.monotonic()
        self.ready = False
        self.base_mb: float | None = None
        self.pending: deque[int] = deque()  # item indices sent, in the order they run
        self.head_start = 0.0  # when the first pending call started, at the latest (monotonic clock)
        try:
            self.conn.send_bytes(payload)
        except OSError:
            pass  # died at once; the wake pipe reports it

    @property
    def pid(self) -> int:
        return self.proc.pid

    def has_message(self) -> bool:
        return bool(self._results.poll(0))

    def peak_mb(self) -> float | None:
        """The worker's peak RSS since its last reset (the start of the current call), from /proc."""
        return _status_mb(f"/proc/{self.pid}/status").get("VmHWM")

    def kill(self) -> None:
        """SIGKILL; the exit is reaped later (`reap`), so the caller does not wait for the kernel to
        free a large address space."""
        try:
            self.proc.kill()
        except OSError:
            pass
        self._close_pipes()

    def stop(self, timeout: float = 1.0) -> None:
        """Ask the worker to exit (closing its lifeline does it), kill it if it does not, and reap it."""
        try:
            self.conn.send(("exit",))
        except (OSError, ValueError):
            pass
        self._close_pipes()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _close_pipes(self) -> None:
        if self._life_w is not None:
            os.close(self._life_w)
            os.close(self.wake_fd)
            self._life_w = None
        self.conn.close()


def _shutdown(workers: list[_Worker], dying: list[_Worker], owner_pid: int) -> None:
    """Finalizer: stop every worker this process started (not a forked copy's parent's workers)."""
    if os.getpid() != owner_pid:
        return
    for w in workers:
        w.stop()
    workers.clear()
    for w in dying:
        w.proc.wait()
    dying.clear()


class WorkerPool:
    """Runs reward calls in `workers` child processes under `limits`; see the module docstring.

    Thread-safe (calls from several threads run one batch at a time). `close()` stops the workers;
    they are also stopped when the pool is garbage-collected or the interpreter exits.
    """

    def __init__(self, reward: Callable[[str, str, str], float], limits: Limits, workers: int = 1):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if not sys.executable:
            raise WorkerStartError("cannot start a reward worker: sys.executable is empty")
        self.limits = limits
        self.size = workers
        self._payload = pickle.dumps(("init", reward, limits), protocol=pickle.HIGHEST_PROTOCOL)
        self._lock = threading.Lock()
        self.closed = False
        self._owner_pid = os.getpid()
        self._workers: list[_Worker] = []
        self._dying: list[_Worker] = []
        self._selector = selectors.DefaultSelector()  # the workers' wake pipes
        self.respawns = 0  # workers replaced after a kill, a crash or a memory recycle
        self.start_s: float | None = None  # the first worker's start cost (spawn to ready), seconds
        self.base_mb: float | None = None  # a worker's resident size at rest (MB), when measured
        self._last_death = ""
        self._finalizer = weakref.finalize(self, _shutdown, self._workers, self._dying, self._owner_pid)
        self._fill()

    # -- public ------------------------------------------------------------------------------

    def run(self, items: Sequence[Item]) -> list[CallResult]:
        """One CallResult per item, in order. Raises WorkerStartError only when no worker can start."""
        return self._locked(list(items), until_ready=False)

    def wait_ready(self) -> None:
        """Block until every worker has started (imports done, limits set): benchmarks and tests use
        it so a timing measures calls, not the interpreter start."""
        self._locked([], until_ready=True)

    def close(self) -> None:
        """Stop the workers now (idempotent)."""
        with self._lock:
            self.closed = True
            self._finalizer()

    def pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    # -- scheduling --------------------------------------------------------------------------

    def _locked(self, items: list[Item], until_ready: bool) -> list[CallResult]:
        with self._lock:
            if self.closed:
                raise RuntimeError("this reward worker pool is closed")
            if os.getpid() != self._owner_pid:  # a forked copy must not share its parent's workers
                self._adopt_after_fork()
            try:
                return self._run(items, until_ready)
            except BaseException:
                # Interrupted (Ctrl-C) or failed: calls still in flight would answer the next batch.
                for w in [w for w in self._workers if w.pending]:
                    w.pending.clear()
                    self._replace(w)
                raise

    def _run(self, items: list[Item], until_ready: bool) -> list[CallResult]:
        results: list[CallResult | None] = [None] * len(items)
        todo: deque[int] = deque(range(len(items)))
        # A few chunks per worker, so one slow call does not hold back a whole share of the batch.
        chunk = max(1, min(MAX_CHUNK, math.ceil(len(items) / (4 * self.size))))
        hard_limit = self.limits.timeout_s + KILL_GRACE_S
        self._failed_starts = 0
        while todo or any(w.pending or (until_ready and not w.ready) for w in self._workers):
            self._reap()
            self._fill()
            for w in self._workers:
                if w.ready and not w.pending and todo:
                    batch = _take_chunk(todo, items, chunk)
                    w.pending.extend(batch)
                    w.head_start = time.monotonic()
                    try:
                        w.conn.send(("run", [(i, *items[i]) for i in batch]))
                    except OSError:
                        pass  # died: its wake pipe reports EOF and the items are requeued
            deadlines = [
                w.head_start + hard_limit if w.ready else w.started + START_TIMEOUT_S
                for w in self._workers
                if w.pending or not w.ready
            ]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            woken = [key.data for key, _ in self._selector.select(timeout)]
            for w in list(self._workers):
                if w in woken:
                    alive = self._drain_wake(w)
                    self._read(w, results, todo)
                    if not alive and w in self._workers:
                        self._lost(w, results, todo, self._death_detail(w))
                elif w.pending or not w.ready:
                    self._read(w, results, todo)  # a deadline passed: catch up on what finished
                if w in self._workers:
                    self._check_deadline(w, results, todo, hard_limit)
            if self._failed_starts >= 3:
                raise WorkerStartError(f"the reward worker failed to start 3 times (last: {self._last_death})")
        return results  # type: ignore[return-value]

    def _drain_wake(self, w: _Worker) -> bool:
        """Empty `w`'s wake pipe; False when it is closed (the worker is gone)."""
        data = os.read(w.wake_fd, 4096)
        return bool(data)

    def _read(self, w: _Worker, results: list[CallResult | None], todo: deque[int]) -> None:
        """Every message `w` has written so far."""
        while w in self._workers and w.has_message():
            try:
                msg = w.conn.recv()
            except (EOFError, OSError):
                return  # the wake pipe's EOF reports the death
            if msg[0] == "ready":
                w.ready, w.base_mb = True, msg[1]["base_mb"]
                self._failed_starts = 0
                if self.start_s is None:
                    self.start_s = time.monotonic() - w.started
                self.base_mb = w.base_mb
            elif msg[0] == "start-error":
                self._replace(w)
                raise WorkerStartError(msg[1])
            elif msg[0] == "started":
                w.head_start = msg[1]
            else:
                self._take_result(w, msg, results, todo)

    def _take_result(
        self, w: _Worker, msg: tuple[Any, ...], results: list[CallResult | None], todo: deque[int]
    ) -> None:
        _, i, status, value, detail, peak_mb, start, end, recycle = msg
        if not w.pending or w.pending[0] != i:  # cannot happen: results come in send order
            raise RuntimeError(f"reward worker answered item {i}, expected {list(w.pending)[:1]}")
        w.pending.popleft()
        results[i] = CallResult(value, status, detail, end - start, peak_mb)
        w.head_start = end  # the next call starts as this one ends
        if recycle:  # it exits after this message; the rest of its chunk goes to a fresh worker
            self._lost(w, results, todo, None)

    def _check_deadline(
        self, w: _Worker, results: list[CallResult | None], todo: deque[int], hard_limit: float
    ) -> None:
        now = time.monotonic()
        if w.pending and w.ready and now >= w.head_start + hard_limit:
            i = w.pending.popleft()
            results[i] = CallResult(
                0.0,
                "timeout",
                f"timed out after {self.limits.timeout_s:g} s (worker killed: the call did not return)",
                now - w.head_start,
                w.peak_mb(),
            )
            self._lost(w, results, todo, None)
        elif not w.ready and now >= w.started + START_TIMEOUT_S:
            self._failed_starts += 1
            self._last_death = f"not ready after {START_TIMEOUT_S:g} s"
            self._lost(w, results, todo, self._last_death)

    def _lost(self, w: _Worker, results: list[CallResult | None], todo: deque[int], detail: str | None) -> None:
        """Worker `w` is gone (killed, crashed, recycled): fail its head call if `detail` says it
        crashed during one, put the rest of its chunk back at the front of the queue, replace it."""
        if detail is not None:
            if not w.ready:
                self._failed_starts += 1
                self._last_death = detail
            elif w.pending:
                i = w.pending.popleft()
                results[i] = CallResult(
                    0.0,
                    "failed",
                    f"the reward worker died during the call ({detail})",
                    time.monotonic() - w.head_start,
                    None,
                )
        todo.extendleft(reversed(w.pending))
        w.pending.clear()
        self._replace(w)

    def _replace(self, w: _Worker) -> None:
        self._selector.unregister(w.wake_fd)
        w.kill()
        self._dying.append(w)
        self._workers.remove(w)
        self.respawns += 1
        self._fill()  # start the replacement now: it imports while the caller goes on

    def _fill(self) -> None:
        while len(self._workers) < self.size:
            w = _Worker(self._payload)
            self._selector.register(w.wake_fd, selectors.EVENT_READ, w)
            self._workers.append(w)

    def _reap(self) -> None:
        self._dying[:] = [w for w in self._dying if w.proc.poll() is None]

    def _death_detail(self, w: _Worker) -> str:
        try:
            code = w.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return "connection lost"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    def _adopt_after_fork(self) -> None:
        # The pipes belong to the parent's workers; drop them without touching those processes.
        self._workers.clear()
        self._dying.clear()
        self._selector = selectors.DefaultSelector()
        self._owner_pid = os.getpid()
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _shutdown, self._workers, self._dying, self._owner_pid)


# ---------------------------------------------------------------------------------------------
# Child side (runs in the worker process; imports nothing beyond the standard library itself)
# ---------------------------------------------------------------------------------------------


class _SoftTimeout(BaseException):
    # BaseException, so a reward's own `except Exception:` cannot swallow the time limit.
    pass


_armed = False


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    if _armed:
        raise _SoftTimeout


def _status_mb(path: str = "/proc/self/status") -> dict[str, float]:
    """VmRSS / VmHWM / VmData of a process in MB (Linux); {} where /proc is unavailable."""
    try:
        with open(path, "rb") as f:
            return _parse_status(f.read())
    except OSError:
        return {}


def _parse_status(data: bytes) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in (b"VmRSS:", b"VmHWM:", b"VmData:"):
        at = data.find(key)
        if at >= 0:
            out[key[:-1].decode()] = int(data[at + len(key) : data.index(b"kB", at)]) / 1024
    return out


class _MemoryProbe:
    """This process's peak resident memory per call (Linux): reset the peak counter (VmHWM) before a
    call, read it after. `getrusage().ru_maxrss` cannot do it: it keeps the parent's peak across the
    vfork+exec that started us. The files stay open (a call costs ~50 µs, mostly the kernel writing
    /proc/self/status)."""

    def __init__(self) -> None:
        try:
            self._status = os.open("/proc/self/status", os.O_RDONLY)
            self._clear = os.open("/proc/self/clear_refs", os.O_WRONLY)
            os.write(self._clear, b"5")
        except OSError:
            self._status = self._clear = -1

    def reset(self) -> bool:
        if self._clear < 0:
            return False
        try:
            os.write(self._clear, b"5")
            return True
        except OSError:
            return False

    def read(self) -> dict[str, float]:
        if self._status < 0:
            return {}
        return _parse_status(os.pread(self._status, 8192, 0))


def _watch_parent(life_fd: int, parent_pid: int) -> None:
    """Exit as soon as the parent is gone: its end of the lifeline pipe closes (EOF) or we are
    re-parented. Runs in a daemon thread, so it acts whenever the main thread releases the GIL."""

    def loop() -> None:
        while True:
            readable, _, _ = select.select([life_fd], [], [], 1.0)
            if readable or os.getppid() != parent_pid:
                os._exit(0)

    threading.Thread(target=loop, name="retrain-reward-lifeline", daemon=True).start()


def _as_float(value: Any) -> float | None:
    """A reward's return value as a float: bools, ints, floats, numpy/torch scalars; None otherwise.

    Strings are refused even when numeric ("1.0"): returning text is a bug in the reward to surface.
    """
    if isinstance(value, str | bytes) or not hasattr(value, "__float__"):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):  # e.g. a multi-element array, a huge int
        return None


def _call(reward: Callable[..., Any], item: tuple[str, ...], timeout_s: float) -> tuple[str, float, str]:
    """(status, value, detail) of one call under the soft timer and the per-call CPU limit."""
    global _armed
    if resource is not None:
        used = resource.getrusage(resource.RUSAGE_SELF)
        budget = int(used.ru_utime + used.ru_stime + timeout_s) + 2
        resource.setrlimit(resource.RLIMIT_CPU, (budget, _cpu_hard))
    try:
        try:
            _armed = True
            signal.setitimer(signal.ITIMER_REAL, timeout_s)
            value = reward(*item)
        finally:
            # The timer may fire inside this block: then _SoftTimeout leaves it, as a timeout.
            _armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _SoftTimeout:
        return "timeout", 0.0, f"timed out after {timeout_s:g} s"
    except MemoryError:
        return "memory", 0.0, "ran out of memory"
    except BaseException as e:  # the reward's bug, SystemExit included: counted, never fatal
        return "failed", 0.0, f"raised {type(e).__name__}: {e}"[:_DETAIL_CHARS]
    finally:
        # Disarmed between calls: an idle worker's watcher thread must not use up a call's budget.
        if resource is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (resource.RLIM_INFINITY, _cpu_hard))
    number = _as_float(value)
    if number is None:
        return "failed", 0.0, f"returned {type(value).__name__} {value!r}, not a number"[:_DETAIL_CHARS]
    if not math.isfinite(number):
        return "failed", 0.0, f"returned {number}"
    return "ok", number, ""


_cpu_hard = -1


def _child_main(fd: int, wake_fd: int, life_fd: int, parent_pid: int) -> None:
    global _cpu_hard
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    signal.signal(signal.SIGALRM, _on_alarm)
    _watch_parent(life_fd, parent_pid)
    conn = Connection(fd)
    if resource is not None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGXCPU must not leave core files behind
        _cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    try:
        _, reward, limits = pickle.loads(conn.recv_bytes())
        warm_up = getattr(reward, "warm_up", None)
        if warm_up is not None:
            warm_up()  # lazy imports and first-parse costs, outside any call's time limit
    except BaseException as e:
        conn.send(("start-error", f"reward worker could not load the reward: {type(e).__name__}: {e}"))
        os.write(wake_fd, b"!")
        return
    probe = _MemoryProbe()
    rest = _status_mb()
    base_mb = rest.get("VmRSS", 0.0)
    if resource is not None and "VmData" in rest and limits.memory_mb > 0:
        hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
        cap = int((rest["VmData"] + limits.memory_mb) * 2**20)
        resource.setrlimit(resource.RLIMIT_DATA, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    conn.send(("ready", {"base_mb": base_mb, "pid": os.getpid()}))
    os.write(wake_fd, b"!")
    recycle_above = base_mb + RECYCLE_SHARE * limits.memory_mb if limits.memory_mb > 0 else math.inf
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] != "run":
            return
        chunk = msg[1]
        # When the first call starts: a big chunk (megabyte completions) takes a while to arrive, and
        # that must not count against its first call's limit.
        conn.send(("started", time.monotonic()))
        for n, (i, *item) in enumerate(chunk, 1):
            measured = probe.reset()
            start = time.monotonic()
            status, value, detail = _call(reward, tuple(item), limits.timeout_s)
            end = time.monotonic()
            after = probe.read()
            peak = after.get("VmHWM") if measured else None
            recycle = status == "memory" or after.get("VmRSS", 0.0) > recycle_above
            if status == "memory":
                status, detail = "failed", f"exceeded the memory limit ({limits.memory_mb} MB per call)"
            conn.send(("result", i, status, value, detail, peak, start, end, recycle))
            if recycle or n == len(chunk):
                os.write(wake_fd, b"!")  # the parent sleeps until a chunk is done or a deadline
            if recycle:
                return  # exit, returning the memory; the parent starts a fresh worker
