"""`retrain status`: states, ETA and the matrix from hand-written run dirs (no training needed)."""

from __future__ import annotations

import argparse
import io
import json
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from rich.console import Console

from retrain.campaign import status as st
from retrain.errors import RetrainError

HOST = socket.gethostname()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_run(
    d: Path,
    *,
    status=None,
    step_times=(),
    rates=None,
    max_steps=4,
    pid=None,
    updated=None,
    condition="grpo+none",
    seed=1,
    error=None,
) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    rates = rates or [0.1 * (i + 1) for i in range(len(step_times))]
    rows = [
        {"step": i, "condition": condition, "seed": seed, "correct_rate": r, "step_time_s": t}
        for i, (t, r) in enumerate(zip(step_times, rates, strict=True))
    ]
    if rows:
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if status is not None:
        (d / "run.json").write_text(
            json.dumps(
                {
                    "status": status,
                    "pid": pid,
                    "hostname": HOST,
                    "updated_at": updated,
                    "step": len(rows) - 1,
                    "max_steps": max_steps,
                    "condition": condition,
                    "seed": seed,
                    "error": error,
                }
            )
        )
    return d


@pytest.fixture
def logs(tmp_path: Path) -> tuple[Path, float]:
    """logs/ with one campaign (done, running, stale, pending) and two standalone runs."""
    now = time.time()
    root = tmp_path / "logs"
    camp = root / "campaign_20250215_143022"
    runs = [("grpo+none", 1), ("grpo+none", 2), ("maxrl+gtpo", 1), ("maxrl+gtpo", 2)]
    manifest = {
        "version": 1,
        "created_at": iso(now - 100),
        "config_path": None,
        "conditions": ["grpo+none", "maxrl+gtpo"],
        "seeds": [1, 2],
        "max_steps": 4,
        "executor": "processes",
        "runs": [
            {"name": f"{c}_s{s}", "condition": c, "seed": s, "state": "running", "log_dir": f"runs/{c}_s{s}"}
            for c, s in runs
        ],
        "squeeze": {"recommended_rank": 8, "table": []},
    }
    camp.mkdir(parents=True)
    (camp / "manifest.json").write_text(json.dumps(manifest))
    write_run(
        camp / "runs/grpo+none_s1",
        status="completed",
        step_times=[2, 2, 2, 2],
        rates=[0.1, 0.2, 0.3, 0.5],
        updated=iso(now - 50),
    )
    write_run(
        camp / "runs/grpo+none_s2",
        status="running",
        step_times=[1, 3],
        pid=__import__("os").getpid(),
        updated=iso(now - 10),
        seed=2,
    )
    write_run(
        camp / "runs/maxrl+gtpo_s1",
        status="running",
        step_times=[4],
        pid=dead_pid(),
        updated=iso(now - 20),
        condition="maxrl+gtpo",
    )
    (camp / "runs/maxrl+gtpo_s2").mkdir(parents=True)  # prepared, never started
    # Standalone runs: one failed, one from before run.json existed and silent for an hour.
    write_run(
        root / "single/maxrl+gtpo_sepa_s7",
        status="failed",
        step_times=[1.5],
        condition="maxrl+gtpo_sepa",
        seed=7,
        max_steps=10,
        updated=iso(now - 30),
        error="CUDA out of memory",
    )
    old = write_run(root / "old_run", step_times=[5, 5], condition="grpo+none", seed=3)
    import os

    os.utime(old / "metrics.jsonl", (now - 3600, now - 3600))
    (root / "old_run" / "adapter" / "final").mkdir(parents=True)  # never searched for runs
    return root, now


# ---------------------------------------------------------------------------------------------
# Pure rules


def test_stale_after_scales_with_step_time():
    assert st.stale_after_s(None) == 1800.0
    assert st.stale_after_s(10.0) == 600.0  # floor
    assert st.stale_after_s(300.0) == 1500.0  # 5 x median


