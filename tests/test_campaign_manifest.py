"""The campaign manifest and dir layout: atomic writes, run entries, states, labels → dirs."""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime
from pathlib import Path

import pytest

from retrain.campaign.grid import expand_campaign
from retrain.campaign.manifest import (
    Manifest,
    is_campaign_dir,
    new_manifest,
    read_manifest,
    run_entry,
)  # fmt: skip
from retrain.campaign.runner import make_campaign_dir, prepare_run_dir
from retrain.config import Config, load_config
from retrain.errors import RetrainError
from retrain.jsonio import write_json_atomic


def _manifest(tmp_path: Path, names=("grpo+none_s1", "grpo+none_s2")) -> Manifest:
    runs = [run_entry(n, n.rsplit("_s", 1)[0], int(n.rsplit("_s", 1)[1]), f"runs/{n}") for n in names]
    doc = new_manifest(
        config_path=None, conditions=["grpo+none"], seeds=[1, 2], max_steps=3, executor="sequential", runs=runs
    )
    return Manifest.create(tmp_path, doc)


def test_new_manifest_has_every_documented_field(tmp_path: Path):
    m = _manifest(tmp_path)
    doc = json.loads((tmp_path / "manifest.json").read_text())
    assert set(doc) == {
        "version",
        "created_at",
        "config_path",
        "conditions",
        "seeds",
        "max_steps",
        "executor",
        "runs",
        "squeeze",
    }
    assert doc["squeeze"] is None and doc["max_steps"] == 3 and doc["seeds"] == [1, 2]
    assert datetime.fromisoformat(doc["created_at"]).tzinfo is not None  # unambiguous across hosts
    entry = doc["runs"][0]
    assert entry == {
        "name": "grpo+none_s1",
        "condition": "grpo+none",
        "seed": 1,
        "state": "pending",
        "returncode": None,
        "log_dir": "runs/grpo+none_s1",
        "adapter_dir": "runs/grpo+none_s1/adapter",
        "started_at": None,
        "finished_at": None,
        "elapsed_s": None,
        "stdout": None,
        "stderr": None,
        "error": None,
    }
    assert m.run_dir("grpo+none_s1") == (tmp_path / "runs/grpo+none_s1").resolve()
    assert is_campaign_dir(tmp_path) and not is_campaign_dir(tmp_path / "runs")


def test_duplicate_run_names_are_refused(tmp_path: Path):
    runs = [run_entry("a_s1", "a", 1, "runs/a_s1"), run_entry("a_s1", "a", 1, "runs/a_s1")]
    with pytest.raises(RetrainError, match="share a name"):
        new_manifest(config_path=None, conditions=["a"], seeds=[1], max_steps=1, executor="sequential", runs=runs)


def test_update_run_persists_and_validates(tmp_path: Path):
    m = _manifest(tmp_path)
    m.update_run("grpo+none_s2", state="failed", returncode=1, error="boom")
    on_disk = read_manifest(tmp_path)["runs"][1]
    assert (on_disk["state"], on_disk["returncode"], on_disk["error"]) == ("failed", 1, "boom")
    assert Manifest.load(tmp_path).run("grpo+none_s2")["state"] == "failed"
    with pytest.raises(ValueError, match="state"):
        m.update_run("grpo+none_s1", state="done")  # not a manifest state
    with pytest.raises(ValueError, match="unknown"):
        m.update_run("grpo+none_s1", colour="red")
    with pytest.raises(KeyError):
        m.update_run("nope_s1", state="running")


def test_mark_running_as_interrupted_touches_only_running_runs(tmp_path: Path):
    m = _manifest(tmp_path, names=("a_s1", "a_s2", "a_s3"))
    m.update_run("a_s1", state="completed")
    m.update_run("a_s2", state="running")
    assert m.mark_running_as("interrupted") == ["a_s2"]
    assert [e["state"] for e in read_manifest(tmp_path)["runs"]] == ["completed", "interrupted", "pending"]


def test_concurrent_updates_lose_nothing(tmp_path: Path):
    names = [f"c_s{i}" for i in range(8)]
    m = _manifest(tmp_path, names=names)

    def work(name):
        for k in range(10):
            m.update_run(name, returncode=k)

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e["returncode"] for e in read_manifest(tmp_path)["runs"]] == [9] * 8
    assert not list(tmp_path.glob(".manifest.json.*"))  # no temp files left behind


def test_write_json_atomic_keeps_old_file_when_serialisation_fails(tmp_path: Path):
    path = tmp_path / "m.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["m.json"]


def test_read_manifest_errors_name_the_problem(tmp_path: Path):
    with pytest.raises(RetrainError, match="not a campaign directory"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(RetrainError, match="cannot read"):
        read_manifest(tmp_path)


def test_campaign_dir_never_reused(tmp_path: Path):
    t = datetime(2025, 2, 15, 14, 30, 22)
    first = make_campaign_dir(tmp_path / "logs", t)
    second = make_campaign_dir(tmp_path / "logs", t)
    third = make_campaign_dir(tmp_path / "logs", t)
    assert [p.name for p in (first, second, third)] == [
        "campaign_20250215_143022",
        "campaign_20250215_143022_2",
        "campaign_20250215_143022_3",
    ]
    assert all(p.is_dir() for p in (first, second, third))


CAMPAIGN_TOML = """
[training]
max_steps = 5
[campaign]
seeds = [42, 101]
max_steps = 3
[[campaign.conditions]]
advantage_mode = "grpo"
transform_mode = "none"
[[campaign.conditions]]
advantage_mode = "maxrl"
transform_mode = "gtpo_sepa"
"sepa.steps" = 100
[backend.options]
micro_batch_size = 2
"""


def test_labels_become_run_dirs_with_absolute_log_dir_and_full_config(tmp_path: Path):
    toml = tmp_path / "c.toml"
    toml.write_text(CAMPAIGN_TOML)
    specs = expand_campaign(load_config(toml))
    campaign = tmp_path / "camp"
    entries = [prepare_run_dir(campaign, s) for s in specs]
    assert [e["log_dir"] for e in entries] == [
        "runs/grpo+none_s42",
        "runs/grpo+none_s101",
        "runs/maxrl+gtpo_sepa~sepa.steps=100_s42",
        "runs/maxrl+gtpo_sepa~sepa.steps=100_s101",
    ]
    assert [e["condition"] for e in entries][2] == "maxrl+gtpo_sepa~sepa.steps=100"
    run_dir = campaign / entries[2]["log_dir"]
    cfg = load_config(run_dir / "config.toml")
    assert Path(cfg.logging.log_dir).is_absolute() and Path(cfg.logging.log_dir) == run_dir.resolve()
    assert cfg.sepa.steps == 100 and cfg.training.seed == 42 and cfg.training.max_steps == 3
    assert cfg.backend.options == {"micro_batch_size": 2}  # nested free tables survive
    assert cfg.condition == "maxrl+gtpo_sepa~sepa.steps=100" and cfg.campaign is None
    assert json.loads((run_dir / "config.json").read_text())["sepa"]["steps"] == 100
    with pytest.raises(FileExistsError):  # a run dir is never prepared twice
        prepare_run_dir(campaign, specs[0])


def test_run_names_with_a_slash_are_refused(tmp_path: Path):
    from retrain.campaign.grid import RunSpec

    with pytest.raises(RetrainError, match="not a valid directory name"):
        prepare_run_dir(tmp_path, RunSpec("a/b", 1, "a/b_s1", Config()))
