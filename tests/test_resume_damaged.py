"""Resume on damaged or edited state (issue #11 item 6): trust the files that prove progress, fall back
to the newest intact checkpoint with a message saying why, or stop with one clear error; never a
traceback, never a silent restart, never "completed" for a run that is not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from runutil import read_jsonl, without_timing, write_tiny_config

from retrain.checkpoints import Choice, choose_checkpoint, is_complete
from retrain.config import load_config
from retrain.errors import RetrainError
from retrain.run import resume, train

STEPS = 4


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A completed 4-step run with a checkpoint after every step: checkpoint_step_1..3 and final."""
    tmp = tmp_path_factory.mktemp("damaged")
    log_dir = tmp / "base"
    assert train(load_config(write_tiny_config(tmp / "base.toml", log_dir, steps=STEPS, save_every=1))) == 0
    return log_dir


@pytest.fixture
def run(base_run: Path, tmp_path: Path) -> Path:
    """A copy of the base run to damage (config.toml's log_dir still names the base: resume uses the dir it is given)."""
    copy = tmp_path / "run"
    shutil.copytree(base_run, copy)
    return copy


def state(run: Path, rel: str = "trainer_state.json") -> dict:
    return json.loads((run / rel).read_text())


def make_partial(run: Path) -> None:
    """Turn the completed copy into one killed after the checkpoint of step 2 (3 of 4 steps logged)."""
    shutil.rmtree(run / "adapter" / "final")
    (run / "trainer_state.json").write_text(json.dumps(state(run, "adapter/checkpoint_step_3/trainer_state.json")))
    rows = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text("".join(rows[:3]))
    info = state(run, "run.json")
    (run / "run.json").write_text(json.dumps({**info, "status": "running", "step": 2}))


def assert_finished_like_base(run: Path, base_run: Path) -> None:
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(STEPS))
    assert without_timing(rows) == without_timing(read_jsonl(base_run / "metrics.jsonl"))  # exact resume
    assert state(run, "run.json")["status"] == "completed"
    assert is_complete(run, STEPS)


# ---------------------------------------------------------------------------------------------
# Which checkpoint (no model needed)


def test_every_checkpoint_records_its_state_and_file_sizes(base_run: Path):
    top = state(base_run)
    assert top["step"] == 3 and top["checkpoint"] == "adapter/final"
    for rel, step in [("adapter/checkpoint_step_1", 0), ("adapter/checkpoint_step_3", 2), ("adapter/final", 3)]:
        record = state(base_run, f"{rel}/trainer_state.json")
        assert record["step"] == step and record["checkpoint"] == rel
        assert record["files"]["optimizer.pt"] == (base_run / rel / "optimizer.pt").stat().st_size > 0
        assert set(record["files"]) >= {"adapter_model.safetensors", "adapter_config.json", "optimizer.pt"}
    assert not list((base_run / "adapter").glob(".*"))  # no partial dirs left behind
    assert choose_checkpoint(base_run) == Choice(top, "trainer_state.json", [])


@pytest.mark.parametrize(("damage", "why"), [
    (lambda p: p.write_text(""), "trainer_state.json is empty"),
    (lambda p: p.write_bytes(b"\xff\xfe{"), "trainer_state.json not UTF-8"),
    (lambda p: p.write_text('{"step": 3, "checkp'), "trainer_state.json is not valid JSON"),
    (lambda p: p.write_text(json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k != "cursor"})),
     "missing key 'cursor'"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "step": "3"})), "'step' should be int"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "checkpoint": "../../victim"})),
     "'../../victim' is not a directory under adapter/"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "checkpoint": "/etc"})),
     "'/etc' is not a directory under adapter/"),
])  # fmt: skip
def test_a_damaged_trainer_state_falls_back_to_the_checkpoints_own_record(run: Path, damage, why):
    damage(run / "trainer_state.json")
    choice = choose_checkpoint(run)
    assert choice.source == "adapter/final/trainer_state.json" and choice.step == 3
    assert len(choice.skipped) == 1 and why in choice.skipped[0]


def test_without_any_intact_state_the_error_lists_every_reason_and_the_way_out(run: Path):
    (run / "trainer_state.json").write_text("")
    for record in (run / "adapter").glob("*/trainer_state.json"):
        record.write_text('{"step": 1}')
    with pytest.raises(RetrainError) as err:
        choose_checkpoint(run)
    msg = str(err.value)
    assert "trainer_state.json is empty" in msg and "adapter/final/trainer_state.json missing key" in msg
    assert "start this run again from step 0" in msg


