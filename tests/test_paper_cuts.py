"""A new user's paper cuts (issue #11 item 10): each one as the user met it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from retrain.cli import main


def test_status_into_a_closed_pipe_is_quiet(tmp_path: Path):
    """`retrain status --json | head` printed a BrokenPipeError traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "retrain", "status", str(tmp_path), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before retrain writes a byte
    err = proc.stderr.read().decode()
    assert proc.wait() == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err


def test_report_of_an_empty_dir_suggests_only_what_report_takes(tmp_path: Path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a campaign directory (no runs/ folder)" in err
    assert "--candidate" not in err and "--baseline" not in err


def test_plot_errors_name_no_flag_the_user_did_not_type(tmp_path: Path, capsys):
    assert main(["plot", str(tmp_path / "nosuch")]) == 2
    err = capsys.readouterr().err
    assert "--inputs" not in err and "retrain compare" not in err
    assert "no such run directory" in err and "retrain plot CAMPAIGN" in err
    assert main(["plot", str(tmp_path)]) == 2
    assert "--inputs" not in capsys.readouterr().err


def test_litmus_errors_carry_the_retrain_prefix(tmp_path: Path, capsys):
    assert main(["litmus", "--baseline", str(tmp_path / "a"), "--candidate", str(tmp_path / "b")]) == 3
    err = capsys.readouterr().err
    assert err.startswith("retrain: error: --baseline")
