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
log_root = "{(tmp_path / "logs").as_posix()}"
[[campaign.conditions]]
advantage_mode = "grpo"
transform_mode = "none"
"logging.wandb_group" = "{long_value}"
""")
    with pytest.raises(RetrainError, match=r"is 3\d\d bytes, but a directory name holds at most 255"):
        run_campaign(load_config(path))
    assert not (tmp_path / "logs").exists()


def tiny(tmp_path: Path, log_dir: Path, extra: str = "", **replace: str) -> Path:
    path = write_tiny_config(tmp_path / "r.toml", log_dir, steps=1, extra=extra)
    text = path.read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    return path


def test_bad_data_file_writes_nothing_and_the_fixed_rerun_uses_the_same_dir(tmp_path: Path):
    data = tmp_path / "d.jsonl"
    data.write_bytes(b'{"prompt": "1+1=", "answer": "2"}\n{"prompt": "\xff", "answer": "3"}\n')
    log_dir = tmp_path / "logs" / "run"
    path = tiny(tmp_path, log_dir, **{'source = "arithmetic"': f'source = "jsonl"\npath = "{data.as_posix()}"'})
    path.write_text(
        path.read_text().replace("[eval]\nevery = 2\nnum_examples = 4", "[eval]\nevery = 2\nnum_examples = 1")
    )
    with pytest.raises(RetrainError, match=r"d\.jsonl:2: not UTF-8"):
        train(load_config(path))
    assert not (tmp_path / "logs").exists()
    data.write_text('{"prompt": "1+1=", "answer": "2"}\n{"prompt": "2+2=", "answer": "4"}\n')
    assert train(load_config(path)) == 0
    assert (log_dir / "metrics.jsonl").is_file() and not (tmp_path / "logs" / "run_2").exists()


@pytest.mark.parametrize(("replace", "message"), [
    ({'name = "tiny-random"': 'name = "no-such-org/no-such-model-xyz"'},
     r"\[model\].name = 'no-such-org/no-such-model-xyz': cannot load its config"),
    ({'custom = "retrain_test_plugins:digit_fraction"': 'custom = "no_such_module_xyz:score"'},
     r"plugin 'no_such_module_xyz:score': cannot import module"),
    ({'advantage_mode = "maxrl"': 'advantage_mode = "retrain_test_plugins:no_such_fn"'},
     r"has no attribute 'no_such_fn'"),
    ({"[eval]\n": "[eval]\nmax_tokens = 1000000000000\n"},
     r"\[eval\].max_tokens = 1000000000000: tiny-random reads at most 1024 tokens"),
    ({"group_size = 4": "group_size = 1000000000"},
     r"group_size = 1000000000, max_tokens = 8: sampling holds 1000000000 sequences at once, which needs at least"),
    ({"batch_size = 2": "batch_size = 100000000000000000000000000"},
     r"batch_size x group_size x max_tokens = 100000000000000000000000000 x 4 x 8 tokens per step need at least"),
])  # fmt: skip
def test_problems_found_before_the_run_dir_exists(tmp_path: Path, replace: dict, message: str):
    log_dir = tmp_path / "logs" / "run"
    path = tiny(tmp_path, log_dir, **replace)
    with pytest.raises(RetrainError, match=message):
        train(load_config(path))
    assert not (tmp_path / "logs").exists()


def test_campaign_with_a_bad_plugin_writes_nothing(tmp_path: Path):
    from runutil import tiny_campaign_base

    from retrain.campaign.runner import run_campaign

    path = tmp_path / "c.toml"
    path.write_text(
        tiny_campaign_base(0).replace("retrain_test_plugins:digit_fraction", "nope_xyz:score")
        + f"""
[campaign]
seeds = [1, 2]
log_root = "{(tmp_path / "logs").as_posix()}"
[[campaign.conditions]]
advantage_mode = "grpo"
transform_mode = "none"
"""
    )
    with pytest.raises(RetrainError, match="nope_xyz"):
        run_campaign(load_config(path))
    assert not (tmp_path / "logs").exists()


def test_a_condition_label_cannot_climb_out_of_the_log_root(tmp_path: Path, monkeypatch):
    """[logging] condition = "../../victim/evil" wrote outside logs/ (campaign labels were sanitised, single runs not)."""
    from retrain.run import claim_run_dir

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    path = write_tiny_config(tmp_path / "r.toml", Path("."))
    path.write_text(path.read_text().replace('log_dir = "."', 'condition = "../../victim/evil"'))
    cfg = load_config(path)
    assert cfg.condition == "..-..-victim-evil" and "/" not in cfg.run_name
    run_dir, lock = claim_run_dir(cfg)
    lock.release()
    assert run_dir.resolve().parent == (work / "logs").resolve()
    assert not (tmp_path / "victim").exists()


def test_log_dir_on_a_read_only_filesystem(tmp_path: Path):
    """An unwritable log_dir (root writes through chmod, so a read-only mount stands in for it)."""
    import subprocess

    mnt = tmp_path / "ro"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {r.stderr.decode().strip()}")
    try:
        cfg = load_config(write_tiny_config(tmp_path / "r.toml", mnt / "run"))
        with pytest.raises(RetrainError, match=r"cannot create .*/ro/run \(Read-only file system\)"):
            train(cfg)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
