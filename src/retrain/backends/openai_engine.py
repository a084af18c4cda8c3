"""The `openai` sampling engine: completions from an OpenAI-compatible server (vLLM), training local.

With `[inference] engine = "openai"` the local backend keeps the model, the LoRA adapter and the
optimizer; only `sample` goes to the server. What crosses the wire:

- the chat-templated prompt as token ids (`prompt: [ids]`), so the server never re-tokenises;
- one `/v1/completions` request per prompt with `n` = group size and a per-prompt seed derived
  from the step's seed (vLLM seeds completion j of a request with seed + j, so the prompts of a
  step get seeds `n` apart and never share a stream);
- `logprobs: 0` + `return_tokens_as_token_ids`: the sampled token ids and their logprobs. The
  server must run with `--logprobs-mode processed_logprobs`, so a logprob is
  `log_softmax(logits / T)[token]`, the quantity the loss compares with (vLLM's default,
  `raw_logprobs`, ignores the temperature); `check_server` verifies it before step 0.
- after every optimizer step, the adapter (`adapter_model.safetensors` + `adapter_config.json`)
  is written to a directory the server can read, loaded under a fresh name
  (`POST /v1/load_lora_adapter`) and the previous one unloaded, before the next sample.

With top_p < 1 vLLM's processed logprob is the nucleus-renormalised one (the distribution the token
was drawn from); the in-process sampler records the full-distribution one. `sampler_train_kl`
shows the difference.

Faults: a server that cannot be used (unreachable, wrong model, raw logprobs, no runtime LoRA) is a
`RetrainError` before anything is written (`preflight`). A request that fails mid-run is retried
`max_retries` times with backoff; then `EngineUnavailable` stops the run resumably (`run.py`).

Example (a server started with `--enable-lora --logprobs-mode processed_logprobs`)::

    client = OpenAIClient("http://127.0.0.1:8000/v1", timeout_s=60)
    engine = OpenAIEngine(client, "smollm2-135m", stop_ids={2}, adapter_dir="/tmp/a", lora_name="run1")
    engine.sync_adapter(backend.save_adapter)              # LoRA weights → server
    raw_P_G = engine.sample([[1, 9690, 198]], n=4, params=SamplingParams(max_tokens=16, seed=7))
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from retrain.backends.base import Completion, Datum, SamplingParams, TrainResult
from retrain.errors import BackendUnavailable, RetrainError

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
PROBE_TEXT = "What is 2 + 3?"


class EngineUnavailable(BackendUnavailable):
    """The server stopped answering mid-run (after the retries): the run checkpoints its last finished
    step and stops (exit 1); `retrain resume` continues."""


class AdapterLost(RuntimeError):
    """The server no longer knows this run's adapter (it restarted, or someone unloaded it)."""


