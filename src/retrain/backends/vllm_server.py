"""Launch mode: a vLLM OpenAI-compatible server that lives exactly as long as the run.

    server = VLLMServer.launch(python, model_dir, served_name="smollm2-135m", port=8000,
                               lora_rank=16, log_path=run_dir / "vllm_server.log")
    ...                                 # sample through server.url
    server.stop()                       # also at exit, Ctrl-C, a crash, or the trainer's death

No orphans: the server starts in its own process group (vLLM forks an engine-core process and
maybe workers) and `stop` signals the whole group: SIGTERM, then SIGKILL after a grace period.
`stop` runs from the run's `finally`, from `atexit`, and on SIGTERM; if the trainer is killed
outright (SIGKILL, OOM) the kernel sends the server SIGTERM (`PR_SET_PDEATHSIG`, Linux), and vLLM's
own shutdown takes its engine core down with it.

The log (stdout and stderr) streams into `log_path`, in the run dir, as the server writes it.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from retrain.errors import RetrainError

VLLM_MODULE = "vllm.entrypoints.openai.api_server"
PYTHON_ENV = "RETRAIN_VLLM_PYTHON"
# Environment the server needs (set only when the caller has not): runtime LoRA loading is what
# weights sync uses; a small CPU KV cache (GiB) keeps a CPU server from taking the machine's memory.
SERVER_ENV_DEFAULTS = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_CPU_KVCACHE_SPACE": "2"}
_PR_SET_PDEATHSIG = 1


# vLLM accepts only these --max-lora-rank values (vllm/config/lora.py).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_lora_rank(rank: int) -> int:
    """The smallest `--max-lora-rank` vLLM accepts that holds a rank-`rank` adapter."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise RetrainError(f"[model].lora_rank = {rank}: vLLM serves LoRA ranks up to {VLLM_LORA_RANKS[-1]}")


def default_python() -> str:
    """The interpreter that has vLLM: $RETRAIN_VLLM_PYTHON, else `.venv-vllm/bin/python` in the current
    directory when it exists (scripts/setup_vllm.sh makes it), else this interpreter."""
    env = os.environ.get(PYTHON_ENV)
    if env:
        return env
    local = Path(".venv-vllm/bin/python")
    return str(local.absolute()) if local.exists() else sys.executable


def server_args(
    model: str,
    served_name: str,
    *,
    host: str,
    port: int,
    lora_rank: int,
    max_loras: int,
    max_model_len: int,
    dtype: str,
    extra: list[str],
) -> list[str]:
    """The api_server flags for this run's model and LoRA rank; `extra` (from [inference].server_args)
    is appended and wins: a flag it sets is not set here."""
    given = {arg.split("=", 1)[0] for arg in extra if arg.startswith("--")}
    flags = [
        ("--model", model),
        ("--served-model-name", served_name),
        ("--host", host),
        ("--port", str(port)),
        ("--dtype", dtype),
        ("--max-lora-rank", str(vllm_lora_rank(lora_rank))),
        ("--max-loras", str(max_loras)),
        ("--max-model-len", str(max_model_len)),
        # The logprobs the loss compares with: after temperature (vLLM's default is the raw ones).
        ("--logprobs-mode", "processed_logprobs"),
    ]
    args = ["--enable-lora"]
    for flag, value in flags:
        if flag not in given:
            args += [flag, value]
    return args + list(extra)


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: stop() at exit still applies


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class VLLMServer:
    """A server process group started by this process (see the module docstring)."""

    def __init__(self, proc: subprocess.Popen, url: str, log_path: Path):
        self.proc, self.url, self.log_path = proc, url, log_path
        self._stopped = False
        atexit.register(self.stop)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    def launch(
        cls,
        python: str,
        args: list[str],
        *,
        host: str,
        port: int,
        log_path: str | os.PathLike,
        env: dict | None = None,
        startup_timeout_s: float = 900.0,
        wait: bool = True,
    ) -> VLLMServer:
        """Start `python -m vllm.entrypoints.openai.api_server ARGS` and (`wait`) until /health answers.

        RetrainError (exit 2) when the port is taken, the interpreter lacks vLLM, or the server exits
        or does not become healthy in time (with the end of its log)."""
        if port_in_use(host, port):
            raise RetrainError(
                f"[inference].url: port {port} on {host} is already in use; with launch = true retrain starts "
                "its own server there. Choose a free port in url, or connect to the running server with launch = false"
            )
        check = subprocess.run(
            [python, "-c", "import importlib.util,sys; sys.exit(importlib.util.find_spec('vllm') is None)"],
            capture_output=True,
            timeout=120,
        )
        if check.returncode != 0:
            raise RetrainError(
                f"[inference].python = {python!r} cannot import vllm; install it there (`pip install vllm` on a GPU "
                "machine, `bash scripts/setup_vllm.sh` for the CPU build), or set [inference].python / "
                f"${PYTHON_ENV} to an interpreter that has it"
            )
        log_path = Path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        full_env = {
            **os.environ,
            **{k: v for k, v in SERVER_ENV_DEFAULTS.items() if k not in os.environ},
            **(env or {}),
        }
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [python, "-m", VLLM_MODULE, *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # PDEATHSIG fires when the *thread* that forked exits: only tie it to the main thread.
                env=full_env,
                start_new_session=True,
                preexec_fn=_set_pdeathsig if threading.current_thread() is threading.main_thread() else None,
            )
        server = cls(proc, f"http://{host}:{port}/v1", log_path)
        print(f"retrain: started vLLM server (pid {proc.pid}) on {host}:{port}; log: {log_path}", flush=True)
        if wait:
            try:
                server.wait_healthy(startup_timeout_s)
            except BaseException:
                server.stop()
                raise
        return server

    def wait_healthy(self, timeout_s: float) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if not self.running():
                raise RetrainError(
                    f"the vLLM server exited with code {self.proc.returncode} while starting; "
                    f"end of {self.log_path}:\n{self.log_tail()}"
                )
            if self.healthy():
                print(f"retrain: vLLM server ready after {time.monotonic() - t0:.0f} s", flush=True)
                return
            time.sleep(2.0)
        raise RetrainError(
            f"the vLLM server did not become healthy within {timeout_s:g} s "
            f"([inference].startup_timeout_s); end of {self.log_path}:\n{self.log_tail()}"
        )

    def healthy(self) -> bool:
        """GET /health (beside /v1) answers 200."""
        root = self.url[: -len("/v1")] if self.url.endswith("/v1") else self.url
        try:
            with urllib.request.urlopen(root + "/health", timeout=5) as resp:
                return resp.status == 200
        except (OSError, ValueError):
            return False

    def running(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the server's process group, SIGKILL what is left after `grace_s`. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        try:
            pgid = os.getpgid(self.proc.pid)
        except ProcessLookupError:
            pgid = self.proc.pid  # the leader is gone; its group may not be
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(pgid):
                try:
                    self.proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
            if not _group_alive(pgid):
                break
        try:
            self.proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Zombies of the group count as gone (their parent reaps them).
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return not Path("/proc").is_dir()
