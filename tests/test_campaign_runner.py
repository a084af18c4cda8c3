"""The campaign runner with a stand-in executor: layout, manifest updates, exit codes, Ctrl-C/SIGTERM,
resume bookkeeping and auto-squeeze. (Real training: tests/test_campaign_e2e.py.)"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from retrain.campaign.executors import Job, Outcome
from retrain.campaign.manifest import read_manifest
from retrain.campaign.runner import resume_campaign, run_campaign
from retrain.config import config_to_dict, load_config

TOML = """
[model]
name = "tiny-random"
[training]
max_steps = 3
max_tokens = 8
[data]
source = "arithmetic"
[campaign]
seeds = [1, 2]
log_root = "{root}"
[[campaign.conditions]]
advantage_mode = "grpo"
transform_mode = "none"
[[campaign.conditions]]
advantage_mode = "maxrl"
transform_mode = "gtpo"
"""
NAMES = ["grpo+none_s1", "grpo+none_s2", "maxrl+gtpo_s1", "maxrl+gtpo_s2"]


def write_adapter(path: Path) -> None:
    """A rank-4 LoRA whose product has singular values (2, 1, 0, 0): V(1) = 0.8, V(2) = 1."""
    path.mkdir(parents=True, exist_ok=True)
    A = torch.zeros(4, 6)
    A[:4, :4] = torch.eye(4)
    B = torch.zeros(5, 4)
    B[0, 0], B[1, 1] = 2.0, 1.0
    save_file(
        {"base_model.model.layers.0.q_proj.lora_A.weight": A, "base_model.model.layers.0.q_proj.lora_B.weight": B},
        str(path / "adapter_model.safetensors"),
    )
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))


def write_finished_run(run_dir: Path, max_steps: int = 3) -> None:
    """What a completed run leaves that proves it (retrain/checkpoints.py): metrics rows, and a
    trainer state at the last step whose checkpoint dir records it. Contents are placeholders."""
    state = {
        "step": max_steps - 1,
        "checkpoint": "adapter/final",
        "cursor": {},
        "sepa": {},
        "backpressure": {},
        "counters": {"total_correct": 0, "total_completions": 0, "num_updates": 0},
        "rng": {"python": "", "numpy": [], "torch": ""},
    }
    (run_dir / "adapter" / "final").mkdir(parents=True, exist_ok=True)
    (run_dir / "adapter" / "final" / "trainer_state.json").write_text(json.dumps({**state, "files": {}}))
    (run_dir / "trainer_state.json").write_text(json.dumps(state))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in range(max_steps)))
    (run_dir / "run.json").write_text(json.dumps({"status": "completed"}))


class FakeExecutor:
    """Runs nothing: writes run.json as a run would and reports the scripted outcome per run name."""

    name = "fake"
    captures_output = False

    def __init__(self, script: dict[str, str] | None = None, adapter: bool = False):
        self.script = script or {}
        self.adapter = adapter
        self.seen: list[str] = []

    def run(self, jobs, on_start, on_finish):
        for job in jobs:
            self.seen.append(job.name)
            on_start(job)
            what = self.script.get(job.name, "completed")
            if what == "interrupt":
                raise KeyboardInterrupt
            if what == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            (job.run_dir / "run.json").write_text(json.dumps({"status": what}))
            if what == "completed":
                write_finished_run(job.run_dir)
            if what == "completed" and self.adapter:
                write_adapter(job.run_dir / "adapter" / "final")
            on_finish(job, Outcome(what, 0 if what == "completed" else 1))


def campaign_config(tmp_path: Path, extra: str = ""):
    path = tmp_path / "sweep.toml"
    path.write_text(TOML.format(root=(tmp_path / "logs").as_posix()) + extra)
    return load_config(path), path


def only_campaign(tmp_path: Path) -> Path:
    (campaign,) = (tmp_path / "logs").iterdir()
    return campaign


def test_layout_manifest_and_exit_code_0(tmp_path: Path, capsys):
    cfg, path = campaign_config(tmp_path)
    fake = FakeExecutor()
    assert run_campaign(cfg, str(path), executor=fake) == 0
    campaign = only_campaign(tmp_path)
    assert campaign.name.startswith("campaign_") and len(campaign.name) == len("campaign_20250215_143022")
    assert config_to_dict(load_config(campaign / "campaign.toml")) == config_to_dict(cfg)  # nothing dropped
    doc = read_manifest(campaign)
    assert doc["conditions"] == ["grpo+none", "maxrl+gtpo"] and doc["seeds"] == [1, 2]
    assert doc["max_steps"] == 3 and doc["executor"] == "sequential" and doc["config_path"] == str(path.resolve())
    assert [r["name"] for r in doc["runs"]] == NAMES == fake.seen
    for r in doc["runs"]:
        assert r["state"] == "completed" and r["returncode"] == 0 and r["error"] is None
        assert r["log_dir"] == f"runs/{r['name']}" and r["adapter_dir"] == f"runs/{r['name']}/adapter"
        assert r["started_at"] and r["finished_at"] and r["elapsed_s"] >= 0
        assert r["stdout"] is None  # in-process: output goes to the campaign's own terminal
        assert (campaign / r["log_dir"] / "config.toml").is_file()
    assert doc["squeeze"] is None
    out = capsys.readouterr().out
    assert "2 conditions x 2 seeds = 4 runs" in out and "All 4 runs completed." in out


def test_a_failed_run_is_recorded_and_the_rest_go_on(tmp_path: Path, capsys):
    cfg, _ = campaign_config(tmp_path)
    assert run_campaign(cfg, executor=FakeExecutor({"grpo+none_s2": "failed"})) == 1
    doc = read_manifest(only_campaign(tmp_path))
    assert [r["state"] for r in doc["runs"]] == ["completed", "failed", "completed", "completed"]
    assert doc["runs"][1]["returncode"] == 1
    assert "1/4 runs did not complete: grpo+none_s2 (failed)" in capsys.readouterr().out


@pytest.mark.parametrize("how", ["interrupt", "sigterm"])
def test_interrupt_exits_130_and_resume_runs_exactly_what_is_missing(tmp_path: Path, how: str, capsys):
    cfg, _ = campaign_config(tmp_path)
    previous = signal.getsignal(signal.SIGTERM)
    assert run_campaign(cfg, executor=FakeExecutor({"grpo+none_s2": how})) == 130
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is restored
    campaign = only_campaign(tmp_path)
    states = [r["state"] for r in read_manifest(campaign)["runs"]]
    assert states == ["completed", "interrupted", "pending", "pending"]
    assert f"retrain resume {campaign}" in capsys.readouterr().out

    fake = FakeExecutor()
    assert resume_campaign(campaign, executor=fake) == 0
    assert fake.seen == NAMES[1:]  # the completed run is not run again
    doc = read_manifest(campaign)
    assert [r["state"] for r in doc["runs"]] == ["completed"] * 4
    assert resume_campaign(campaign, executor=(again := FakeExecutor())) == 0 and again.seen == []


def test_resume_trusts_run_json_over_a_stale_manifest(tmp_path: Path):
    cfg, _ = campaign_config(tmp_path)
    assert run_campaign(cfg, executor=FakeExecutor({"grpo+none_s1": "interrupt"})) == 130
    campaign = only_campaign(tmp_path)
    # The runner was SIGKILLed after the run finished but before the manifest said so.
    write_finished_run(campaign / "runs/grpo+none_s1")
    # ...and another run's run.json says failed although the manifest says pending: it is retried.
    (campaign / "runs/maxrl+gtpo_s1/run.json").write_text(json.dumps({"status": "failed"}))
    fake = FakeExecutor()
    assert resume_campaign(campaign, executor=fake) == 0
    assert fake.seen == ["grpo+none_s2", "maxrl+gtpo_s1", "maxrl+gtpo_s2"]
    assert read_manifest(campaign)["runs"][0]["state"] == "completed"


def test_resume_reruns_a_run_whose_run_json_says_completed_without_proof(tmp_path: Path):
    cfg, _ = campaign_config(tmp_path)
    assert run_campaign(cfg, executor=FakeExecutor({"grpo+none_s1": "interrupt"})) == 130
    campaign = only_campaign(tmp_path)
    (campaign / "runs/grpo+none_s1/run.json").write_text(json.dumps({"status": "completed"}))  # edited
    fake = FakeExecutor()
    assert resume_campaign(campaign, executor=fake) == 0
    assert fake.seen == NAMES


class StopsTwoThenInterrupted:
    """Like the processes executor on Ctrl-C: reports each run it stopped, then re-raises."""

    name = "fake"
    captures_output = True

    def run(self, jobs, on_start, on_finish):
        for job in jobs[:2]:
            on_start(job)
        for job in jobs[:2]:
            on_finish(job, Outcome("interrupted", 130))
        raise KeyboardInterrupt


def test_interrupt_counts_the_runs_it_stopped(tmp_path: Path, capsys):
    cfg, _ = campaign_config(tmp_path)
    assert run_campaign(cfg, executor=StopsTwoThenInterrupted()) == 130
    assert "Interrupted (2 run(s) stopped)" in capsys.readouterr().out
    assert [r["state"] for r in read_manifest(only_campaign(tmp_path))["runs"]] == [
        "interrupted",
        "interrupted",
        "pending",
        "pending",
    ]


def test_resume_of_something_else_is_a_user_error(tmp_path: Path):
    from retrain.errors import RetrainError

    with pytest.raises(RetrainError, match="not a campaign directory"):
        resume_campaign(tmp_path)


def test_auto_squeeze_after_the_first_completed_run(tmp_path: Path, capsys):
    cfg, _ = campaign_config(tmp_path, "\n[squeeze]\nmin_variance_retention = 0.9\n")
    fake = FakeExecutor({"grpo+none_s1": "failed"}, adapter=True)
    assert run_campaign(cfg, executor=fake) == 1
    squeeze = read_manifest(only_campaign(tmp_path))["squeeze"]
    assert squeeze["run"] == "grpo+none_s2"  # the first to complete, not the first in the grid
    assert squeeze["recommended_rank"] == 2 and squeeze["source_rank"] == 4 and squeeze["threshold"] == 0.9
    table = {row["rank"]: row["mean"] for row in squeeze["table"]}
    assert table[1] == pytest.approx(0.8) and table[2] == pytest.approx(1.0)
    assert "recommended" in capsys.readouterr().out


def test_auto_squeeze_failure_is_recorded_not_fatal(tmp_path: Path):
    cfg, _ = campaign_config(tmp_path, "\n[squeeze]\n")
    assert run_campaign(cfg, executor=FakeExecutor(adapter=False)) == 0
    squeeze = read_manifest(only_campaign(tmp_path))["squeeze"]
    assert squeeze["run"] == "grpo+none_s1" and "error" in squeeze
    assert squeeze["adapter_path"].endswith("runs/grpo+none_s1/adapter/final")


def test_run_json_paths_are_absolute_for_remote_workers(tmp_path: Path):
    cfg, _ = campaign_config(tmp_path)
    seen: list[Job] = []

    class Capture(FakeExecutor):
        def run(self, jobs, on_start, on_finish):
            seen.extend(jobs)
            super().run(jobs, on_start, on_finish)

    run_campaign(cfg, executor=Capture())
    assert all(j.run_dir.is_absolute() for j in seen)
    assert all(load_config(j.run_dir / "config.toml").logging.log_dir == str(j.run_dir) for j in seen)