class ServerError(RuntimeError):
    """An HTTP error answer: `status` and the server's message."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


# ---------------------------------------------------------------------------------------------
# HTTP


class OpenAIClient:
    """JSON over HTTP to one OpenAI-compatible server (stdlib only: no client library to pin).

    `base_url` ends in /v1 (vLLM's health endpoint is beside it: /health). Connection failures and
    timeouts raise `ConnectionError`/`TimeoutError`; HTTP error answers raise `ServerError`.
    """

    def __init__(self, base_url: str, timeout_s: float = 600.0):
        self.base_url = base_url.rstrip("/")
        self.root_url = self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url
        self.timeout_s = timeout_s

    def request(
        self, method: str, path: str, body: dict | None = None, *, timeout_s: float | None = None, root: bool = False
    ) -> dict:
        url = (self.root_url if root else self.base_url) + path
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s or self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            try:
                detail = json.loads(text)
                message = (detail.get("error") or {}).get("message") if isinstance(detail.get("error"), dict) else None
                message = message or detail.get("message") or detail.get("detail") or text
            except (json.JSONDecodeError, AttributeError):
                message = text
            raise ServerError(e.code, str(message).strip()) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, (socket.timeout, TimeoutError)):
                raise TimeoutError(f"{method} {url}: no answer within {timeout_s or self.timeout_s:g} s") from None
            raise ConnectionError(f"{method} {url}: {e.reason}") from None
        except TimeoutError:
            raise TimeoutError(f"{method} {url}: no answer within {timeout_s or self.timeout_s:g} s") from None
        except (ConnectionError, OSError) as e:  # reset mid-answer, refused after connect
            raise ConnectionError(f"{method} {url}: {e}") from None
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return {"text": raw.decode(errors="replace")}

    def healthy(self, timeout_s: float = 5.0) -> bool:
        try:
            self.request("GET", "/health", timeout_s=timeout_s, root=True)
            return True
        except (ConnectionError, TimeoutError, ServerError):
            return False


def _concurrently(calls: list[Callable[[], object]]) -> list:
    """Run the calls in parallel threads (one HTTP request each: the server batches them) and return
    their results in order, re-raising the first error.

    Daemon threads, joined from the main thread: Ctrl-C interrupts the join at once and the process
    can exit without waiting for requests the server is still working on (a thread pool would)."""
    results: list = [None] * len(calls)
    errors: list[BaseException | None] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as e:  # handed to the caller below
            errors[i] = e

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for error in errors:
        if error is not None:
            raise error
    return results


# ---------------------------------------------------------------------------------------------
# Pure helpers (tested without a server)


def prompt_seeds(step_seed: int, num_prompts: int, n: int) -> list[int]:
    """Seeds of a step's prompts: vLLM gives completion j of a request the seed `seed + j`, so the
    prompts' seeds are `n` apart (no two completions of a step share a stream) and start from a
    31-bit value derived from the step's seed (vLLM seeds torch generators with them)."""
    base = int.from_bytes(hashlib.blake2b(str(step_seed).encode(), digest_size=4).digest(), "little") % 2**30
    return [base + p * n for p in range(num_prompts)]


def parse_choices(
    answer: dict, n: int, stop_ids: set[int], max_tokens: int
) -> list[tuple[list[int], list[float], bool]]:
    """(token_ids, logprobs, hit_max_tokens) for each of the `n` choices of one completion answer.

    Token ids come from `logprobs.tokens` ("token_id:123", with `return_tokens_as_token_ids`); a
    stop token the server produced is kept (the in-process sampler keeps it too: the model learns
    to stop). hit_max_tokens: `max_tokens` tokens and no stop token, like the in-process sampler.
    """
    choices = sorted(answer.get("choices") or [], key=lambda c: c.get("index", 0))
    if len(choices) != n:
        raise RuntimeError(f"server returned {len(choices)} choices for n={n}")
    out = []
    for choice in choices:
        lp = choice.get("logprobs") or {}
        tokens, logprobs = lp.get("tokens"), lp.get("token_logprobs")
        if tokens is None or logprobs is None or len(tokens) != len(logprobs):
            raise RuntimeError("server answer has no per-token logprobs (the request asks for logprobs: 0)")
        ids = []
        for token in tokens:
            if not (isinstance(token, str) and token.startswith("token_id:")):
                raise RuntimeError(
                    f"server returned token {token!r}, not 'token_id:N': it ignored "
                    "return_tokens_as_token_ids (needs vLLM >= 0.6)"
                )
            ids.append(int(token[len("token_id:") :]))
        values = []
        for value in logprobs:
            if value is None or not math.isfinite(float(value)):
                raise RuntimeError(f"server returned a non-finite logprob {value!r}")
            values.append(float(value))
        stopped = bool(ids) and ids[-1] in stop_ids
        out.append((ids, values, not stopped and len(ids) >= max_tokens))
    return out


def served_path(local_path: Path, adapter_dir: Path, server_adapter_dir: str) -> str:
    """The adapter's path as the server sees it: `server_adapter_dir` replaces `adapter_dir` when the
    server mounts the shared directory elsewhere (another machine), else the local absolute path."""
    if not server_adapter_dir:
        return str(local_path.resolve())
    return str(Path(server_adapter_dir) / local_path.resolve().relative_to(adapter_dir.resolve()))


def default_lora_name(run_dir: str | os.PathLike) -> str:
    """A name no other run on a shared server uses: the run dir's name plus a hash of its path."""
    path = str(Path(run_dir).resolve())
    digest = hashlib.blake2b(path.encode(), digest_size=4).hexdigest()
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in Path(path).name)
    return f"retrain-{safe}-{digest}"


