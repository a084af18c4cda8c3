"""The openai engine without a server: seeds, answer parsing, paths, config checks, process cleanup,
and the faults that need no server (unreachable url). tests/test_vllm_engine.py runs the real server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from retrain.backends.openai_engine import (
    OpenAIClient,
    ServerError,
    default_lora_name,
    parse_choices,
    prompt_seeds,
    served_path,
)
from retrain.backends.vllm_server import server_args, vllm_lora_rank
from retrain.config import load_config
from retrain.errors import ConfigError, RetrainError


def test_prompt_seeds_never_share_a_stream_within_a_step():
    # vLLM seeds completion j of a request with seed + j: the n-wide ranges must not overlap.
    seeds = prompt_seeds(12345, num_prompts=8, n=16)
    streams = [s + j for s in seeds for j in range(16)]
    assert len(set(streams)) == len(streams) == 128
    assert all(0 <= s < 2**31 for s in streams)
    assert prompt_seeds(12345, 8, 16) == seeds  # a pure function of the step seed: resume draws the same
    assert prompt_seeds(12346, 8, 16)[0] != seeds[0]


def test_vllm_lora_rank_is_the_smallest_allowed_that_fits():
    assert [vllm_lora_rank(r) for r in (1, 4, 8, 16, 17, 32, 300)] == [1, 8, 8, 16, 32, 32, 320]
    with pytest.raises(RetrainError, match="up to 512"):
        vllm_lora_rank(1024)


def _choice(index, ids, logprobs, finish="stop"):
    return {
        "index": index,
        "finish_reason": finish,
        "logprobs": {"tokens": [f"token_id:{i}" for i in ids], "token_logprobs": logprobs},
    }


def test_parse_choices_orders_by_index_keeps_the_stop_token_and_flags_max_tokens():
    answer = {
        "choices": [
            _choice(1, [5, 6, 7], [-0.1, -0.2, -0.3], finish="length"),
            _choice(0, [8, 2], [-1.0, -0.5]),
        ]
    }
    out = parse_choices(answer, n=2, stop_ids={2}, max_tokens=3)
    assert out == [([8, 2], [-1.0, -0.5], False), ([5, 6, 7], [-0.1, -0.2, -0.3], True)]
    # A stop token as the last allowed token is a stop, like the in-process sampler says.
    assert parse_choices({"choices": [_choice(0, [5, 2], [-1, -1])]}, 1, {2}, 2)[0][2] is False


@pytest.mark.parametrize(
    "answer, message",
    [
        ({"choices": []}, "0 choices for n=1"),
        ({"choices": [{"index": 0, "logprobs": None}]}, "no per-token logprobs"),
        ({"choices": [{"index": 0, "logprobs": {"tokens": ["hi"], "token_logprobs": [-1.0]}}]}, "token_id:N"),
        ({"choices": [_choice(0, [3], [None])]}, "non-finite"),
    ],
)
def test_parse_choices_rejects_answers_without_ids_or_logprobs(answer, message):
    with pytest.raises(RuntimeError, match=message):
        parse_choices(answer, n=1, stop_ids={2}, max_tokens=4)


def test_served_path_maps_the_shared_directory(tmp_path):
    local = tmp_path / "adapters" / "run-v3"
    assert served_path(local, tmp_path / "adapters", "") == str(local.resolve())
    assert served_path(local, tmp_path / "adapters", "/mnt/shared/adapters") == "/mnt/shared/adapters/run-v3"


def test_default_lora_names_differ_between_runs_of_a_campaign(tmp_path):
    a = default_lora_name(tmp_path / "campaign_1" / "runs" / "maxrl+gtpo_s42")
    b = default_lora_name(tmp_path / "campaign_2" / "runs" / "maxrl+gtpo_s42")  # same name, other campaign
    c = default_lora_name(tmp_path / "campaign_1" / "runs" / "grpo+none_s42")
    assert len({a, b, c}) == 3 and a.startswith("retrain-maxrl-gtpo_s42-")
    assert a == default_lora_name(tmp_path / "campaign_1" / "runs" / "maxrl+gtpo_s42")  # stable across resume


def test_server_args_follow_the_model_and_rank_and_let_the_user_override():
    args = server_args(
        "/m",
        "smol",
        host="127.0.0.1",
        port=8001,
        lora_rank=12,
        max_loras=1,
        max_model_len=1300,
        dtype="float32",
        extra=["--max-model-len", "4096", "--max-loras=4"],
    )
    joined = " ".join(args)
    assert "--enable-lora" in args and "--max-lora-rank 16" in joined and "--logprobs-mode processed_logprobs" in joined
    assert "--model /m --served-model-name smol" in joined and "--port 8001" in joined
    assert args.count("--max-model-len") == 1 and joined.endswith("--max-model-len 4096 --max-loras=4")
    assert "--max-loras 1" not in joined


def _write(tmp_path, inference: str, extra: str = "") -> Path:
    path = tmp_path / "run.toml"
    path.write_text(
        textwrap.dedent(f"""
        [model]
        name = "tiny-random"
        {extra}
        [inference]
        {inference}
    """)
    )
    return path


@pytest.mark.parametrize(
    "inference, extra, message",
    [
        ('engine = "openai"', "", r"\[inference\]\.url: required when engine = \"openai\".*launch = true"),
        ('engine = "openai"\nurl = "localhost:8000"', "", r"\[inference\]\.url: expected http://HOST:PORT/v1"),
        ("launch = true", "", r"\[inference\]\.launch: starts a vLLM server.*engine = \"openai\""),
        (
            'engine = "openai"\nurl = "http://h:1/v1"',
            'target_modules = ["q_proj", "lm_head"]',
            r"\[model\]\.target_modules: \['lm_head'\] cannot be served by vLLM",
        ),
        (
            'engine = "openai"\nurl = "http://h:1/v1"',
            '[algorithm]\nuncertainty_kind = "shannon_entropy"',
            r"shannon_entropy.*needs the full distribution",
        ),
    ],
)
def test_config_errors_of_the_openai_engine(tmp_path, inference, extra, message):
    if extra.startswith("[algorithm]"):
        path = tmp_path / "run.toml"
        path.write_text(f'[model]\nname = "tiny-random"\n{extra}\n[inference]\n{inference}\n')
    else:
        path = _write(tmp_path, inference, extra)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_launch_mode_needs_no_url(tmp_path):
    cfg = load_config(_write(tmp_path, 'engine = "openai"\nlaunch = true'))
    assert cfg.inference.launch and cfg.inference.url == ""


def test_the_trainer_beside_a_cpu_server_computes_in_the_servers_dtype(tmp_path):
    """dtype = "auto" launches an fp32 server on a CPU; a trainer that picked bf16 on a bf16 CPU
    compared its logprobs with the server's and logged sampler_train_kl ~1e-3 instead of ~1e-7."""
    from retrain.backends.openai_engine import trainer_config

    cfg = load_config(_write(tmp_path, 'engine = "openai"\nlaunch = true', '[backend]\ndevice = "cpu"'))
    assert cfg.backend.dtype == "auto" and trainer_config(cfg).backend.dtype == "float32"
    assert trainer_config(cfg).model == cfg.model  # nothing else changes
    bf16 = cfg.model_copy(update={"backend": cfg.backend.model_copy(update={"dtype": "bfloat16"})})
    assert trainer_config(bf16) is bf16  # an explicit choice is the user's (the server gets it too)


