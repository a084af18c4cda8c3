"""End-to-end runs on the tiny random model: files, every metric, golden values, learning, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runutil import read_jsonl, without_timing, write_tiny_config

from retrain.config import load_config
from retrain.run import resume, train

TESTS_DIR = Path(__file__).parent

# Every key docs/metrics.md promises in every metrics.jsonl row (plus eval_correct_rate, issue #3).
SPEC_METRIC_KEYS = {
    "step",
    "condition",
    "seed",
    "correct_rate",
    "running_correct_rate",
    "mean_reward",
    "exec_entropy_mean",
    "exec_entropy_var",
    "plan_entropy_mean",
    "plan_entropy_var",
    "post_exec_entropy_var",
    "sepa_lambda",
    "sepa_gate_open",
    "max_token_hit_rate",
    "loss",
    "loss_is_placeholder",
    "backend_reports_sync_loss",
    "num_datums",
    "reward_tie_group_rate",
    "reward_uniform_group_rate",
    "reward_tie_pair_rate",
    "reward_unique_fraction_mean",
    "bp_regime",
    "bp_action",
    "bp_p_star",
    "batch_size",
    "group_size",
    "step_time_s",
    "sample_time_s",
    "train_time_s",
    "tokens_per_second",
    "sampler_train_kl",
    "planning_token_fraction",
    "eval_correct_rate",
}
EMERGENCE_STEP_KEYS = {
    "step",
    "condition",
    "mean_reward",
    "correct_count",
    "total_count",
    "exec_entropy_mean",
    "exec_entropy_var",
    "plan_entropy_mean",
    "plan_entropy_var",
    "sepa_lambda",
    "planning_token_fraction",
}
GENERATION_KEYS = {
    "step",
    "prompt",
    "completion",
    "reward",
    "correct",
    "num_tokens",
    "hit_max_tokens",
    "planning_phrases",
}


def _run(tmp_path: Path, name: str, **kw) -> Path:
    log_dir = tmp_path / name
    cfg = load_config(write_tiny_config(tmp_path / f"{name}.toml", log_dir, **kw))
    assert train(cfg) == 0
    return log_dir


@pytest.fixture(scope="module")
def three_step_run(tmp_path_factory) -> Path:
    return _run(tmp_path_factory.mktemp("golden"), "run", steps=3)


def test_run_dir_holds_every_file_and_metric(three_step_run: Path):
    d = three_step_run
    for rel in [
        "config.toml",
        "config.json",
        "run.json",
        "metrics.jsonl",
        "eval.jsonl",
        "trainer_state.json",
        "emergence/steps.jsonl",
        "emergence/generations.jsonl",
        "adapter/checkpoint_step_1/adapter_model.safetensors",
        "adapter/checkpoint_step_2/adapter_config.json",
        "adapter/final/adapter_model.safetensors",
        "adapter/final/optimizer.pt",
    ]:
        assert (d / rel).exists(), rel
    rows = read_jsonl(d / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert SPEC_METRIC_KEYS <= set(r), SPEC_METRIC_KEYS - set(r)
        assert r["condition"] == "maxrl+gtpo_sepa" and r["seed"] == 7
        assert r["batch_size"] == 2 and r["group_size"] == 4
        assert r["backend_reports_sync_loss"] is True and r["loss_is_placeholder"] is False
    steps = read_jsonl(d / "emergence/steps.jsonl")
    assert [s["step"] for s in steps] == [0, 1, 2]
    assert all(EMERGENCE_STEP_KEYS <= set(s) for s in steps)
    assert all(s["total_count"] == 8 for s in steps)
    gens = read_jsonl(d / "emergence/generations.jsonl")
    assert len(gens) == 3 * 2  # generations_per_prompt = 1, 2 prompts per step
    assert all(GENERATION_KEYS <= set(g) for g in gens)
    # eval every 2 steps and at the end, plus the base model before step 0
    evals = read_jsonl(d / "eval.jsonl")
    assert [e["after_step"] for e in evals] == [-1, 1, 2]
    assert rows[0]["eval_correct_rate"] is None
    # each eval row is the greedy accuracy on the 4 held-out prompts, and the metrics row carries it
    assert all(e["num_examples"] == 4 and e["eval_correct_rate"] in (0.0, 0.25, 0.5, 0.75, 1.0) for e in evals)
    assert [rows[1]["eval_correct_rate"], rows[2]["eval_correct_rate"]] == [e["eval_correct_rate"] for e in evals[1:]]
    info = json.loads((d / "run.json").read_text())
    assert info["status"] == "completed" and info["step"] == 2
    assert info["versions"]["torch"] and info["versions"]["retrain"]
    # dtype = "auto" records what it resolved to and why (the tiny model is too narrow for bf16)
    assert info["dtype"]["dtype"] == "float32" and "too small" in info["dtype"]["reason"]
    state = json.loads((d / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["checkpoint"] == "adapter/final"
    # the resolved config round-trips and names this run dir
    assert load_config(d / "config.toml").logging.log_dir == str(d)


def test_every_file_of_a_run_gets_the_umask_mode(three_step_run: Path):
    """Adapter weights were 0600 (safetensors) beside 0644 JSON (issue #11 item 9)."""
    umask = os.umask(0)
    os.umask(umask)
    modes = {
        p.relative_to(three_step_run).as_posix(): p.stat().st_mode & 0o777
        for p in three_step_run.rglob("*")
        if p.is_file() and "wandb" not in p.parts
    }
    assert modes["adapter/final/adapter_model.safetensors"] == 0o666 & ~umask
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_metrics_are_consistent(three_step_run: Path):
    rows = read_jsonl(three_step_run / "metrics.jsonl")
    steps = read_jsonl(three_step_run / "emergence/steps.jsonl")
    total = correct = 0
    for r, s in zip(rows, steps, strict=True):
        assert r["correct_rate"] == pytest.approx(s["correct_count"] / s["total_count"])
        total += s["total_count"]
        correct += s["correct_count"]
        assert r["running_correct_rate"] == pytest.approx(correct / total)
        # linear SEPA schedule with steps=3, delay 0, gate open from the start
        assert r["sepa_lambda"] == pytest.approx(min(r["step"] / 3, 1.0))
        assert r["sepa_gate_open"] is True
        assert 0 <= r["planning_token_fraction"] <= 1
        if r["num_datums"] == 0:
            assert r["loss"] is None
        else:
            assert isinstance(r["loss"], float)
            # on-policy: sampler and trainer agree up to numerics
            assert abs(r["sampler_train_kl"]) < 1e-3


# Pinned from a reference run of this exact config (CPU, fp32). A change to sampling, scoring,
# advantages, transforms or the loss moves these; update them only for an intended change.
# (mean_reward, num_datums, loss, exec_entropy_mean) per step. Steps 1-2 have loss ≈ 0: every
# completion ran to max_tokens, so equal lengths make the token mean of −A·w cancel within groups.
GOLDEN = [
    (0.15223214285714284, 8, 0.07891682535409927, 5.774065158406242),
    (0.03869047619047619, 4, 3.3527612686157227e-08, 5.726128451526165),
    (0.11160714285714285, 8, 2.9802322387695312e-08, 5.743611916899681),
]


def test_golden_three_step_run(three_step_run: Path):
    rows = without_timing(read_jsonl(three_step_run / "metrics.jsonl"))
    got = [(r["mean_reward"], r["num_datums"], r["loss"], r["exec_entropy_mean"]) for r in rows]
    for g, want in zip(got, GOLDEN, strict=True):
        assert g[1] == want[1]
        for a, b in zip((g[0], g[2], g[3]), (want[0], want[2], want[3]), strict=True):
            assert a == pytest.approx(b, rel=1e-4, abs=1e-6)


def test_same_seed_same_metrics(tmp_path: Path, three_step_run: Path):
    again = _run(tmp_path, "again", steps=3)
    assert without_timing(read_jsonl(again / "metrics.jsonl")) == without_timing(
        read_jsonl(three_step_run / "metrics.jsonl")
    )


@pytest.mark.slow
def test_reward_goes_up(tmp_path: Path):
    d = _run(tmp_path, "learn", steps=20, lr=3e-2, save_every=0, adv="grpo", transform="none")
    rewards = [r["mean_reward"] for r in read_jsonl(d / "metrics.jsonl")]
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 0.2, rewards


def test_train_refuses_an_existing_run_dir(three_step_run: Path):
    from retrain.errors import RetrainError

    cfg = load_config(three_step_run / "config.toml")
    with pytest.raises(RetrainError, match="retrain resume"):
        train(cfg, three_step_run)


def test_resume_of_a_completed_run_does_nothing(three_step_run: Path):
    before = (three_step_run / "metrics.jsonl").read_text()
    assert resume(three_step_run) == 0
    assert (three_step_run / "metrics.jsonl").read_text() == before


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path):
    steps = 8
    whole = _run(tmp_path, "whole", steps=steps, save_every=2)
    killed = tmp_path / "killed"
    cfg_path = write_tiny_config(tmp_path / "killed.toml", killed, steps=steps, save_every=2)
    # keep the caller's PYTHONPATH: the killed run must run the same retrain as the in-process ones
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "retrain", str(cfg_path)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 120
    # Kill after step 2 is logged: the last checkpoint is after step 1, so step 2 must be redone.
    while time.time() < deadline:
        if metrics.exists() and len(read_jsonl(metrics)) >= 3:
            break
        assert proc.poll() is None, "run ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(read_jsonl(metrics))
    assert 3 <= n_before < steps
    assert json.loads((killed / "run.json").read_text())["status"] == "running"  # killed, not finished

    checkpoint_step = json.loads((killed / "trainer_state.json").read_text())["step"]
    assert resume(killed) == 0
    got = read_jsonl(metrics)
    assert [r["step"] for r in got] == list(range(steps))
    assert without_timing(got) == without_timing(read_jsonl(whole / "metrics.jsonl"))
    assert without_timing(read_jsonl(killed / "eval.jsonl")) == without_timing(read_jsonl(whole / "eval.jsonl"))
    # the rows logged after the checkpoint were moved aside, not lost
    discarded = read_jsonl(killed / "metrics.discarded.jsonl") if checkpoint_step + 1 < n_before else []
    assert [r["step"] for r in discarded] == list(range(checkpoint_step + 1, n_before))
    assert json.loads((killed / "run.json").read_text())["status"] == "completed"