# ---------------------------------------------------------------------------------------------
# The engine


class OpenAIEngine:
    """Samples token ids + logprobs from the server and keeps its copy of the adapter current."""

    def __init__(
        self,
        client: OpenAIClient,
        served_model: str,
        *,
        stop_ids: set[int],
        adapter_dir: str | os.PathLike,
        lora_name: str,
        server_adapter_dir: str = "",
        max_retries: int = 3,
        retry_backoff_s: float = 2.0,
        server=None,
    ):
        self.client = client
        self.served_model = served_model
        self.stop_ids = set(stop_ids)
        self.adapter_dir = Path(adapter_dir)
        self.server_adapter_dir = server_adapter_dir
        self.lora_name = lora_name
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.server = server  # a VLLMServer when this run launched it (its death ends retries early)
        self.version = 0  # adapter versions synced so far; the loaded one is f"{lora_name}-v{version}"
        self.loaded: str | None = None  # adapter name the server samples with (None: the base model)
        self.last_sync_s: float | None = None

    # ------------------------------------------------------------ requests with retries

    def _call(self, what: str, fn: Callable[[], dict]) -> dict:
        """fn() with bounded retries on connection failures, timeouts and 5xx answers."""
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(min(self.retry_backoff_s * 2 ** (attempt - 1), 30.0))
            if self.server is not None and not self.server.running():
                raise EngineUnavailable(
                    f"the vLLM server this run launched has exited ({what}); "
                    f"its log: {self.server.log_path}\n{self.server.log_tail()}"
                )
            try:
                return fn()
            except ServerError as e:
                if e.status == 404 and self.loaded and f"`{self.loaded}` does not exist" in e.message:
                    raise AdapterLost(e.message) from None
                if e.status < 500:
                    raise RetrainError(f"the sampling server refused {what}: {e.message}") from None
                last = e
            except (ConnectionError, TimeoutError) as e:
                last = e
            print(
                f"retrain: sampling server: {what} failed ({last}); attempt {attempt + 1} of {self.max_retries + 1}",
                flush=True,
            )
        raise EngineUnavailable(
            f"the sampling server at {self.client.base_url} did not answer {what} after "
            f"{self.max_retries + 1} attempts: {last}"
        )

    # ------------------------------------------------------------ sampling

    def sample(self, prompt_ids_P: list[list[int]], n: int, params: SamplingParams):
        """`n` completions per prompt: a list (per prompt) of (token_ids, logprobs, hit_max_tokens)."""
        seeds_P = prompt_seeds(params.seed, len(prompt_ids_P), n)
        greedy = params.greedy or params.temperature <= 0
        model = self.loaded or self.served_model

        def one(ids: list[int], seed: int):
            body = {
                "model": model,
                "prompt": ids,
                "n": n,
                "max_tokens": params.max_tokens,
                "temperature": 0.0 if greedy else params.temperature,
                "top_p": 1.0 if greedy else params.top_p,
                "seed": seed,
                "logprobs": 0,
                "return_tokens_as_token_ids": True,
                "stop_token_ids": sorted(self.stop_ids),
                "skip_special_tokens": False,
            }
            answer = self._call("a completion request", lambda: self.client.request("POST", "/completions", body))
            return parse_choices(answer, n, self.stop_ids, params.max_tokens)

        if len(prompt_ids_P) == 1:
            return [one(prompt_ids_P[0], seeds_P[0])]
        return _concurrently(
            [lambda ids=ids, seed=seed: one(ids, seed) for ids, seed in zip(prompt_ids_P, seeds_P, strict=True)]
        )

    # ------------------------------------------------------------ weights sync

    def sync_adapter(self, save_adapter: Callable[[str], None]) -> float:
        """Write the current adapter, load it under a fresh name, unload the previous one.

        A fresh name (not an in-place reload) because vLLM caches adapters by name: requests already
        queued finish on the old weights and every later one gets the new. Returns the seconds taken.
        """
        t0 = time.perf_counter()
        name = f"{self.lora_name}-v{self.version + 1}"
        local = self.adapter_dir / name
        if local.exists():
            shutil.rmtree(local)
        save_adapter(str(local))
        missing = [f for f in ADAPTER_FILES if not (local / f).is_file()]
        if missing:
            raise RuntimeError(f"saving the adapter to {local} did not write {missing}")
        self._load(name, served_path(local, self.adapter_dir, self.server_adapter_dir))
        previous = self.loaded
        self.loaded, self.version = name, self.version + 1
        if previous is not None:
            self._unload(previous)
        self.last_sync_s = time.perf_counter() - t0
        return self.last_sync_s

    def _load(self, name: str, path: str) -> None:
        body = {"lora_name": name, "lora_path": path}
        load = lambda: self.client.request("POST", "/load_lora_adapter", body)  # noqa: E731
        try:
            self._call("loading the adapter", load)
        except RetrainError as e:
            if "already been loaded" not in str(e):
                raise
            # A retried request whose first answer was lost, or a session of this run that stopped
            # before unloading: the name holds stale weights. Replace them.
            self._call(
                "unloading a stale adapter",
                lambda: self.client.request("POST", "/unload_lora_adapter", {"lora_name": name}),
            )
            self._call("loading the adapter", load)

    def reclaim(self) -> list[str]:
        """Unload adapters an earlier session of this run left on the server (it stopped while the
        server was unreachable); returns their names. Other runs' adapters are left alone."""
        try:
            models = self._call("listing the server's models", lambda: self.client.request("GET", "/models"))
        except RetrainError:
            return []
        prefix = f"{self.lora_name}-v"
        stale = [m.get("id") for m in models.get("data") or [] if str(m.get("id", "")).startswith(prefix)]
        for name in stale:
            self._unload(name)
        return stale

    def _unload(self, name: str) -> None:
        try:
            self._call(
                "unloading the previous adapter",
                lambda: self.client.request("POST", "/unload_lora_adapter", {"lora_name": name}),
            )
        except RetrainError:
            pass  # already gone (a restarted server): nothing to free
        shutil.rmtree(self.adapter_dir / name, ignore_errors=True)

    def close(self) -> None:
        """Unload this run's adapters (a shared server keeps serving other runs) and remove their files.

        By name prefix, not only the one loaded: a sync interrupted between writing an adapter and
        recording it (Ctrl-C) leaves one more. A launched server is about to stop: nothing to unload."""
        prefix = f"{self.lora_name}-v"
        if self.server is None:
            try:
                models = self.client.request("GET", "/models", timeout_s=10)
                for m in models.get("data") or []:
                    if str(m.get("id", "")).startswith(prefix):
                        self.client.request("POST", "/unload_lora_adapter", {"lora_name": m["id"]}, timeout_s=10)
            except (ConnectionError, TimeoutError, ServerError):
                pass  # unreachable: `reclaim` unloads them when the run resumes
        for path in self.adapter_dir.glob(prefix + "*"):
            shutil.rmtree(path, ignore_errors=True)
        self.loaded = None
        try:
            self.adapter_dir.rmdir()  # only when empty: it may be a directory shared with other runs
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# Preflight: is the server usable? (before a run writes anything)


