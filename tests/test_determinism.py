"""Same config + seed → same run on one machine, loaded or not (retrain.backends.determinism, run.pin_numerics)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from runutil import read_jsonl, without_timing, write_tiny_config

from retrain.backends.determinism import configure_threads
from retrain.errors import RetrainError

TESTS_DIR = Path(__file__).parent
SRC = TESTS_DIR.parent / "src"

# In a fresh process with the environment of a busy or HPC machine: OpenMP and MKL allowed to adapt
# their team size at run time (GNU OpenMP then uses CPUs − load average threads).
PROBE = """
import ctypes, json, os, torch
from retrain.backends.determinism import configure_threads
gomp = [l.split()[-1] for l in open('/proc/self/maps') if 'libgomp' in l]
before = ctypes.CDLL(gomp[0]).omp_get_dynamic() if gomp else None
s = configure_threads(2)
after = ctypes.CDLL(gomp[0]).omp_get_dynamic() if gomp else None
print(json.dumps({"before": before, "after": after, "threads": torch.get_num_threads(), "settings": s.as_dict(),
                  "env": [os.environ["OMP_DYNAMIC"], os.environ["MKL_DYNAMIC"]]}))
"""


def test_configure_threads_switches_off_run_time_thread_adaptation():
    env = {**os.environ, "OMP_DYNAMIC": "TRUE", "MKL_DYNAMIC": "TRUE", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, check=False, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["threads"] == 2 and got["settings"]["torch_threads"] == 2  # the config wins over OMP_NUM_THREADS
    assert got["env"] == ["FALSE", "FALSE"]
    if got["before"] is not None:  # torch linked against GNU OpenMP (the pip CPU and CUDA wheels)
        assert (got["before"], got["after"]) == (1, 0)
        assert got["settings"]["omp_dynamic_off"] == ["libgomp.so.1"] or got["settings"]["omp_dynamic_off"]


def test_configure_threads_keeps_torchs_choice_for_0_and_rejects_negatives():
    import torch

    from retrain.backends import determinism

    n = determinism._startup_threads()
    assert configure_threads(1).torch_threads == 1 == torch.get_num_threads()
    assert configure_threads(0).torch_threads == n == torch.get_num_threads()  # not the previous run's 1
    with pytest.raises(RetrainError, match="num_threads"):
        configure_threads(-1)


def _interrupt_at(monkeypatch, step_to_stop: int):
    import retrain.run as run_mod

    real = run_mod.run_one_step

    def run_one_step(cfg, c, step):
        if step == step_to_stop:
            raise KeyboardInterrupt
        return real(cfg, c, step)

    monkeypatch.setattr(run_mod, "run_one_step", run_one_step)


@pytest.mark.slow
def test_resume_uses_the_thread_count_the_run_started_with(tmp_path, monkeypatch):
    from retrain.backends.determinism import _startup_threads
    from retrain.config import load_config
    from retrain.run import train

    n = _startup_threads()  # what an auto (0) run uses in this process
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert train(load_config(write_tiny_config(tmp_path / "w.toml", whole, steps=4, save_every=1))) == 0
    _interrupt_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(write_tiny_config(tmp_path / "c.toml", cut, steps=4, save_every=1)))
    info = json.loads((cut / "run.json").read_text())
    assert info["numerics"]["torch_threads"] == n
    # Pretend the run started on another CPU (kernels chosen for another instruction set): the resume must
    # say it cannot match, and must still not blame the thread count.
    started_on = "AVX2" if info["numerics"]["cpu_capability"] != "AVX2" else "AVX512"
    info["numerics"]["cpu_capability"] = started_on
    (cut / "run.json").write_text(json.dumps(info))
    # The resuming shell (or campaign executor) has another OMP_NUM_THREADS: the run keeps its own.
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "2" if n == 1 else "1",
        "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS_DIR)]),
    }
    out = subprocess.run(
        [sys.executable, "-m", "retrain", "resume", str(cut)],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert (
        f"this resume runs with other cpu_capability than the run's start (cpu_capability: {started_on} -> "
        in out.stderr
    )
    assert "will not match an uninterrupted run" in out.stderr and "torch_threads" not in out.stderr
    info = json.loads((cut / "run.json").read_text())
    assert info["numerics"]["torch_threads"] == n and info["resumes"] == 1
    # Same CPU in fact, same thread count: the resumed run is the uninterrupted one.
    assert without_timing(read_jsonl(cut / "metrics.jsonl")) == without_timing(read_jsonl(whole / "metrics.jsonl"))
