"""Whole runs with `backend = "tinker"` through retrain.run and the CLI, on the in-process stand-in
service (tests/tinker_standin.py): a 3-step run trains like the local backend on the same samples,
a service outage stops a run resumably and the resumed run ends where an uninterrupted one ends,
and a service that cannot start stops a run or a campaign before anything is written."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from runutil import read_jsonl, without_timing, write_tiny_config

import retrain.backends.tinker as tb
from retrain.backends.local import LocalBackend
from retrain.backends.tinker import TinkerBackend
from retrain.cli import main
from retrain.config import load_config
from retrain.run import train

pytest.importorskip("tinker")  # the dev extra installs it; elsewhere these tests skip

from tinker_standin import StandInService, adapters_agree  # noqa: E402 - after the skip: it needs the SDK

TINKER = '[backend]\nbackend = "tinker"\n'
SECRET = "tml-do-not-log-7c1e9a"


@pytest.fixture
def service(monkeypatch) -> StandInService:
    monkeypatch.setenv("TINKER_API_KEY", SECRET)
    svc = StandInService({"tiny-random": "tiny-random"})
    monkeypatch.setattr(tb, "sdk_clients", svc.sdk_clients)
    return svc


def _config(tmp_path: Path, name: str, extra: str = TINKER, **kw) -> Path:
    return write_tiny_config(tmp_path / f"{name}.toml", tmp_path / name, extra=extra, **kw)


@pytest.mark.slow
def test_a_three_step_tinker_run_trains_like_the_local_backend_on_the_same_samples(tmp_path, monkeypatch, service):
    """Record what the service sampled in a tinker run, replay it to a local run: the per-token
    advantages the service received, the logprobs it computed, the loss, every metric and the final
    LoRA weights (three Adam steps) equal the local backend's."""
    answers: list = []
    real_sample = TinkerBackend.sample

    def recording_sample(self, prompts, n, params):
        groups = real_sample(self, prompts, n, params)
        answers.append((list(prompts), copy.deepcopy(groups)))
        return groups

    monkeypatch.setattr(TinkerBackend, "sample", recording_sample)
    assert train(load_config(_config(tmp_path, "tinker"))) == 0

    replay = iter(answers)

    def replay_sample(self, prompts, n, params):
        recorded_prompts, groups = next(replay)
        assert prompts == recorded_prompts and all(len(g) == n for g in groups)
        assert [self.prompt_ids(p) for p in prompts] == [g[0].prompt_ids for g in groups]
        return copy.deepcopy(groups)

    local_datums, local_logprobs = [], []
    real_train, real_logprobs = LocalBackend.train_step, LocalBackend.completion_logprobs

    def recording_train(self, datums, lr):
        # The local step computes its logprobs inside its shared-prefix forward; ask for them first,
        # with torch's RNG put back so that the step itself (LoRA dropout) draws what it would have.
        local_datums.append(list(datums))
        rng = torch.get_rng_state()
        with torch.no_grad():
            local_logprobs.append(real_logprobs(self, datums)[0].detach().clone())
        torch.set_rng_state(rng)
        return real_train(self, datums, lr)

    monkeypatch.setattr(LocalBackend, "sample", replay_sample)
    monkeypatch.setattr(LocalBackend, "train_step", recording_train)
    assert train(load_config(_config(tmp_path, "local", extra=""))) == 0
    assert next(replay, None) is None

    tinker_rows, local_rows = (read_jsonl(tmp_path / d / "metrics.jsonl") for d in ("tinker", "local"))
    approx = {"loss", "sampler_train_kl", "grad_norm"}
    assert [{k: v for k, v in r.items() if k not in approx} for r in without_timing(tinker_rows)] == [
        {k: v for k, v in r.items() if k not in approx} for r in without_timing(local_rows)
    ]
    for t, loc in zip(tinker_rows, local_rows, strict=True):
        assert t["backend_reports_sync_loss"] is True and t["loss_is_placeholder"] is False
        if loc["loss"] is None:
            assert t["loss"] is None
            continue
        assert t["loss"] == pytest.approx(loc["loss"], rel=1e-4, abs=1e-6)
        assert t["sampler_train_kl"] == pytest.approx(loc["sampler_train_kl"], abs=1e-5)
        assert t["grad_norm"] is None and loc["grad_norm"] > 0
    assert sum(r["num_datums"] > 0 for r in tinker_rows) == len(local_datums) >= 2

    # What reached the service, datum by datum: advantages x 1/N (token_mean), the sampler's logprobs,
    # and the logprobs the service computed, against the local backend's on the same sequences.
    requests = service.requests("forward_backward")
    assert len(requests) == len(local_datums) == len(local_logprobs)
    for request, datums, new_B_T in zip(requests, local_datums, local_logprobs, strict=True):
        n_tokens = sum(len(d.completion_ids) for d in datums)
        assert len(request["data"]) == len(datums)
        for b, (sent, d) in enumerate(zip(request["data"], datums, strict=True)):
            P, T = len(d.prompt_ids), len(d.completion_ids)
            inputs = sent.loss_fn_inputs
            assert inputs["target_tokens"].data == (list(d.prompt_ids) + list(d.completion_ids))[1:]
            assert [a * n_tokens for a in inputs["advantages"].data[P - 1 :]] == pytest.approx(d.advantages_T, rel=1e-5)
            assert inputs["logprobs"].data[P - 1 :] == pytest.approx(d.old_logprobs_T, abs=1e-6)
            returned = request["result"].loss_fn_outputs[b]["logprobs"].data[P - 1 :]
            assert returned == pytest.approx(new_B_T[b, :T].tolist(), abs=2e-5)
        assert len({tuple(d.advantages_T) for d in datums}) > 1

    # Three Adam steps on the service leave the local run's final weights.
    from safetensors.torch import load_file

    state = json.loads((tmp_path / "tinker" / "trainer_state.json").read_text())
    assert state["backend_checkpoint"].startswith("tinker://") and state["backend_checkpoint"].endswith(
        "/weights/final"
    )
    pointer = json.loads((tmp_path / "tinker" / "adapter" / "final" / tb.POINTER).read_text())
    assert pointer["tinker_path"] == state["backend_checkpoint"]
    served = service.checkpoints[state["backend_checkpoint"]]["adapter"]
    local = load_file(str(tmp_path / "local" / "adapter" / "final" / "adapter_model.safetensors"))
    assert set(served) == set(local)
    for key, value in local.items():
        assert adapters_agree(served[key], value), key
    assert json.loads((tmp_path / "local" / "trainer_state.json").read_text())["backend_checkpoint"] is None


