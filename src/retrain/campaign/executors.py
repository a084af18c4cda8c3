"""Executors: how a campaign's runs get executed. They only run jobs; the grid and manifest are elsewhere.

One interface::

    executor.run(jobs, on_start, on_finish)

`jobs` is a list of `Job(name, run_dir)`, each `run_dir` holding a resolved `config.toml`; the executor
calls `on_start(job)` when it launches a run and `on_finish(job, outcome)` when the run ends, always from
the calling thread. A failed run is reported and the others go on. On KeyboardInterrupt (Ctrl-C, or
SIGTERM turned into one by the runner) an executor stops its children cleanly and re-raises; the runs
it had started are resumable with `retrain resume`.

Example (run two prepared run dirs in two local processes)::

    from retrain.campaign.executors import Job, ProcessExecutor
    jobs = [Job("grpo+none_s42", Path("logs/c/runs/grpo+none_s42").resolve()), ...]
    ProcessExecutor(max_workers=2).run(jobs, on_start=print, on_finish=lambda j, o: print(j.name, o.state))
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from retrain.errors import RetrainError
from retrain.jsonio import read_json
from retrain.secrets import ENV_PREFIX as SECRET_ENV_PREFIX

STDOUT_NAME = "stdout.log"
STDERR_NAME = "stderr.log"
# A child gets this long to finish its own Ctrl-C handling (save run.json) before SIGTERM, then SIGKILL.
GRACE_S = 15.0
POLL_S = 0.2


@dataclass(frozen=True)
class Job:
    name: str
    run_dir: Path  # absolute; holds config.toml (and, once started, run.json, metrics.jsonl, ...)


@dataclass(frozen=True)
class Outcome:
    state: str  # "completed" | "failed" | "interrupted"
    returncode: int | None
    error: str | None = None


class Executor(Protocol):
    name: str
    captures_output: bool  # True when each run's stdout/stderr go to <run_dir>/stdout.log, stderr.log

    def run(
        self,
        jobs: Sequence[Job],
        on_start: Callable[[Job], None],
        on_finish: Callable[[Job, Outcome], None],
    ) -> None: ...


def read_run_status(run_dir: Path) -> str | None:
    """The `status` a run wrote in its run.json, or None when there is no readable run.json."""
    return read_json(Path(run_dir) / "run.json").get("status")


def classify(returncode: int | None, run_status: str | None) -> str:
    """A run's final state from its exit code and what it wrote in run.json.

    The run's own record wins where it is definite ("interrupted", "failed"); otherwise exit code 0
    is completed, 130 / SIGINT / SIGTERM are an interruption (resumable), anything else a failure.
    """
    if run_status in ("interrupted", "failed"):
        return run_status
    if returncode == 0:
        return "completed"
    if returncode in (130, -signal.SIGINT, -signal.SIGTERM):
        return "interrupted"
    return "failed"


def resume_command(run_dir: Path) -> list[str]:
    """The child command that starts or continues one run: `python -P -m retrain resume RUN_DIR`.

    `-P`: `python -m` would put the working directory first on sys.path, so a stray `tomli_w.py`
    or `torch.py` there would be imported instead of the installed package. Plugins named in the
    TOML still resolve from the working directory (retrain/rl/registry.py appends it, last)."""
    return [sys.executable, "-P", "-m", "retrain", "resume", str(run_dir)]


def resolve_workers(max_workers: int, n_jobs: int, cpu_count: int) -> int:
    """Workers to use: `max_workers` when > 0, else one per job up to the CPU count; at least 1."""
    limit = max_workers if max_workers > 0 else min(n_jobs, cpu_count)
    return max(1, min(limit, max(n_jobs, 1)))


def threads_per_worker(workers: int, cpu_count: int) -> int:
    """CPU threads each of `workers` concurrent torch processes should use: cpu_count // workers, ≥ 1.

    Without it every child starts one thread per core and N children oversubscribe the CPU N-fold.
    """
    return max(1, cpu_count // max(workers, 1))


def wants_gpu(device: str, cuda_available: bool) -> bool:
    """Whether a run on `device` ("auto", "cpu", "cuda", "cuda:N") needs a GPU where CUDA is `cuda_available`."""
    if device.startswith("cuda"):
        return True
    return device == "auto" and cuda_available


class SequentialExecutor:
    """Runs in this process, one after the other, via `retrain.run.resume(run_dir)`.

    An exception escaping a run is recorded as a failure and the next run starts.
    """

    name = "sequential"
    captures_output = False

    def __init__(self, run_fn: Callable[[str], int] | None = None):
        self._run_fn = run_fn

    def _resume(self, run_dir: Path) -> int:
        if self._run_fn is not None:
            return self._run_fn(str(run_dir))
        # Imported late: torch and transformers load with it.
        from retrain.run import resume

        return resume(str(run_dir))

    def run(self, jobs, on_start, on_finish) -> None:
        for job in jobs:
            on_start(job)
            try:
                rc = self._resume(job.run_dir)
            except Exception as e:  # a broken run must not take the rest of the campaign down
                logging.getLogger(__name__).exception("run %s raised", job.name)
                on_finish(job, Outcome("failed", 1, f"{type(e).__name__}: {e}"))
                continue
            state = classify(rc, read_run_status(job.run_dir))
            on_finish(job, Outcome(state, rc))
            if state == "interrupted":
                # The run swallowed the Ctrl-C and returned; the campaign must stop too.
                raise KeyboardInterrupt


def _open_logs(run_dir: Path):
    """Append (never truncate: a resumed run keeps its earlier output) to the run's stdout/stderr logs."""
    return open(run_dir / STDOUT_NAME, "ab"), open(run_dir / STDERR_NAME, "ab")