def test_a_truncated_optimizer_or_adapter_is_not_trusted(run: Path):
    opt = run / "adapter" / "final" / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[:100])
    weights = run / "adapter" / "checkpoint_step_3" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1])
    choice = choose_checkpoint(run)
    assert choice.state["checkpoint"] == "adapter/checkpoint_step_2" and choice.step == 1
    assert "adapter/final/optimizer.pt has 100 bytes" in choice.skipped[0]
    assert "adapter_model.safetensors has" in choice.skipped[1]


def test_an_edited_step_is_not_believed(run: Path):
    make_partial(run)
    (run / "trainer_state.json").write_text(json.dumps({**state(run), "step": 500}))
    choice = choose_checkpoint(run)
    assert choice.step == 2 and choice.source == "adapter/checkpoint_step_3/trainer_state.json"
    assert "it says step 500 but adapter/checkpoint_step_3/trainer_state.json says step 2" in choice.skipped[0]
    assert "metrics.jsonl ends at step 2" in choice.skipped[0]


def test_run_json_completed_is_not_proof(run: Path):
    make_partial(run)
    (run / "run.json").write_text(json.dumps({**state(run, "run.json"), "status": "completed"}))
    assert not is_complete(run, STEPS)


# ---------------------------------------------------------------------------------------------
# Resuming (loads the tiny model)


def test_deleted_current_checkpoint_resumes_from_the_newest_intact_one(run: Path, base_run: Path, capsys):
    shutil.rmtree(run / "adapter" / "final")
    assert resume(run) == 0
    err = capsys.readouterr().err
    assert "cannot resume from trainer_state.json: its checkpoint adapter/final is missing" in err
    assert "resuming from adapter/checkpoint_step_3 (after step 2) instead" in err
    assert_finished_like_base(run, base_run)
    # the row of step 3 is logged again; the first one is kept aside, not lost
    assert [r["step"] for r in read_jsonl(run / "metrics.discarded.jsonl")] == [3]


def test_edited_step_resumes_where_the_files_say(run: Path, base_run: Path, capsys):
    make_partial(run)
    (run / "trainer_state.json").write_text(json.dumps({**state(run), "step": 500}))
    assert resume(run) == 0
    assert "it says step 500" in capsys.readouterr().err
    assert_finished_like_base(run, base_run)


def test_run_json_edited_to_completed_still_finishes_the_run(run: Path, base_run: Path, capsys):
    make_partial(run)
    (run / "run.json").write_text(json.dumps({**state(run, "run.json"), "status": "completed"}))
    assert resume(run) == 0
    assert (
        "run.json says completed, but the newest checkpoint its files prove is after step 2 of 4"
        in capsys.readouterr().err
    )
    assert_finished_like_base(run, base_run)


def test_completed_run_with_stale_run_json_is_marked_completed_without_training(run: Path, capsys):
    (run / "run.json").write_text(json.dumps({**state(run, "run.json"), "status": "running"}))
    before = (run / "metrics.jsonl").read_text()
    assert resume(run) == 0
    assert "already completed (4 steps)" in capsys.readouterr().out
    assert state(run, "run.json")["status"] == "completed" and (run / "metrics.jsonl").read_text() == before


def test_same_size_garbage_in_a_checkpoint_is_one_clear_error(run: Path):
    """A checkpoint that passes the size checks but cannot be loaded: a RetrainError (exit 2, no
    traceback) naming the checkpoint and the way out; run.json records the failure."""
    make_partial(run)
    opt = run / "adapter" / "checkpoint_step_3" / "optimizer.pt"
    opt.write_bytes(b"\0" * opt.stat().st_size)
    with pytest.raises(RetrainError) as err:
        resume(run)
    msg = str(err.value)
    assert "the checkpoint adapter/checkpoint_step_3 (after step 2) could not be restored" in msg
    assert f"move {run / 'adapter' / 'checkpoint_step_3'} out of the run dir and resume again" in msg
    assert state(run, "run.json")["status"] == "failed"


@pytest.mark.slow
def test_a_run_that_never_checkpointed_says_it_starts_over(run: Path, capsys):
    shutil.rmtree(run / "adapter")
    (run / "trainer_state.json").unlink()
    (run / "run.json").write_text(json.dumps({**state(run, "run.json"), "status": "running"}))
    assert resume(run) == 0
    err = capsys.readouterr().err
    assert "no checkpoint to continue from; starting again at step 0 (4 metrics row(s) moved" in err
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == list(range(STEPS))
