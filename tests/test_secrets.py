"""Secrets never reach a file retrain writes (issue #11 item 9): config.toml/json, campaign.toml,
wandb, explain; the run still gets them (from the environment), and so does a later resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from runutil import write_tiny_config

from retrain.config import config_to_toml, load_config
from retrain.errors import RetrainError
from retrain.secrets import (
    REDACTED,
    expand_secrets,
    expand_secrets_in,
    externalize,
    redact,
    secret_spans,
)

TESTS_DIR = Path(__file__).parent
URL = "https://alice:hunter2@vllm.example:8000/v1?api_key=sk-abc123&model=qwen"


@pytest.fixture(autouse=True)
def _restore_secret_env():
    """load_config moves literal secrets into os.environ; keep them from leaking into other tests."""
    before = {k: v for k, v in os.environ.items() if k.startswith("RETRAIN_SECRET_")}
    yield
    for k in [k for k in os.environ if k.startswith("RETRAIN_SECRET_")]:
        del os.environ[k]
    os.environ.update(before)


@pytest.mark.parametrize(("key", "value", "secrets"), [
    ("url", URL, ["hunter2", "sk-abc123"]),
    ("url", "http://localhost:8000/v1", []),
    ("url", "https://alice@host/v1?model=x&token=t0k", ["t0k"]),
    ("url", "https://alice:${PW}@host/v1", []),  # a reference is not a secret
    ("api_key", "sk-live-1", ["sk-live-1"]),
    ("tinker_api_key", "tk", ["tk"]),
    ("TOKEN", "x", ["x"]),
    ("api_key", "${TINKER_API_KEY}", []),
    ("monkey", "banana", []),  # ends in "key" but is not *_key
    ("keys", "a", []),
    ("name", "Qwen/Qwen3-4B", []),
])  # fmt: skip
def test_what_counts_as_a_secret(key: str, value: str, secrets: list[str]):
    assert [value[a:b] for a, b in secret_spans(key, value)] == secrets
    shown = redact({key: value})[key]
    assert all(s not in shown for s in secrets) and shown.count(REDACTED) == len(secrets)


def test_secrets_in_a_command_line_list():
    """`[inference] server_args` hands flags to the vLLM server: `--api-key VALUE` and `--token=VALUE`."""
    doc = {
        "inference": {
            "server_args": ["--max-model-len", "4096", "--api-key", "sk-1", "--token=t0k", "--api-key", "${VLLM_KEY}"]
        }
    }
    out, moved = externalize(doc, {})
    assert out["inference"]["server_args"] == [
        "--max-model-len",
        "4096",
        "--api-key",
        "${RETRAIN_SECRET_INFERENCE_SERVER_ARGS_3}",
        "--token=${RETRAIN_SECRET_INFERENCE_SERVER_ARGS_4}",
        "--api-key",
        "${VLLM_KEY}",
    ]
    assert set(moved.values()) == {"sk-1", "t0k"}
    assert redact(doc)["inference"]["server_args"][3:5] == [REDACTED, f"--token={REDACTED}"]


def test_externalize_then_expand_round_trips():
    doc = {"inference": {"url": URL}, "backend": {"options": {"api_key": "sk-1", "n": 3}}, "x": ["${HOME}"]}
    env: dict[str, str] = {"HOME": "/h"}
    out, moved = externalize(doc, env)
    assert "hunter2" not in json.dumps(out) and "sk-1" not in json.dumps(out)
    assert out["backend"]["options"] == {"api_key": "${RETRAIN_SECRET_BACKEND_OPTIONS_API_KEY}", "n": 3}
    assert moved == {
        "RETRAIN_SECRET_INFERENCE_URL": "hunter2",
        "RETRAIN_SECRET_INFERENCE_URL_2": "sk-abc123",
        "RETRAIN_SECRET_BACKEND_OPTIONS_API_KEY": "sk-1",
    }
    assert expand_secrets_in(out, env) == {**doc, "x": ["/h"]}
    with pytest.raises(
        RetrainError, match=r"inference.url refers to \$\{RETRAIN_SECRET_INFERENCE_URL\}, which is not set"
    ):
        expand_secrets_in(out, {})


def test_a_literal_secret_is_in_no_file_and_still_reaches_the_run(tmp_path: Path, monkeypatch, capsys):
    pytest.importorskip("wandb")
    from test_run import read_offline_wandb

    from retrain.run import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("RETRAIN_SECRET_INFERENCE_URL", "RETRAIN_SECRET_INFERENCE_URL_2"):
        monkeypatch.delenv(name, raising=False)
    log_dir = tmp_path / "run"
    path = write_tiny_config(tmp_path / "r.toml", log_dir, steps=1, extra=f'\n[inference]\nurl = "{URL}"\n')
    path.write_text(path.read_text().replace("[logging]\n", '[logging]\nwandb_project = "p"\nwandb_mode = "offline"\n'))
    cfg = load_config(path)
    assert "RETRAIN_SECRET_INFERENCE_URL" in capsys.readouterr().err  # said once, at load
    assert os.environ["RETRAIN_SECRET_INFERENCE_URL"] == "hunter2"
    assert expand_secrets(cfg).inference.url == URL  # what the components get
    assert "hunter2" not in config_to_toml(cfg)
    assert train(cfg) == 0
    written = [p for p in log_dir.rglob("*") if p.is_file()]
    for p in written:
        data = p.read_bytes()
        assert b"hunter2" not in data and b"sk-abc123" not in data, p
    assert "${RETRAIN_SECRET_INFERENCE_URL}" in (log_dir / "config.toml").read_text()
    assert read_offline_wandb(log_dir)["config"]["inference.url"].count("${RETRAIN_SECRET_INFERENCE_URL") == 2


@pytest.mark.slow
def test_explain_and_campaign_toml_show_references(tmp_path: Path, capsys, monkeypatch):
    from runutil import tiny_campaign_base

    from retrain.campaign.runner import run_campaign
    from retrain.cli import main

    path = tmp_path / "c.toml"
    path.write_text(
        tiny_campaign_base(0)
        + f"""