def _stop_process(proc: subprocess.Popen, grace_s: float) -> int | None:
    """SIGINT (the run saves its state), then SIGTERM, then SIGKILL; returns the exit code.

    A terminal's Ctrl-C already reached the child (same process group), so it first gets a moment
    to stop on its own: a second SIGINT could cut its cleanup short.
    """
    steps = ((None, 1.0), (signal.SIGINT, grace_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0))
    for sig, wait_s in steps:
        if proc.poll() is not None:
            break
        try:
            if sig is not None:
                proc.send_signal(sig)
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting, kill
            proc.kill()
            proc.wait()
    return proc.poll()


class ProcessExecutor:
    """Up to `max_workers` local subprocesses `python -m retrain resume RUN_DIR` at a time.

    Each child writes to `<run_dir>/stdout.log` and `stderr.log` (appended). With `max_workers` ≤ 0,
    one worker per run up to the CPU count. Children get `OMP_NUM_THREADS = cpus // workers` unless
    the environment sets it, so concurrent CPU runs do not oversubscribe the machine.
    """

    name = "processes"
    captures_output = True

    def __init__(
        self,
        max_workers: int = 0,
        command: Callable[[Path], list[str]] = resume_command,
        grace_s: float = GRACE_S,
    ):
        self.max_workers = max_workers
        self._command = command
        self.grace_s = grace_s

    def _child_env(self, workers: int) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(threads_per_worker(workers, os.cpu_count() or 1)))
        return env

    def run(self, jobs, on_start, on_finish) -> None:
        workers = resolve_workers(self.max_workers, len(jobs), os.cpu_count() or 1)
        env = self._child_env(workers)
        pending = deque(jobs)
        active: dict[str, tuple[Job, subprocess.Popen, tuple]] = {}
        try:
            while pending or active:
                while pending and len(active) < workers:
                    job = pending.popleft()
                    logs = _open_logs(job.run_dir)
                    on_start(job)
                    try:
                        proc = subprocess.Popen(
                            # cwd inherited: relative paths in the TOML ([data].path, plugin
                            # modules) mean what they meant where `retrain` was started.
                            self._command(job.run_dir), stdout=logs[0], stderr=logs[1], env=env,
                            stdin=subprocess.DEVNULL,
                        )  # fmt: skip
                    except OSError as e:
                        for f in logs:
                            f.close()
                        on_finish(job, Outcome("failed", None, f"could not start: {e}"))
                        continue
                    active[job.name] = (job, proc, logs)
                for name, (job, proc, logs) in list(active.items()):
                    rc = proc.poll()
                    if rc is None:
                        continue
                    for f in logs:
                        f.close()
                    del active[name]
                    on_finish(
                        job,
                        Outcome(
                            classify(rc, read_run_status(job.run_dir)),
                            rc,
                            None if rc == 0 else f"exit code {rc}; see {job.run_dir / STDERR_NAME}",
                        ),
                    )
                time.sleep(POLL_S)
        except BaseException:
            # Ctrl-C (or anything else): no orphan may keep training after the runner is gone.
            for job, proc, logs in active.values():
                rc = _stop_process(proc, self.grace_s)
                for f in logs:
                    f.close()
                done = classify(rc, read_run_status(job.run_dir)) == "completed"
                on_finish(job, Outcome("completed" if done else "interrupted", rc))
            raise


def _ray_run_job(run_dir: str, command: list[str] | None, grace_s: float, driver_cwd: str) -> int:
    """Body of one Ray task: run `python -m retrain resume RUN_DIR` on the worker, output to the run dir.

    A subprocess (rather than training inside the Ray worker) isolates torch and CUDA state per run and
    lets a cancelled task stop its run with the same Ctrl-C handling as a terminal. It runs in the
    driver's working directory when the node has it (shared filesystem), so relative paths in the
    TOML resolve as they do for the other executors; else in the run dir.
    """
    path = Path(run_dir)
    if not (path / "config.toml").is_file():
        import socket

        raise RuntimeError(
            f"{run_dir}/config.toml not found on Ray node {socket.gethostname()}: on a cluster the campaign's "
            "[campaign].log_root must be on a filesystem every node mounts at the same path"
        )
    stdout, stderr = _open_logs(path)
    with stdout, stderr:
        proc = subprocess.Popen(
            command + [run_dir] if command else resume_command(path),
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            cwd=driver_cwd if os.path.isdir(driver_cwd) else run_dir,
        )
        try:
            return proc.wait()
        except BaseException:  # ray.cancel raises KeyboardInterrupt in the task: stop the run gracefully
            _stop_process(proc, grace_s)
            raise