def check_server(
    client: OpenAIClient, served_model: str, *, probe_ids: Callable[[], list[int]], max_tokens: int
) -> dict:
    """Raise RetrainError (exit 2) unless the server can serve this run; return what was found.

    `probe_ids()` gives a short prompt's token ids (called once the server answers: it may load a
    tokenizer). Checks: it answers; it serves `served_model`; prompt + max_tokens fit its context; its logprobs
    are temperature-scaled (two 1-token requests at T = 1 and T = 0.25 must give different top-5
    logprobs, which `raw_logprobs` mode would not); runtime LoRA loading is enabled.
    """
    where = client.base_url
    try:
        models = client.request("GET", "/models", timeout_s=10)
    except (ConnectionError, TimeoutError) as e:
        raise RetrainError(
            f"[inference].url = {where!r}: no OpenAI-compatible server answers there ({e}). Start one "
            "(see docs/inference.md: `vllm serve MODEL --enable-lora --logprobs-mode processed_logprobs`), "
            "fix the url, or set [inference] launch = true to let retrain start it"
        ) from None
    except ServerError as e:
        raise RetrainError(
            f"[inference].url = {where!r}: GET /models answered {e}; is this an OpenAI-compatible server's /v1 URL?"
        ) from None
    listed = {m.get("id"): m for m in models.get("data") or [] if isinstance(m, dict)}
    if served_model not in listed:
        raise RetrainError(
            f"[inference].served_model = {served_model!r}: the server at {where} serves {sorted(listed)}, not "
            f"this run's model. Start it with --served-model-name {served_model} on the same weights as "
            "[model].name, or set served_model to the name it serves"
        )
    ids = probe_ids()
    max_len = listed[served_model].get("max_model_len")
    if isinstance(max_len, int) and max_tokens + len(ids) >= max_len:
        raise RetrainError(
            f"[training].max_tokens = {max_tokens}: the server's context (max_model_len) is {max_len} tokens, "
            "too short for a prompt plus max_tokens; restart it with a larger --max-model-len or lower max_tokens"
        )

    def top5(temp: float) -> list[float]:
        body = {
            "model": served_model,
            "prompt": ids,
            "max_tokens": 1,
            "temperature": temp,
            "top_p": 1.0,
            "seed": 0,
            "logprobs": 5,
            "return_tokens_as_token_ids": True,
        }
        try:
            answer = client.request("POST", "/completions", body, timeout_s=300)  # a cold server warms up
        except (ConnectionError, TimeoutError, ServerError) as e:
            raise RetrainError(f"the sampling server at {where} failed a 1-token probe completion: {e}") from None
        top = ((answer.get("choices") or [{}])[0].get("logprobs") or {}).get("top_logprobs") or [{}]
        return sorted(top[0].values(), reverse=True)

    hot, cold = top5(1.0), top5(0.25)
    if not hot or len(hot) != len(cold):
        raise RetrainError(f"the sampling server at {where} returned no top logprobs for a probe completion")
    if max(abs(a - b) for a, b in zip(hot, cold, strict=True)) < 1e-4:
        raise RetrainError(
            f"the sampling server at {where} returns logprobs that ignore the temperature (vLLM's default "
            "--logprobs-mode raw_logprobs), so they are not the ones the loss compares with. Restart it "
            "with --logprobs-mode processed_logprobs"
        )
    try:
        client.request("POST", "/unload_lora_adapter", {"lora_name": "retrain-preflight-probe"}, timeout_s=10)
    except ServerError as e:
        if e.status == 404 and "not found" == e.message.lower().strip("."):
            raise RetrainError(
                f"the sampling server at {where} does not allow loading LoRA adapters at run time; restart it "
                "with --enable-lora and the environment variable VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
            ) from None
    except (ConnectionError, TimeoutError) as e:
        raise RetrainError(f"the sampling server at {where} stopped answering during the checks: {e}") from None
    return {"url": where, "served_model": served_model, "max_model_len": max_len, "models": sorted(listed)}


