"""Run and campaign dirs are locked (issue #11 item 4): a second process gets a clear error naming the
holder; a lock left by a dead process is taken over; a recycled pid in an old record misleads nobody."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runutil import read_jsonl, tiny_campaign_base, write_tiny_config

from retrain.errors import RetrainError
from retrain.locks import LOCK_NAME, DirLock, LockHeld, dir_lock, is_locked, read_holder

TESTS_DIR = Path(__file__).parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}

HOLD = r"""
import sys, time
from retrain.locks import DirLock
DirLock(sys.argv[1], "run").acquire()
print("locked", flush=True)
time.sleep(600)
"""


def hold_in_child(directory: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_lock_names_the_holder_and_release_frees_it(tmp_path: Path):
    with dir_lock(tmp_path, "run"):
        assert is_locked(tmp_path) is True
        with pytest.raises(LockHeld) as err:
            DirLock(tmp_path, "run").acquire()
        msg = str(err.value)
        assert f"pid {os.getpid()}" in msg and f"host {socket.gethostname()}" in msg and "since 20" in msg
        assert "[logging].log_dir" in msg  # the way out
        assert err.value.exit_code == 2
    assert is_locked(tmp_path) is False
    assert read_holder(tmp_path) == {}  # released: no holder recorded
    DirLock(tmp_path).acquire().release()


def test_lock_of_a_killed_process_is_taken_over(tmp_path: Path):
    proc = hold_in_child(tmp_path)
    with pytest.raises(LockHeld, match=f"pid {proc.pid} "):
        DirLock(tmp_path, "run").acquire()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert read_holder(tmp_path)["pid"] == proc.pid  # its record is still there...
    with dir_lock(tmp_path, "run"):  # ...but the kernel released its lock: no error
        assert read_holder(tmp_path)["pid"] == os.getpid()


def test_a_record_naming_a_live_recycled_pid_does_not_hold_the_lock(tmp_path: Path):
    # A record left by a dead holder whose pid now belongs to another live process (here: pid 1).
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "since": "x"}))
    with dir_lock(tmp_path, "run") as lock:
        assert lock.held and read_holder(tmp_path)["pid"] == os.getpid()


def test_campaign_lock_message(tmp_path: Path):
    proc = hold_in_child(tmp_path)
    try:
        with pytest.raises(LockHeld, match="retrain status"):
            DirLock(tmp_path, "campaign").acquire()
    finally:
        proc.kill()
        proc.wait()


def test_unwritable_run_dir_is_a_clear_error(tmp_path: Path):
    from retrain.run import resume

    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    d = tmp_path / "ro"
    d.mkdir()
    (d / "config.toml").write_text("")
    d.chmod(0o555)
    try:
        with pytest.raises(RetrainError, match="cannot write"):
            resume(d)
    finally:
        d.chmod(0o755)


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "retrain", *args],
        cwd=cwd,
        env=ENV,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for_holder(directory: Path, proc: subprocess.Popen, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        holder = read_holder(directory, tries=1) if (directory / LOCK_NAME).exists() else {}
        if holder:
            return holder
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the first process never locked the dir")


@pytest.mark.slow
def test_two_runs_on_one_log_dir_and_two_resumes(tmp_path: Path):
    """Two runs started on one log_dir: the second stops with the first's pid; the run is unmixed.
    Then two resumes of that run: the second stops the same way."""
    log_dir = tmp_path / "run"
    cfg = write_tiny_config(tmp_path / "run.toml", log_dir, steps=6, save_every=2)
    first = _start([str(cfg)], tmp_path)
    holder = _wait_for_holder(log_dir, first)
    assert holder["pid"] == first.pid
    # Paused while the second starts: a fast machine could otherwise finish the tiny run first, and a
    # finished run's dir is rightly left alone (the second then writes to run_2 and exits 0).
    first.send_signal(signal.SIGSTOP)
    try:
        second = _start([str(cfg)], tmp_path)
        out, err = second.communicate(timeout=120)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2, (out, err)
    assert f"in use by pid {first.pid} on host {socket.gethostname()}" in err and "Traceback" not in err
    assert not (tmp_path / "run_2").exists()  # not silently redirected either
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert [r["step"] for r in read_jsonl(log_dir / "metrics.jsonl")] == list(range(6))

    # Two resumes: extend the run so the first resume has work to do while the second starts.
    toml = (log_dir / "config.toml").read_text().replace("max_steps = 6", "max_steps = 10")
    (log_dir / "config.toml").write_text(toml)
    first = _start(["resume", str(log_dir)], tmp_path)
    _wait_for_holder(log_dir, first)
    first.send_signal(signal.SIGSTOP)
    try:
        second = _start(["resume", str(log_dir)], tmp_path)
        out, err = second.communicate(timeout=120)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2 and f"pid {first.pid}" in err, (out, err)
    assert first.communicate(timeout=300) and first.returncode == 0
    assert [r["step"] for r in read_jsonl(log_dir / "metrics.jsonl")] == list(range(10))


@pytest.mark.slow
def test_two_campaign_resumes(tmp_path: Path):
    """A campaign being resumed cannot be resumed a second time at once (a run would train twice)."""
    toml = tmp_path / "c.toml"
    toml.write_text(
        tiny_campaign_base(0)
        + f"""
[campaign]
seeds = [1]
max_steps = 4
log_root = "{(tmp_path / "logs").as_posix()}"
[[campaign.conditions]]
advantage_mode = "grpo"
transform_mode = "none"
"""
    )
    first = _start([str(toml)], tmp_path)
    deadline = time.time() + 60
    while not list((tmp_path / "logs").glob("campaign_*/manifest.json")):
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.05)
    (campaign,) = (tmp_path / "logs").iterdir()
    assert read_holder(campaign)["pid"] == first.pid
    second = _start(["resume", str(campaign)], tmp_path)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 2 and f"in use by pid {first.pid}" in err and "retrain status" in err, (out, err)
    assert first.communicate(timeout=300) and first.returncode == 0
    (run,) = (campaign / "runs").iterdir()
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [0, 1, 2, 3]


def test_status_asks_the_lock_whether_a_run_on_another_host_is_alive(tmp_path: Path):
    """run.json's pid means nothing on another host; the lock (on a shared filesystem) does."""
    from retrain.campaign.status import run_status
    from retrain.jsonio import now_iso

    (tmp_path / "run.json").write_text(
        json.dumps(
            {
                "status": "running",
                "pid": 4242,
                "hostname": "gpu-node-7",
                "max_steps": 10,
                "step": 1,
                "updated_at": now_iso(),
            }
        )
    )
    proc = hold_in_child(tmp_path)
    assert run_status(tmp_path).state == "running"
    proc.kill()
    proc.wait()
    assert run_status(tmp_path).state == "stale"  # was "running" until 30 min of silence had passed