@pytest.mark.slow
def test_an_outage_stops_the_run_resumably_and_resume_ends_where_an_uninterrupted_run_ends(
    tmp_path, monkeypatch, service, capsys
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    wandb = '[logging]\nwandb_project = "retrain-test"\nwandb_mode = "offline"\n'
    full = _config(tmp_path, "full", save_every=1)
    full.write_text(full.read_text().replace("[logging]\n", wandb))
    assert main([str(full)]) == 0

    # The same run, but step 2's forward_backward fails on the service.
    cut = _config(tmp_path, "cut", save_every=1)
    service.fail_next("forward_backward", 500, skip=2)
    capsys.readouterr()
    assert main([str(cut)]) == 1
    err = capsys.readouterr().err
    assert f"retrain resume {tmp_path / 'cut'}" in err and "Traceback" not in err
    info = json.loads((tmp_path / "cut" / "run.json").read_text())
    assert info["status"] == "failed" and "last checkpoint is intact" in info["error"]
    state = json.loads((tmp_path / "cut" / "trainer_state.json").read_text())
    assert state["step"] == 1 and state["backend_checkpoint"].endswith("/weights/checkpoint_step_2")

    assert main(["resume", str(tmp_path / "cut")]) == 0
    for name in ("metrics.jsonl", "eval.jsonl", "emergence/steps.jsonl", "emergence/generations.jsonl"):
        assert without_timing(read_jsonl(tmp_path / "cut" / name)) == without_timing(
            read_jsonl(tmp_path / "full" / name)
        ), name
    assert [k for k, _ in service.log].count("restore") == 1
    assert service.closed == ["success", "errored", "success"]  # every session ended, with the run's outcome

    # The API key is the SDK's: it appears in no config dump, log, checkpoint pointer or wandb file.
    files = [p for d in ("full", "cut") for p in (tmp_path / d).rglob("*") if p.is_file()]
    assert any("wandb" in p.parts for p in files)
    assert [p for p in files if SECRET.encode() in p.read_bytes()] == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _no_key(monkeypatch, tmp_path):
    for var in ("TINKER_API_KEY", "TINKER_CREDENTIAL_CMD", "TINKER_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.tinker/credentials.json either


@pytest.mark.parametrize("fault", ["no key", "unknown model"])
def test_a_service_that_cannot_start_stops_the_run_before_anything_is_written(fault, tmp_path, monkeypatch, capsys):
    """No key goes through the real SDK (it fails before any request)."""
    _no_key(monkeypatch, tmp_path)
    toml = _config(tmp_path, "run")
    expected = "export TINKER_API_KEY"
    if fault == "unknown model":
        svc = StandInService({"Qwen/Qwen3-4B-Instruct-2507": "tiny-random"})
        monkeypatch.setattr(tb, "sdk_clients", svc.sdk_clients)
        monkeypatch.setenv("TINKER_API_KEY", "tml-test-key")
        toml.write_text(toml.read_text().replace('name = "tiny-random"', 'name = "Qwen/Qwen3-4B-Instruct"'))
        expected = "does not train this model. Did you mean 'Qwen/Qwen3-4B-Instruct-2507'?"
    capsys.readouterr()
    assert main([str(toml)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_an_unreachable_service_stops_the_run_before_anything_is_written(tmp_path):
    """The real SDK against a closed local port. In a subprocess: the SDK keeps retrying for minutes
    on a daemon thread, holding a process-wide lock that later clients in the same process wait on."""
    toml = _config(tmp_path, "run")
    toml.write_text(toml.read_text() + "[backend.options]\nconnect_timeout_s = 1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINKER_")}
    env.update(
        HOME=str(tmp_path / "home"),
        TINKER_API_KEY="tml-unused-key",
        TINKER_BASE_URL=f"http://127.0.0.1:{_free_port()}",
        TINKER_TELEMETRY="0",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "retrain", str(toml)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parent,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"at {env['TINKER_BASE_URL']} did not answer within 1 s" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_resume_without_a_key_touches_nothing(tmp_path, monkeypatch, capsys):
    from retrain.config import config_to_toml

    _no_key(monkeypatch, tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = load_config(_config(tmp_path, "run")).with_overrides({"logging.log_dir": str(run_dir)})
    (run_dir / "config.toml").write_text(config_to_toml(cfg))
    (run_dir / "metrics.jsonl").write_text('{"step": 0}\n{"step": 1}\n')  # step 1 is after the checkpoint
    (run_dir / "trainer_state.json").write_text('{"step": 0, "backend_checkpoint": "tinker://r/weights/x"}')
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    assert main(["resume", str(run_dir)]) == 2
    assert "export TINKER_API_KEY" in capsys.readouterr().err
    # the run dir's lock file (retrain/locks.py) is the one thing resume creates, and it is released empty
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != ".retrain.lock"} == before


def test_a_campaign_without_a_key_creates_no_campaign_dir(tmp_path, monkeypatch, capsys):
    _no_key(monkeypatch, tmp_path)
    toml = _config(tmp_path, "c")
    toml.write_text(toml.read_text() + f'[campaign]\nseeds = [1, 2]\nlog_root = "{(tmp_path / "logs").as_posix()}"\n')
    assert main([str(toml)]) == 2
    assert "export TINKER_API_KEY" in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()


def _campaign(tmp_path: Path, conditions: str = "") -> Path:
    toml = _config(tmp_path, "c")
    toml.write_text(
        toml.read_text() + f'[campaign]\nseeds = [1, 2]\nlog_root = "{(tmp_path / "logs").as_posix()}"\n' + conditions
    )
    return toml


def test_a_condition_past_the_models_context_stops_the_campaign_before_anything_is_written(tmp_path, service, capsys):
    """The campaign's check covers every distinct setting its runs' checks read, [training].max_tokens too:
    a condition overriding it past the model's context fails at once, not mid-campaign."""
    toml = _campaign(
        tmp_path,
        '[[campaign.conditions]]\nadvantage_mode = "grpo"\ntransform_mode = "none"\n'
        '[[campaign.conditions]]\nadvantage_mode = "maxrl"\ntransform_mode = "none"\n'
        '"training.max_tokens" = 40000\n',
    )
    assert main([str(toml)]) == 2
    err = capsys.readouterr().err
    assert "maxrl+none" in err and "[training].max_tokens = 40000" in err and "context of 32768" in err
    assert not (tmp_path / "logs").exists()
    assert len(service.requests("capabilities")) == 2  # grpo's max_tokens passed, then maxrl's failed


def test_runs_the_campaign_checked_are_not_checked_again_on_their_first_start(tmp_path, service):
    """One capabilities request for a campaign of ten runs (was 1 + 10): each run dir gets a preflight.json
    from the campaign, which the run's first start takes in place of its own check; a later start checks."""
    from retrain.backends import preflight
    from retrain.campaign.executors import SequentialExecutor
    from retrain.campaign.runner import resume_campaign, run_campaign

    def start(run_dir: str) -> int:  # what retrain.run.resume does before it trains
        preflight(load_config(Path(run_dir) / "config.toml"))
        (Path(run_dir) / "run.json").write_text(json.dumps({"status": "completed" if "_s1" in run_dir else "failed"}))
        return 0 if "_s1" in run_dir else 1

    assert run_campaign(load_config(_campaign(tmp_path)), executor=SequentialExecutor(start)) == 1
    assert len(service.requests("capabilities")) == 1
    (campaign,) = (tmp_path / "logs").iterdir()
    runs = sorted((campaign / "runs").iterdir())
    assert len(runs) == 10 and not any((r / "preflight.json").exists() for r in runs)  # each taken once
    preflight(load_config(runs[0] / "config.toml"))  # `retrain resume <run>` later: checked again
    assert len(service.requests("capabilities")) == 2
    assert resume_campaign(campaign, executor=SequentialExecutor(start)) == 1  # 5 failed runs, checked once
    assert len(service.requests("capabilities")) == 3


def test_the_preflight_key_holds_every_setting_the_checks_read(tmp_path):
    """Two runs share a check only when nothing the check reads differs between them."""
    from retrain.backends import preflight_key

    toml = _config(tmp_path, "k")
    key = preflight_key(load_config(toml))
    for same in (["--algorithm.advantage_mode", "grpo"], ["--training.seed", "7"], ["--training.lr", "1e-4"]):
        assert preflight_key(load_config(toml, same)) == key, same
    for differs in (
        ["--training.max_tokens", "64"],
        ["--model.name", "Qwen/Qwen3-4B"],
        ["--backend.backend", "local"],
        ["--backend.options.connect_timeout_s", "5"],
    ):
        assert preflight_key(load_config(toml, differs)) != key, differs
    local = ["--backend.backend", "local", "--model.target_modules", '["q_proj", "v_proj"]']
    served = [*local, "--inference.engine", "openai", "--inference.url", "http://127.0.0.1:9/v1"]
    assert preflight_key(load_config(toml, served)) != preflight_key(load_config(toml, local))
    assert preflight_key(load_config(toml, [*served, "--inference.served_model", "m"])) != preflight_key(
        load_config(toml, served)
    )


def test_the_preflight_record_answers_one_start_with_the_same_key(tmp_path, service):
    """The record holds a hash of the key (no settings: a resolved secret could be among them), and only a start with the
    same key may skip its check; the record is gone after that start either way."""
    from retrain.backends import preflight, record_preflight

    cfg = load_config(_config(tmp_path, "r"))
    run_dir = Path(cfg.logging.log_dir)
    run_dir.mkdir(parents=True)
    record_preflight(run_dir, load_config(_config(tmp_path, "r"), ["--training.max_tokens", "64"]), "test")
    record = json.loads((run_dir / "preflight.json").read_text())
    assert sorted(record) == ["checked_at", "checked_by", "checked_sha256"] and len(record["checked_sha256"]) == 64
    preflight(cfg)  # another config was checked: this start checks
    assert len(service.requests("capabilities")) == 1 and not (run_dir / "preflight.json").exists()
    record_preflight(run_dir, cfg, "test")
    preflight(cfg)  # the same key: taken in place of the check
    assert len(service.requests("capabilities")) == 1 and not (run_dir / "preflight.json").exists()