def url_host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RetrainError(f"[inference].url = {url!r}: expected http://HOST:PORT/v1")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


# ---------------------------------------------------------------------------------------------
# The backend the run sees: local training, server sampling


class ServerSampledBackend:
    """`Backend`: `LocalBackend` trains; `OpenAIEngine` samples. Weights reach the server lazily,
    before the first sample after an optimizer step (or a checkpoint load), so a server that fails
    is found at a sample, where the run's state is still that of the last finished step."""

    reports_sync_loss = True

    def __init__(self, local, engine: OpenAIEngine):
        self.local, self.engine = local, engine
        self._dirty = True  # the server has no copy of this adapter yet
        self._sync_s = 0.0  # seconds spent syncing since the last step_metrics()

    def _sync_if_needed(self) -> None:
        if self._dirty:
            self._sync_s += self.engine.sync_adapter(self.local.save_adapter)
            self._dirty = False

    def sample(self, prompts: list[str], n: int, params: SamplingParams) -> list[list[Completion]]:
        from retrain.backends.sampler import decode_with_offsets

        if params.want_entropy:
            raise RetrainError(
                'per-token entropies need the full distribution, which the "openai" engine '
                'does not return; use uncertainty_kind = "surprisal" or engine = "hf"'
            )
        if n < 1 or params.max_tokens < 1:
            raise RetrainError(f"sampling needs n ≥ 1 and max_tokens ≥ 1, got n={n}, max_tokens={params.max_tokens}")
        self._sync_if_needed()
        ids_P = [self.local.prompt_ids(p) for p in prompts]
        try:
            raw_P_G = self.engine.sample(ids_P, n, params)
        except AdapterLost:  # a restarted server forgot it: load it again, once
            self._dirty = True
            self._sync_if_needed()
            raw_P_G = self.engine.sample(ids_P, n, params)
        groups = []
        for prompt_ids, raw_G in zip(ids_P, raw_P_G, strict=True):
            group = []
            for token_ids, logprobs, hit_max in raw_G:
                text, offsets = decode_with_offsets(self.local.tokenizer, token_ids)
                group.append(
                    Completion(
                        prompt_ids=list(prompt_ids),
                        token_ids=token_ids,
                        logprobs=logprobs,
                        text=text,
                        offsets=offsets,
                        hit_max_tokens=hit_max,
                    )
                )
            groups.append(group)
        return groups

    def train_step(self, datums: list[Datum], lr: float) -> TrainResult:
        result = self.local.train_step(datums, lr)
        if result.loss is not None:
            self._dirty = True
        return result

    def save(self, path: str) -> None:
        self.local.save(path)

    def load(self, path: str) -> None:
        self.local.load(path)
        self._dirty = True

    def step_metrics(self) -> dict:
        """Per-step engine metrics: sync seconds since the last call and the adapter version sampled."""
        out = {"weight_sync_time_s": self._sync_s, "sampler_adapter_version": self.engine.version}
        self._sync_s = 0.0
        return out

    def close(self, status: str = "success") -> None:
        """Unload the adapter from the server; stop the server when this run launched it (any status)."""
        try:
            self.engine.close()
        finally:
            if self.engine.server is not None:
                self.engine.server.stop()