def test_wandb_offline_records_name_group_tags_and_keys(tmp_path: Path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    log_dir = tmp_path / "wb"
    cfg_path = write_tiny_config(tmp_path / "wb.toml", log_dir, steps=2)
    text = cfg_path.read_text().replace(
        "[logging]\n", '[logging]\nwandb_project = "retrain-test"\nwandb_mode = "offline"\nwandb_tags = ["smoke"]\n'
    )
    cfg_path.write_text(text)
    assert train(load_config(cfg_path)) == 0
    record = read_offline_wandb(log_dir)
    assert record["name"] == "maxrl+gtpo_sepa_s7"
    assert record["group"] == "maxrl+gtpo_sepa"
    assert record["tags"] == ["maxrl+gtpo_sepa", "seed7", "smoke"]
    assert record["config"]["condition"] == "maxrl+gtpo_sepa"
    assert record["config"]["advantage_mode"] == "maxrl" and record["config"]["seed"] == 7
    assert record["config"]["training.lr"] == pytest.approx(1e-2)
    for key in [
        "train/rewards/correct_rate",
        "train/rewards/running_correct_rate",
        "train/rewards/mean_reward",
        "train/sepa_lambda",
        "train/sepa_gate_open",
        "train/entropy/exec_mean",
        "train/entropy/exec_var",
        "train/entropy/plan_mean",
        "train/entropy/plan_var",
        "train/loss",
        "train/num_datums",
        "train/max_token_hit_rate",
        "train/backpressure/regime",
    ]:
        assert key in record["keys"], key
    assert record["steps"] == [0, 1]


def _wandb_log_records(path: Path):
    """Records of a .wandb file: a 7-byte header (":W&B", magic, version), then LevelDB-log-style
    32 KiB blocks of chunks (crc32 4 bytes, length 2, type 1: full/first/middle/last)."""
    import struct

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left_in_block = block - pos % block
        if left_in_block < 7:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


def _has_exit_record(path: Path) -> bool:
    from wandb.proto import wandb_internal_pb2

    for data in _wandb_log_records(path):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        if rec.WhichOneof("record_type") == "exit":
            return True
    return False


def read_offline_wandb(log_dir: Path) -> dict:
    """Decode the offline run's .wandb file: run name, group, tags, config and logged keys."""
    from wandb.proto import wandb_internal_pb2

    files = list((log_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    # wandb's service process may still be writing after run.finish() returns: wait for the exit record.
    deadline = time.time() + 30
    while time.time() < deadline and not _has_exit_record(files[0]):
        time.sleep(0.2)
    out = {"keys": set(), "steps": [], "config": {}}
    for data in _wandb_log_records(files[0]):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out.update(name=rec.run.display_name, group=rec.run.run_group, tags=list(rec.run.tags))
            for item in rec.run.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
            out["keys"] |= set(items)
            if "step" in items:
                out["steps"].append(items["step"])
    return out


def test_resume_sets_aside_rows_after_the_checkpoint_and_keeps_them(tmp_path: Path):
    """Fast check of the resume bookkeeping (the SIGKILL test covers it end to end)."""
    from retrain.run import _set_aside_rows_after

    (tmp_path / "emergence").mkdir()
    rows = "".join(json.dumps({"step": s, "v": s}) + "\n" for s in range(5))
    (tmp_path / "metrics.jsonl").write_text(rows + '{"step": 5, "v"')  # a half-written line from a kill
    (tmp_path / "emergence" / "steps.jsonl").write_text(rows)
    evals = [{"after_step": s, "eval_correct_rate": 0.5} for s in (-1, 1, 3)]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))

    _set_aside_rows_after(tmp_path, last_step=2)
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [0, 1, 2]
    assert [r["step"] for r in read_jsonl(tmp_path / "emergence" / "steps.jsonl")] == [0, 1, 2]
    assert [e["after_step"] for e in read_jsonl(tmp_path / "eval.jsonl")] == [-1, 1]
    discarded = (tmp_path / "metrics.discarded.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in discarded[:2]] == [3, 4] and discarded[2] == '{"step": 5, "v"'
    assert [e["after_step"] for e in read_jsonl(tmp_path / "eval.discarded.jsonl")] == [3]

    # never checkpointed: everything, the base-model eval included, is set aside for a fresh start
    _set_aside_rows_after(tmp_path, last_step=-1)
    assert (tmp_path / "metrics.jsonl").read_text() == "" and (tmp_path / "eval.jsonl").read_text() == ""
    assert len((tmp_path / "metrics.discarded.jsonl").read_text().splitlines()) == 6
