"""Validate before writing (issue #11 item 5): a problem the user can fix is reported before anything is
created, so nothing is left half written and the corrected rerun goes where the first one was meant to."""

from __future__ import annotations

from pathlib import Path

import pytest
from runutil import write_tiny_config

from retrain.config import load_config
from retrain.errors import RetrainError
from retrain.run import train


def tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_log_dir_that_is_a_file(tmp_path: Path):
    (tmp_path / "taken").write_text("my notes")
    cfg = load_config(write_tiny_config(tmp_path / "r.toml", tmp_path / "taken"))
    with pytest.raises(RetrainError, match=r"cannot create .*taken \(a file is in the way"):
        train(cfg)
    assert (tmp_path / "taken").read_text() == "my notes"


def test_log_dir_under_a_file(tmp_path: Path):
    (tmp_path / "taken").write_text("my notes")
    cfg = load_config(write_tiny_config(tmp_path / "r.toml", tmp_path / "taken" / "run"))
    with pytest.raises(RetrainError, match="a file is in the way"):
        train(cfg)


def test_a_label_too_long_for_a_directory_name(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_tiny_config(tmp_path / "r.toml", Path(""), extra="")
    text = path.read_text().replace('log_dir = "."', f'condition = "{"x" * 300}"')
    path.write_text(text)
    before = tree(tmp_path)
    with pytest.raises(RetrainError, match="a directory name holds at most 255"):
        train(load_config(path))
    assert tree(tmp_path) == before  # not even logs/


def test_campaign_with_a_run_name_too_long_writes_nothing(tmp_path: Path):
    from retrain.campaign.runner import run_campaign

    long_value = "v" * 300
    path = tmp_path / "c.toml"
    path.write_text(f"""
[campaign]
seeds = [1]
log_root = "{(tmp_path / 'logs').as_posix()}"
[[campaign.conditions]]
advantage_mode = "grpo"
transform_mode = "none"
"logging.wandb_group" = "{long_value}"
""")
    with pytest.raises(RetrainError, match=r"is 3\d\d bytes, but a directory name holds at most 255"):
        run_campaign(load_config(path))
    assert not (tmp_path / "logs").exists()
