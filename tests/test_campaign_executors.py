"""Executors: failure handling, concurrency, per-run logs and Ctrl-C, with a stand-in child process.

The child (CHILD below) behaves as `python -m retrain resume RUN_DIR` does from the outside: it writes
run.json, prints to stdout/stderr, exits with a code, and on SIGINT records "interrupted" and exits 130.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from retrain.campaign.executors import (
    Job,
    Outcome,
    ProcessExecutor,
    RayExecutor,
    SequentialExecutor,
    classify,
    make_executor,
    resolve_workers,
    threads_per_worker,
    wants_gpu,
)  # fmt: skip
from retrain.errors import RetrainError

CHILD = r"""
import json, os, pathlib, signal, sys, time
d = pathlib.Path(sys.argv[1])
spec = json.loads((d / "behaviour.json").read_text())
def status(s):
    (d / "run.json").write_text(json.dumps({"status": s}))
def on_int(*_):
    status("interrupted")
    sys.exit(130)
signal.signal(signal.SIGINT, signal.SIG_IGN if spec.get("ignore_int") else on_int)
(d / "pid").write_text(str(os.getpid()))
(d / "cwd").write_text(os.getcwd())
print("out", d.name, flush=True)
print("err", d.name, "threads", os.environ.get("OMP_NUM_THREADS"), file=sys.stderr, flush=True)
status("running")
time.sleep(spec.get("sleep", 0))
status("completed" if spec["rc"] == 0 else "failed")
sys.exit(spec["rc"])
"""


def child_command(run_dir: Path) -> list[str]:
    return [sys.executable, "-c", CHILD, str(run_dir)]


def make_job(tmp_path: Path, name: str, **behaviour) -> Job:
    d = tmp_path / name
    d.mkdir()
    (d / "config.toml").write_text("")  # what the Ray task checks for
    (d / "behaviour.json").write_text(json.dumps({"rc": 0, **behaviour}))
    return Job(name, d.resolve())


class Recorder:
    def __init__(self):
        self.started: list[str] = []
        self.finished: dict[str, Outcome] = {}
        self.active = 0
        self.max_active = 0

    def on_start(self, job: Job) -> None:
        self.started.append(job.name)
        self.active += 1
        self.max_active = max(self.max_active, self.active)

    def on_finish(self, job: Job, outcome: Outcome) -> None:
        self.active -= 1
        self.finished[job.name] = outcome


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is dead for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# Pure rules


@pytest.mark.parametrize(("rc", "run_status", "state"), [
    (0, "completed", "completed"),
    (0, None, "completed"),
    (1, "failed", "failed"),
    (1, "running", "failed"),  # crashed without recording it
    (-9, "running", "failed"),  # SIGKILL / OOM
    (130, "interrupted", "interrupted"),
    (130, "running", "interrupted"),
    (-signal.SIGINT, None, "interrupted"),
    (-signal.SIGTERM, "running", "interrupted"),
    (1, "interrupted", "interrupted"),  # the run's own record wins
    (0, "failed", "failed"),
])  # fmt: skip
def test_classify(rc, run_status, state):
    assert classify(rc, run_status) == state


def test_worker_and_thread_counts():
    assert resolve_workers(3, 10, 16) == 3
    assert resolve_workers(0, 10, 4) == 4  # auto: one per run up to the cores
    assert resolve_workers(0, 2, 16) == 2
    assert resolve_workers(8, 2, 16) == 2  # never more workers than runs
    assert resolve_workers(0, 0, 4) == 1
    assert threads_per_worker(4, 16) == 4
    assert threads_per_worker(3, 2) == 1  # at least one thread each


def test_wants_gpu():
    assert wants_gpu("cuda", False) and wants_gpu("cuda:1", False)
    assert not wants_gpu("cpu", True)
    assert wants_gpu("auto", True) and not wants_gpu("auto", False)


def test_make_executor():
    assert make_executor("sequential").name == "sequential"
    proc = make_executor("processes", max_workers=3)
    assert proc.name == "processes" and proc.max_workers == 3
    ray_ex = make_executor("ray", ray_address="ray://head:10001", device="cuda")
    assert (ray_ex.name, ray_ex.address, ray_ex.device) == ("ray", "ray://head:10001", "cuda")
    with pytest.raises(RetrainError, match="unknown executor"):
        make_executor("slurm")


# ---------------------------------------------------------------------------------------------
# Sequential


def test_sequential_records_failures_and_goes_on(tmp_path: Path):
    jobs = [Job(n, tmp_path / n) for n in ("ok_s1", "crash_s1", "fail_s1", "ok_s2")]
    for j in jobs:
        j.run_dir.mkdir()
    calls = []

    def fake_resume(run_dir: str) -> int:
        name = Path(run_dir).name
        calls.append(name)
        if name == "crash_s1":
            raise ValueError("NaN in logits")
        return 1 if name == "fail_s1" else 0

    rec = Recorder()
    SequentialExecutor(fake_resume).run(jobs, rec.on_start, rec.on_finish)
    assert calls == ["ok_s1", "crash_s1", "fail_s1", "ok_s2"]
    assert {n: o.state for n, o in rec.finished.items()} == {
        "ok_s1": "completed",
        "crash_s1": "failed",
        "fail_s1": "failed",
        "ok_s2": "completed",
    }
    assert rec.finished["crash_s1"].error == "ValueError: NaN in logits"
    assert rec.max_active == 1


def test_sequential_stops_when_a_run_was_interrupted(tmp_path: Path):
    jobs = [Job(n, tmp_path / n) for n in ("a_s1", "a_s2")]
    for j in jobs:
        j.run_dir.mkdir()

    def swallowed_ctrl_c(run_dir: str) -> int:
        (Path(run_dir) / "run.json").write_text(json.dumps({"status": "interrupted"}))
        return 1

    rec = Recorder()
    with pytest.raises(KeyboardInterrupt):
        SequentialExecutor(swallowed_ctrl_c).run(jobs, rec.on_start, rec.on_finish)
    assert rec.started == ["a_s1"] and rec.finished["a_s1"].state == "interrupted"


# ---------------------------------------------------------------------------------------------
# Processes


def test_processes_run_all_record_failures_and_keep_logs(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    jobs = [make_job(tmp_path, "a_s1"), make_job(tmp_path, "b_s1", rc=3), make_job(tmp_path, "c_s1", sleep=0.3)]
    rec = Recorder()
    ProcessExecutor(max_workers=2, command=child_command).run(jobs, rec.on_start, rec.on_finish)
    assert sorted(rec.started) == ["a_s1", "b_s1", "c_s1"]
    assert {n: (o.state, o.returncode) for n, o in rec.finished.items()} == {
        "a_s1": ("completed", 0),
        "b_s1": ("failed", 3),
        "c_s1": ("completed", 0),
    }
    assert "stderr.log" in rec.finished["b_s1"].error
    assert rec.max_active == 2
    for job in jobs:
        assert (job.run_dir / "stdout.log").read_text() == f"out {job.name}\n"
        # 4 cores / 2 workers: each child gets 2 threads
        assert (job.run_dir / "stderr.log").read_text() == f"err {job.name} threads 2\n"

    # A second attempt appends to the logs, never truncates them.
    ProcessExecutor(max_workers=1, command=child_command).run(jobs[:1], rec.on_start, rec.on_finish)
    assert (jobs[0].run_dir / "stdout.log").read_text() == "out a_s1\nout a_s1\n"


def test_processes_run_in_the_callers_cwd(tmp_path: Path, monkeypatch):
    """Relative paths in a TOML ([data].path, plugin modules) mean the same for every executor."""
    monkeypatch.chdir(tmp_path)
    job = make_job(tmp_path, "a_s1")
    ProcessExecutor(command=child_command).run([job], lambda j: None, lambda j, o: None)
    assert (job.run_dir / "cwd").read_text() == str(tmp_path)


def test_processes_respect_max_workers(tmp_path: Path):
    jobs = [make_job(tmp_path, f"r_s{i}", sleep=0.2) for i in range(3)]
    rec = Recorder()
    ProcessExecutor(max_workers=1, command=child_command).run(jobs, rec.on_start, rec.on_finish)
    assert rec.max_active == 1 and len(rec.finished) == 3


def test_processes_unstartable_command_is_a_failure_not_a_crash(tmp_path: Path):
    jobs = [make_job(tmp_path, "a_s1"), make_job(tmp_path, "b_s1")]
    rec = Recorder()
    ProcessExecutor(max_workers=1, command=lambda d: [str(tmp_path / "no-such-binary")]).run(
        jobs, rec.on_start, rec.on_finish
    )
    assert [o.state for o in rec.finished.values()] == ["failed", "failed"]
    assert "could not start" in rec.finished["a_s1"].error


def test_processes_ctrl_c_stops_children_and_reports_them_interrupted(tmp_path: Path):
    quick = make_job(tmp_path, "quick_s1")
    slow = make_job(tmp_path, "slow_s1", sleep=60)
    rec = Recorder()

    def on_finish(job, outcome):
        rec.on_finish(job, outcome)
        if job.name == "quick_s1":
            # Ctrl-C arrives while slow_s1 is still training.
            while not (slow.run_dir / "pid").exists():
                time.sleep(0.05)
            time.sleep(0.2)  # let it install its SIGINT handler
            raise KeyboardInterrupt

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        ProcessExecutor(max_workers=2, command=child_command, grace_s=10).run([quick, slow], rec.on_start, on_finish)
    assert time.monotonic() - t0 < 30
    assert rec.finished["quick_s1"].state == "completed"
    assert rec.finished["slow_s1"] == Outcome("interrupted", 130)
    assert json.loads((slow.run_dir / "run.json").read_text())["status"] == "interrupted"
    assert not alive(int((slow.run_dir / "pid").read_text()))


def test_processes_child_ignoring_sigint_is_terminated(tmp_path: Path, monkeypatch):
    stubborn = make_job(tmp_path, "stubborn_s1", sleep=60, ignore_int=True)
    rec = Recorder()
    real_sleep = time.sleep
    fired = []

    def poll_sleep_then_ctrl_c(seconds):  # one Ctrl-C, in the poll loop, once the child is up
        real_sleep(seconds)
        if not fired and (stubborn.run_dir / "pid").exists():
            fired.append(True)
            raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", poll_sleep_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        ProcessExecutor(max_workers=1, command=child_command, grace_s=0.5).run([stubborn], rec.on_start, rec.on_finish)
    assert rec.finished["stubborn_s1"] == Outcome("interrupted", -signal.SIGTERM)
    assert not alive(int((stubborn.run_dir / "pid").read_text()))


# ---------------------------------------------------------------------------------------------
# Ray


def test_ray_missing_is_a_user_error_naming_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RetrainError, match=r"pip install 'ray\[default\]'"):
        RayExecutor().run([], lambda j: None, lambda j, o: None)


@pytest.mark.slow
def test_ray_local_cluster_runs_tasks_and_records_failures(tmp_path: Path):
    pytest.importorskip("ray")
    import ray

    jobs = [make_job(tmp_path, "a_s1"), make_job(tmp_path, "b_s1", rc=2)]
    rec = Recorder()
    prefix = [sys.executable, "-c", CHILD]  # the task appends the run dir
    RayExecutor(device="cpu", command=prefix).run(jobs, rec.on_start, rec.on_finish)
    assert {n: (o.state, o.returncode) for n, o in rec.finished.items()} == {
        "a_s1": ("completed", 0),
        "b_s1": ("failed", 2),
    }
    assert (jobs[0].run_dir / "stdout.log").read_text() == "out a_s1\n"
    assert (jobs[0].run_dir / "cwd").read_text() == os.getcwd()  # the driver's, as for the other executors
    assert not ray.is_initialized()  # the local Ray it started is shut down


@pytest.mark.slow
def test_ray_task_without_shared_run_dir_fails_with_a_clear_error(tmp_path: Path):
    pytest.importorskip("ray")
    job = Job("gone_s1", (tmp_path / "missing").resolve())
    rec = Recorder()
    RayExecutor(device="cpu").run([job], rec.on_start, rec.on_finish)
    outcome = rec.finished["gone_s1"]
    assert outcome.state == "failed" and "shared" in outcome.error and "log_root" in outcome.error


def test_child_runs_do_not_import_modules_from_the_working_directory(tmp_path: Path, monkeypatch):
    """A `tomli_w.py` in the cwd was imported by `python -m retrain` children (issue #11 item 9)."""
    from retrain.campaign.executors import resume_command

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    marker = tmp_path / "shadowed"
    (cwd / "tomli_w.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise ImportError('shadow')\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.toml").write_text('[training]\nmax_steps = "many"\n')  # config.py (imports tomli_w) loads it
    monkeypatch.chdir(cwd)
    rec = Recorder()
    ProcessExecutor(command=resume_command).run([Job("r_s1", run_dir)], rec.on_start, rec.on_finish)
    assert not marker.exists()
    assert rec.finished["r_s1"].returncode == 2  # the config error, reported by the real retrain
    assert "[training].max_steps" in (run_dir / "stderr.log").read_text()