@pytest.mark.parametrize(("run_status", "alive", "age", "median", "has_metrics", "manifest", "want"), [
    ("completed", False, 1e6, None, True, None, "done"),
    ("failed", None, 5, None, True, None, "failed"),
    ("interrupted", None, 5, None, True, None, "interrupted"),
    ("running", True, 5, 2.0, True, None, "running"),
    ("running", False, 5, 2.0, True, None, "stale"),  # pid gone on this host
    ("running", None, 5, 2.0, True, None, "running"),  # other host, recently updated
    ("running", None, 700, 2.0, True, None, "stale"),  # other host, silent > 600 s
    ("running", True, 700, 200.0, True, None, "running"),  # slow steps: 5 x 200 s allowed
    (None, None, 10, 1.0, True, None, "running"),  # metrics only, fresh
    (None, None, 4000, 1.0, True, None, "stale"),
    (None, None, None, None, False, "running", "pending"),  # manifest says running, nothing on disk
    (None, None, None, None, False, "failed", "failed"),
    (None, None, None, None, False, None, "pending"),
])  # fmt: skip
def test_derive_state(run_status, alive, age, median, has_metrics, manifest, want):
    assert st.derive_state(run_status, alive, age, median, has_metrics=has_metrics, manifest_state=manifest) == want


def test_eta_and_campaign_state_and_durations():
    assert st.eta_seconds(10, 3.0) == 30.0
    assert st.eta_seconds(10, 3.0, parallel=2) == 15.0
    assert st.eta_seconds(0, None) == 0.0 and st.eta_seconds(5, None) is None
    assert st.campaign_state(["done", "running", "pending"]) == "running"
    assert st.campaign_state(["done", "done"]) == "done"
    assert st.campaign_state(["done", "failed"]) == "failed"
    assert st.campaign_state(["pending", "pending"]) == "pending"
    assert st.campaign_state(["done", "stale", "pending"]) == "stopped"
    assert [st.format_duration(s) for s in (None, 12, 303, 10920, 187200)] == ["—", "12s", "5m03s", "3h02m", "2d04h"]


def test_pid_alive_only_speaks_for_this_host():
    import os

    assert st.pid_alive(os.getpid(), HOST) is True
    assert st.pid_alive(dead_pid(), HOST) is False
    assert st.pid_alive(os.getpid(), "some-other-node") is None
    assert st.pid_alive(None, HOST) is None