[inference]
url = "{URL}"
[campaign]
seeds = [1]
max_steps = 1
log_root = "{(tmp_path / "logs").as_posix()}"
[[campaign.conditions]]
advantage_mode = "grpo"
transform_mode = "none"
"inference.url" = "https://bob:s3cret@other/v1"
"""
    )
    assert main(["explain", str(path)]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "s3cret" not in out and "${RETRAIN_SECRET_INFERENCE_URL}" in out
    monkeypatch.chdir(TESTS_DIR)  # the reward plugin module
    assert run_campaign(load_config(path)) == 0
    (campaign,) = (tmp_path / "logs").iterdir()
    for p in campaign.rglob("*"):
        if p.is_file():
            assert b"hunter2" not in p.read_bytes() and b"s3cret" not in p.read_bytes(), p


@pytest.mark.slow
def test_resume_in_a_shell_without_the_secret_says_which_variable(tmp_path: Path):
    """A later `retrain resume` reads the secret from its own environment, and says so when it is missing."""
    log_dir = tmp_path / "run"
    path = write_tiny_config(
        tmp_path / "r.toml", log_dir, steps=4, save_every=1, extra='\n[inference]\nurl = "https://u:pw9@h/v1"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAIN_SECRET_")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-m", "retrain", str(path), "--max-steps", "2"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    text = (log_dir / "config.toml").read_text().replace("max_steps = 2", "max_steps = 4")
    (log_dir / "config.toml").write_text(text)
    again = subprocess.run(
        [sys.executable, "-m", "retrain", "resume", str(log_dir)], env=env, capture_output=True, text=True
    )
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "refers to ${RETRAIN_SECRET_INFERENCE_URL}, which is not set" in again.stderr
    env["RETRAIN_SECRET_INFERENCE_URL"] = "pw9"
    ok = subprocess.run(
        [sys.executable, "-m", "retrain", "resume", str(log_dir)], env=env, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