def test_unreachable_server_is_exit_2_before_anything_is_written(tmp_path):
    from retrain.backends.vllm_server import free_port

    log_dir = tmp_path / "run"
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        textwrap.dedent(f"""
        [model]
        name = "tiny-random"
        [inference]
        engine = "openai"
        url = "http://127.0.0.1:{free_port()}/v1"
        [logging]
        log_dir = "{log_dir}"
    """)
    )
    proc = subprocess.run([sys.executable, "-m", "retrain", str(cfg)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "no OpenAI-compatible server answers there" in proc.stderr and "Traceback" not in proc.stderr
    assert not log_dir.exists()


def test_client_reports_http_errors_with_the_servers_message(tmp_path):
    # A real HTTP server (stdlib) answering 404 with vLLM's error shape.
    import http.server
    import json
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"error": {"message": "The model `x` does not exist.", "code": 404}}).encode()
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        client = OpenAIClient(f"http://127.0.0.1:{httpd.server_port}/v1", timeout_s=5)
        with pytest.raises(ServerError, match="does not exist") as info:
            client.request("GET", "/models")
        assert info.value.status == 404
        assert client.healthy() is False  # /health answers 404 too
    finally:
        httpd.shutdown()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_a_launched_process_dies_with_a_killed_trainer(tmp_path):
    # The mechanism launch mode relies on when the trainer is SIGKILLed (no finally, no atexit):
    # the child was started with PR_SET_PDEATHSIG, so the kernel sends it SIGTERM.
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent("""
        import subprocess, sys, time
        from retrain.backends.vllm_server import _set_pdeathsig
        child = subprocess.Popen(["sleep", "600"], start_new_session=True, preexec_fn=_set_pdeathsig)
        print(child.pid, flush=True)
        time.sleep(600)
    """)
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    assert _alive(child_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child_pid)


def test_concurrent_requests_keep_order_and_raise_the_first_error():
    from retrain.backends.openai_engine import _concurrently

    assert _concurrently([lambda: (time.sleep(0.2), "slow")[1], lambda: "fast"]) == ["slow", "fast"]
    with pytest.raises(ZeroDivisionError):
        _concurrently([lambda: "ok", lambda: 1 / 0])