# ---------------------------------------------------------------------------------------------
# From the config


def served_model_name(cfg) -> str:
    return cfg.inference.served_model or cfg.model.name


def probe_ids(tokenizer) -> list[int]:
    return tokenizer(PROBE_TEXT, add_special_tokens=True).input_ids


def check_tokenizer(client: OpenAIClient, served_model: str, tokenizer) -> None:
    """The server's tokenizer must agree with ours (vLLM's /tokenize; skipped when absent)."""
    ours = tokenizer(PROBE_TEXT, add_special_tokens=False).input_ids
    try:
        answer = client.request(
            "POST",
            "/tokenize",
            {"model": served_model, "prompt": PROBE_TEXT, "add_special_tokens": False},
            timeout_s=30,
            root=True,
        )
    except (ServerError, ConnectionError, TimeoutError):
        return  # not vLLM, or an older one: sampler_train_kl still shows a mismatch
    theirs = answer.get("tokens")
    if isinstance(theirs, list) and theirs != ours:
        raise RetrainError(
            f"[inference].served_model = {served_model!r}: the server tokenizes {PROBE_TEXT!r} as {theirs}, this "
            f"run's model as {ours}: it serves a different model. Serve the same weights as [model].name"
        )


def preflight(cfg) -> dict | None:
    """Before a run writes anything: with engine = "openai" and a url to connect to, the server must be
    usable (`check_server`), else RetrainError (exit 2). Launch mode is checked once it has started.
    Returns what `check_server` found (None when there is nothing to check)."""
    inf = cfg.inference
    if inf.engine != "openai" or inf.launch:
        return None
    from retrain.backends.models import resolve_model

    loaded = {}

    def ids() -> list[int]:  # the tokenizer only once the server answers (an unreachable one fails fast)
        from transformers import AutoTokenizer

        loaded["tok"] = AutoTokenizer.from_pretrained(resolve_model(cfg.model.name, cfg.model.revision or None))
        return probe_ids(loaded["tok"])

    client = OpenAIClient(inf.url, timeout_s=inf.request_timeout_s)
    found = check_server(client, served_model_name(cfg), probe_ids=ids, max_tokens=cfg.training.max_tokens)
    check_tokenizer(client, served_model_name(cfg), loaded["tok"])
    return found


