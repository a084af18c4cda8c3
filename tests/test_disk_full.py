"""A full disk (issue #11 item 6): the first error is the one reported, run.json ends truthful (not
"running"), nothing is half-switched, and the run resumes once there is space again."""

from __future__ import annotations

import errno
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
from runutil import read_jsonl, write_tiny_config

from retrain.config import load_config
from retrain.run import RunInfo, resume, train


def test_run_json_is_rewritten_in_place_when_no_new_file_fits(tmp_path: Path, monkeypatch, capsys):
    """The atomic writer needs a new temporary file, which a full disk refuses; the status must still land."""
    cfg = load_config(write_tiny_config(tmp_path / "r.toml", tmp_path / "run"))
    (tmp_path / "run").mkdir()
    info = RunInfo(tmp_path / "run", cfg)
    info.start(4)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("retrain.run.write_json_atomic", no_space)
    info.finish_quietly("failed", error="OSError: [Errno 28] No space left on device")
    doc = json.loads((tmp_path / "run" / "run.json").read_text())
    assert doc["status"] == "failed" and doc["step"] == 4 and "No space" in doc["error"]

    monkeypatch.setattr("retrain.run.overwrite_json_in_place", no_space)
    info.finish_quietly("interrupted")  # nothing can be written: said on stderr, never raised
    assert "could not record status 'interrupted'" in capsys.readouterr().err


@pytest.fixture
def small_fs(tmp_path: Path):
    """A 16 MiB tmpfs (needs root or CAP_SYS_ADMIN; skipped elsewhere)."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> None:
    """Write to `path` until the filesystem refuses even one byte."""
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC


@pytest.mark.slow
def test_disk_full_mid_run_is_reported_once_and_resumes(small_fs: Path, tmp_path: Path, capsys):
    log_dir = small_fs / "run"
    cfg = load_config(write_tiny_config(tmp_path / "r.toml", log_dir, steps=8, save_every=1))
    filler = small_fs / "filler"

    def fill_after_two_steps():
        metrics = log_dir / "metrics.jsonl"
        deadline = time.time() + 300
        while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
            time.sleep(0.01)
        fill(filler)

    t = threading.Thread(target=fill_after_two_steps)
    t.start()
    rc = train(cfg)
    t.join()
    err = capsys.readouterr().err
    assert rc == 1
    info = json.loads((log_dir / "run.json").read_text())
    assert info["status"] == "failed" and info["step"] < 7
    assert f"no space left on the device of {log_dir}" in err and f"retrain resume {log_dir}" in err
    assert "During handling of the above exception" not in err and "Traceback" not in err

    filler.unlink()
    assert resume(log_dir) == 0
    assert [r["step"] for r in read_jsonl(log_dir / "metrics.jsonl")] == list(range(8))
    assert json.loads((log_dir / "run.json").read_text())["status"] == "completed"