def test_read_metrics_skips_a_half_written_line(tmp_path: Path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n{"step": 1}\n{"step": 2, "corr')
    assert [r["step"] for r in st.read_metrics(tmp_path)] == [0, 1]


# ---------------------------------------------------------------------------------------------
# Campaigns and runs


def test_campaign_matrix_states_elapsed_and_eta(logs):
    root, now = logs
    report = st.collect(root, now=now)
    assert [c["name"] for c in report["campaigns"]] == ["campaign_20250215_143022"]
    c = report["campaigns"][0]
    assert c["state"] == "running" and c["squeeze_rank"] == 8 and c["executor"] == "processes"
    assert c["counts"] == {"done": 1, "running": 1, "stale": 1, "pending": 1}
    cell = lambda cond, seed: c["matrix"][cond][str(seed)]
    assert cell("grpo+none", 1) == {"steps_done": 4, "max_steps": 4, "correct_rate": 0.5, "state": "done"}
    assert cell("grpo+none", 2) == {"steps_done": 2, "max_steps": 4, "correct_rate": 0.2, "state": "running"}
    assert cell("maxrl+gtpo", 1) == {"steps_done": 1, "max_steps": 4, "correct_rate": 0.1, "state": "stale"}
    assert cell("maxrl+gtpo", 2) == {"steps_done": 0, "max_steps": 4, "correct_rate": None, "state": "pending"}
    runs = {r["name"]: r for r in c["runs"]}
    assert runs["grpo+none_s1"]["elapsed_s"] == 8.0 and runs["grpo+none_s1"]["eta_s"] == 0.0
    assert runs["grpo+none_s2"]["median_step_s"] == 2.0 and runs["grpo+none_s2"]["eta_s"] == 4.0  # 2 s x 2 left
    assert runs["maxrl+gtpo_s2"]["eta_s"] is None  # no step time of its own yet
    # campaign ETA: steps left of unfinished runs (2 + 3 + 4) x median of run medians (2, 2, 4) / 1 running
    assert c["eta_s"] == 18.0
    assert c["elapsed_s"] == pytest.approx(100, abs=1)


def test_standalone_runs_and_discovery(logs):
    root, now = logs
    report = st.collect(root, now=now)
    runs = {r["name"]: r for r in report["runs"]}
    assert set(runs) == {"single/maxrl+gtpo_sepa_s7", "old_run"}
    failed = runs["single/maxrl+gtpo_sepa_s7"]
    assert (failed["state"], failed["error"], failed["steps_done"], failed["max_steps"]) == (
        "failed",
        "CUDA out of memory",
        1,
        10,
    )
    assert failed["eta_s"] is None
    assert runs["old_run"]["state"] == "stale"  # metrics only, silent for an hour
    assert runs["old_run"]["condition"] == "grpo+none" and runs["old_run"]["seed"] == 3


def test_a_campaign_dir_itself_can_be_the_root(logs):
    root, now = logs
    report = st.collect(root / "campaign_20250215_143022", now=now)
    assert len(report["campaigns"]) == 1 and report["runs"] == []


def test_render_shows_banner_matrix_and_runs(logs):
    root, now = logs
    console = Console(record=True, width=140, file=io.StringIO())
    console.print(st.render(st.collect(root, now=now)))
    text = console.export_text()
    assert "Campaigns: 1 running  |  Runs: 1 running, 1 done, 1 failed, 2 stale, 1 pending" in text
    assert "2 conditions x 2 seeds = 4 runs  max_steps=4  executor=processes" in text
    assert "ETA 18s" in text and "squeeze rank 8" in text
    assert "4/4 50.0% done" in text and "2/4 20.0% running" in text and "1/4 10.0% stale" in text
    assert "0/4 — pending" in text
    assert "single/maxrl+gtpo_sepa_s7" in text and "1/10" in text


# ---------------------------------------------------------------------------------------------
# CLI


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="retrain")
    st.register(parser.add_subparsers())
    return parser.parse_args(argv)


def test_cli_defaults_and_watch_flag():
    args = _parse(["status"])
    assert (args.root, args.json, args.watch) == ("logs", False, None)
    assert _parse(["status", "x", "--watch"]).watch == 5.0
    assert _parse(["status", "--watch", "2"]).watch == 2.0


def test_cli_json_is_one_document(logs, capsys):
    root, _ = logs
    args = _parse(["status", str(root), "--json"])
    assert args.func(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"root", "generated_at", "campaigns", "runs"}
    assert doc["campaigns"][0]["matrix"]["grpo+none"]["1"]["state"] == "done"


def test_cli_missing_root_is_a_user_error(tmp_path: Path):
    args = _parse(["status", str(tmp_path / "nope")])
    with pytest.raises(RetrainError, match="does not exist"):
        args.func(args)
    with pytest.raises(RetrainError, match="--watch"):
        args = _parse(["status", str(tmp_path), "--watch", "0"])
        args.func(args)


def test_cli_watch_refreshes_until_ctrl_c(logs, capsys, monkeypatch):
    root, _ = logs
    ticks = []

    def sleep(seconds):
        ticks.append(seconds)
        if len(ticks) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", sleep)
    args = _parse(["status", str(root), "--json", "--watch", "3"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert ticks == [3.0, 3.0] and len(lines) == 2
    assert all(json.loads(line)["campaigns"][0]["state"] == "running" for line in lines)