def launch_server(cfg, log_path: Path, wait: bool = True):
    """Start the vLLM server [inference] describes for this run's model (launch mode)."""
    from retrain.backends.models import resolve_model
    from retrain.backends.vllm_server import VLLMServer, default_python, free_port, server_args

    inf = cfg.inference
    if inf.url:
        host, port = url_host_port(inf.url)
    else:
        host, port = "127.0.0.1", free_port()
    model = resolve_model(cfg.model.name, cfg.model.revision or None)
    on_cpu = _on_cpu(cfg)
    dtype = {"float32": "float32", "bfloat16": "bfloat16"}.get(cfg.backend.dtype, "float32" if on_cpu else "auto")
    extra = list(inf.server_args)
    if not on_cpu and not any(a.startswith("--gpu-memory-utilization") for a in extra):
        # Beside the trainer on the same GPU: vLLM would otherwise take 90% of its memory.
        extra += ["--gpu-memory-utilization", "0.45"]
    if on_cpu and not any(a.startswith("--distributed-executor-backend") for a in extra):
        # One device: the model runs in the engine-core process (one process and one import fewer).
        extra += ["--distributed-executor-backend", "uni"]
    args = server_args(
        model,
        served_model_name(cfg),
        host=host,
        port=port,
        lora_rank=cfg.model.lora_rank,
        max_loras=1,
        max_model_len=cfg.training.max_tokens + 2048,
        dtype=dtype,
        extra=extra,
    )
    if cfg.model.revision and not Path(model).is_dir():
        args += ["--revision", cfg.model.revision]
    # Co-located with the trainer: vLLM's CPU default pins its threads to a core the trainer also uses.
    env = {"VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind")}
    return VLLMServer.launch(
        inf.python or default_python(),
        args,
        host=host,
        port=port,
        log_path=log_path,
        env=env,
        startup_timeout_s=inf.startup_timeout_s,
        wait=wait,
    )


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _on_cpu(cfg) -> bool:
    return cfg.backend.device == "cpu" or (cfg.backend.device == "auto" and not _cuda_available())


def trainer_config(cfg):
    """The config the local trainer is built from beside a sampling server.

    On a CPU, `dtype = "auto"` runs the server in float32 (`launch_server`), so the trainer's "auto"
    becomes float32 too: the loss must compare the logprobs the server sampled with (a bf16 trainer
    beside an fp32 server measured sampler_train_kl ~1e-3 against ~1e-7). Elsewhere both sides pick the
    model's own dtype."""
    if cfg.backend.dtype != "auto" or not _on_cpu(cfg):
        return cfg
    return cfg.model_copy(update={"backend": cfg.backend.model_copy(update={"dtype": "float32"})})


def build(cfg, make_local) -> ServerSampledBackend:
    """The local backend (`make_local(cfg)`) wrapped so that it samples through the server.

    Launch mode starts the server first and loads the local model while it boots."""
    inf = cfg.inference
    run_dir = Path(cfg.logging.log_dir or ".")
    server = None
    if inf.launch:
        server = launch_server(cfg, run_dir / "vllm_server.log", wait=False)
    try:
        local = make_local(trainer_config(cfg))
        url = server.url if server is not None else inf.url
        if server is not None:
            server.wait_healthy(inf.startup_timeout_s)
        client = OpenAIClient(url, timeout_s=inf.request_timeout_s)
        check_server(
            client,
            served_model_name(cfg),
            probe_ids=lambda: probe_ids(local.tokenizer),
            max_tokens=cfg.training.max_tokens,
        )
        check_tokenizer(client, served_model_name(cfg), local.tokenizer)
        engine = OpenAIEngine(
            client,
            served_model_name(cfg),
            stop_ids=local.stop_ids,
            adapter_dir=inf.adapter_dir or run_dir / "sampler_adapters",
            server_adapter_dir=inf.server_adapter_dir,
            lora_name=inf.lora_name or default_lora_name(run_dir),
            max_retries=inf.max_retries,
            server=server,
        )
        engine.reclaim()
        return ServerSampledBackend(local, engine)
    except BaseException:
        if server is not None:
            server.stop()
        raise