class RayExecutor:
    """Each run is a Ray task (one GPU when the runs use CUDA, else one CPU) on a local or remote cluster.

    `address` empty: starts a local Ray for the duration of the campaign (shut down afterwards);
    otherwise connects to that cluster (e.g. "ray://head:10001" or "auto"). Run dirs must be on a
    filesystem shared by all nodes. "running" in the manifest means submitted: Ray queues tasks until a
    GPU/CPU is free. `max_workers` > 0 caps the tasks in flight.
    """

    name = "ray"
    captures_output = True

    def __init__(
        self,
        address: str = "",
        device: str = "auto",
        max_workers: int = 0,
        command: list[str] | None = None,
        grace_s: float = GRACE_S,
    ):
        self.address = address
        self.device = device
        self.max_workers = max_workers
        self._command = command
        self.grace_s = grace_s

    @staticmethod
    def _import_ray():
        try:
            import ray
        except ImportError as e:
            raise RetrainError(
                '[campaign].executor = "ray" needs Ray: pip install \'ray[default]\' (or use executor = "processes")'
            ) from e
        return ray

    def _init(self, ray) -> bool:
        """Connect or start Ray; returns True when this call owns the connection (and must shut it down)."""
        if ray.is_initialized():
            return False
        if not self.address:
            # A local cluster we start ourselves: no usage-stats prompt on the user's behalf.
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(
            address=self.address or None,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,  # each run's output goes to its own stdout.log / stderr.log
        )
        return True

    def run(self, jobs, on_start, on_finish) -> None:
        ray = self._import_ray()
        owns = self._init(ray)
        try:
            self._run(ray, jobs, on_start, on_finish)
        finally:
            if owns:
                ray.shutdown()

    def _run(self, ray, jobs, on_start, on_finish) -> None:
        use_gpu = wants_gpu(self.device, ray.cluster_resources().get("GPU", 0) > 0)
        # Secrets a TOML held literally live in this process's environment (retrain/secrets.py);
        # a worker on another node needs them too, and never from a file.
        secrets = {k: v for k, v in os.environ.items() if k.startswith(SECRET_ENV_PREFIX)}
        task = ray.remote(_ray_run_job).options(
            num_gpus=1 if use_gpu else 0, num_cpus=1, max_retries=0, name="retrain-run",
            **({"runtime_env": {"env_vars": secrets}} if secrets else {}),
        )  # fmt: skip
        cap = self.max_workers if self.max_workers > 0 else len(jobs)
        pending = deque(jobs)
        in_flight: dict = {}  # ObjectRef -> Job
        try:
            while pending or in_flight:
                while pending and len(in_flight) < cap:
                    job = pending.popleft()
                    on_start(job)
                    in_flight[task.remote(str(job.run_dir), self._command, self.grace_s, os.getcwd())] = job
                done, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
                for ref in done:
                    job = in_flight.pop(ref)
                    on_finish(job, self._outcome(ray, ref, job))
        except BaseException:
            self._cancel(ray, in_flight, on_finish)
            raise

    @staticmethod
    def _outcome(ray, ref, job: Job) -> Outcome:
        try:
            rc = ray.get(ref)
        except Exception as e:  # noqa: BLE001 - task or worker died: the run failed, the campaign goes on
            return Outcome("failed", None, f"{type(e).__name__}: {e}".strip()[:2000])
        error = None if rc == 0 else f"exit code {rc}; see {job.run_dir / STDERR_NAME}"
        return Outcome(classify(rc, read_run_status(job.run_dir)), rc, error)

    def _cancel(self, ray, in_flight: dict, on_finish) -> None:
        """Cancel gently (KeyboardInterrupt inside the task stops its run), then force what is left."""
        refs = list(in_flight)
        for ref in refs:
            ray.cancel(ref)
        _, left = ray.wait(refs, num_returns=len(refs), timeout=self.grace_s + 5.0) if refs else ([], [])
        for ref in left:
            ray.cancel(ref, force=True)
        for ref in refs:
            on_finish(in_flight[ref], Outcome("interrupted", None))


def make_executor(name: str, *, max_workers: int = 0, ray_address: str = "", device: str = "auto") -> Executor:
    """The executor named by `[campaign].executor`."""
    if name == "sequential":
        return SequentialExecutor()
    if name == "processes":
        return ProcessExecutor(max_workers=max_workers)
    if name == "ray":
        return RayExecutor(address=ray_address, device=device, max_workers=max_workers)
    raise RetrainError(f"[campaign].executor: unknown executor {name!r}; use sequential, processes or ray")
