"""The tinker backend: sampling and training on the Tinker service through its SDK (`pip install tinker`).

    [backend]
    backend = "tinker"          # [model].name is a model the service trains, e.g. Qwen/Qwen3-4B-Instruct-2507

What goes to the service, per step (docs/tinker.md has the whole picture):

- sampling: one `SamplingClient.sample` request per prompt (the chat-templated ids, `num_samples` =
  group size, temperature / top_p / max_tokens, a seed from (run seed, step, prompt), stop at the
  chat template's end-of-turn token), all sent before the first answer is awaited;
- training: `forward_backward(datums, "importance_sampling")`, `optim_step(AdamParams)` and the export
  of the new weights to a sampling client, queued together and awaited once (one round trip).
  The service sums the loss, −Σ ρ_t·A_t, so each datum's advantages are multiplied by its
  aggregation weight (`aggregation_weights`): the per-token shape the transforms produced reaches the
  service unchanged, and the value and gradient equal `retrain.rl.loss.policy_loss`'s;
- checkpoints: `save_state` (weights + Adam state) returns a `tinker://` path, recorded in
  trainer_state.json; resume builds a training client from it with its optimizer state.

The metrics say what they measure: `loss` is the service's `loss:sum` of the step just taken
(`backend_reports_sync_loss` true, never a placeholder); `train_time_s` is that one round trip
(forward-backward + optimizer step + publishing the weights to the sampler); `sample_time_s` covers
every prompt's request; `sampler_train_kl` comes from the logprobs `forward_backward` returns.

The API key is the SDK's business: `TINKER_API_KEY`, `TINKER_CREDENTIAL_CMD` or `tinker auth login`
(and `TINKER_BASE_URL`). retrain never reads, stores or logs it.

Faults: before a run writes anything, `preflight` checks the SDK, the key, that the service answers
within `connect_timeout_s` and that it trains `[model].name` (RetrainError, exit 2). During a run,
sampling, weight-publishing and checkpoint requests are retried (`max_retries`, exponential backoff
from `retry_backoff_s`); a training request is never resent (a retry could apply a step twice).
When a request keeps failing the run stops with `BackendUnavailable` (exit 1), its last checkpoint
intact, and `retrain resume` continues it.

Example (what `make_backend` does for `backend = "tinker"`)::

    backend = TinkerBackend.from_config(cfg)
    groups = backend.sample(["What is 2 + 3?"], n=4, params=SamplingParams(max_tokens=64))
"""

from __future__ import annotations

import difflib
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from retrain.backends.base import Completion, Datum, SamplingParams, TrainResult
from retrain.backends.chat import cached_prompt_ids, end_of_turn_ids
from retrain.errors import BackendUnavailable, RetrainError
from retrain.jsonio import now_iso, read_json, write_json_atomic
from retrain.registry import Option, Variant, int_at_least, number_at_least

INSTALL = "pip install 'retrain[tinker]'"
LOSS_FN = "importance_sampling"
POINTER = "tinker_checkpoint.json"  # in the local checkpoint dir: where the weights live on the service
# torch.optim.AdamW's defaults, which the local backend uses: the same gradient gives the same step on
# both backends (the SDK's own defaults are beta2 = 0.95, eps = 1e-12).
ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.9, 0.999, 1e-8
MIN_TTL_S = 3600  # the service keeps a checkpoint at least an hour when a TTL is set


def _ttl_problem(value: Any) -> str | None:
    """checkpoint_ttl_s: 0 (keep) or at least the service's minimum TTL."""
    problem = int_at_least(0)(value)
    if problem is None and 0 < value < MIN_TTL_S:
        return f"the service keeps checkpoints at least {MIN_TTL_S} s; use 0 (until deleted) or >= {MIN_TTL_S}, got {value}"
    return problem


# [backend.options] of the tinker backend (its registry entry checks them at config load).
OPTIONS: dict[str, Option] = {
    "max_concurrent": Option(32, "requests in flight at once, shared by every run of a campaign on this machine"),
    "max_retries": Option(
        3,
        "retries of a failed sampling, weight-publishing or checkpoint request; then the run stops, resumable",
        int_at_least(0),
    ),
    "retry_backoff_s": Option(
        2.0, "seconds before the first retry (0 = at once); doubles with each retry", number_at_least(0)
    ),
    "connect_timeout_s": Option(60, "seconds the service has to answer before step 0"),
    "checkpoint_ttl_s": Option(
        0, f"seconds the service keeps each checkpoint (>= {MIN_TTL_S}); 0 = until deleted", _ttl_problem
    ),
}

# Tinker puts LoRA on whole groups of layers; a [model].target_modules list must be a union of them.
LORA_GROUPS: dict[str, tuple[str, ...]] = {
    "train_attn": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "train_mlp": ("gate_proj", "up_proj", "down_proj"),
    "train_unembed": ("lm_head",),
}


# ---------------------------------------------------------------------------------------------
# Config: what the service honours (checked at config load, shown by `retrain explain`)


def lora_switches(target_modules: Sequence[str]) -> dict[str, bool] | None:
    """Tinker's LoRA switches for `target_modules`, or None when they are not a union of whole groups.

    >>> lora_switches(["q_proj", "k_proj", "v_proj", "o_proj", "lm_head"])
    {'train_attn': True, 'train_mlp': False, 'train_unembed': True}
    """
    wanted = set(target_modules)
    switches = {flag: wanted >= set(group) for flag, group in LORA_GROUPS.items()}
    covered = {m for flag, group in LORA_GROUPS.items() if switches[flag] for m in group}
    return switches if covered == wanted and any(switches.values()) else None


def config_problems(cfg) -> list[str]:
    """What a config asks for that the Tinker service cannot do, each as `[table].key: problem; fix`."""
    problems: list[str] = []  # [backend.options] are checked from the registry entry (OPTIONS)
    m, t = cfg.model, cfg.training
    if m.revision:
        problems.append("[model].revision: the Tinker service serves its own copy of each model; remove revision")
    if m.lora_alpha:
        problems.append(
            "[model].lora_alpha: Tinker sets the LoRA scaling itself (its learning rate does not depend "
            "on the rank); leave lora_alpha = 0"
        )
    if m.lora_dropout:
        problems.append("[model].lora_dropout: Tinker trains LoRA without dropout; set lora_dropout = 0")
    if lora_switches(m.target_modules) is None:
        groups = "; ".join(f"{', '.join(g)}" for g in LORA_GROUPS.values())
        problems.append(
            f"[model].target_modules: Tinker puts LoRA on whole groups of layers ({groups}); "
            f"list a union of them, got {list(m.target_modules)}"
        )
    if t.clip_eps or t.clip_eps_high:
        problems.append(
            "[training].clip_eps: the importance_sampling loss on Tinker has no ratio clip; "
            'set clip_eps = 0 and clip_eps_high = 0, or use backend = "local"'
        )
    if t.kl_beta:
        problems.append(
            "[training].kl_beta: Tinker's importance_sampling loss has no KL term to a reference model; "
            'set kl_beta = 0, or use backend = "local"'
        )
    if cfg.backend.device != "auto" or cfg.backend.dtype != "auto":
        problems.append(
            '[backend].device/dtype: the model runs on the Tinker service, which chooses both; leave them at "auto"'
        )
    if cfg.inference.engine != "hf" or cfg.inference.url:
        problems.append(
            "[inference]: the Tinker service samples; remove [inference] (engine and url are for the local backend)"
        )
    return problems


# The entry in `retrain.backends.BACKENDS`, declared here with the check and options it reads (this
# module is light: the SDK is imported only when a backend is built). `ENTRY.with_defaults(options)`
# is `[backend.options]` with every unset key at its default.
ENTRY: Variant[Any] = Variant(
    "tinker",
    "retrain.backends.tinker:TinkerBackend.from_config",
    "the hosted Tinker service through its SDK (pip install 'retrain[tinker]'); docs/tinker.md",
    check=config_problems,
    options=OPTIONS,
)


def settings_used(cfg) -> list[tuple[str, str]]:
    """(settings, what the tinker backend does with them), for `retrain explain`."""
    m, t = cfg.model, cfg.training
    o = ENTRY.with_defaults(cfg.backend.options)
    switches = lora_switches(m.target_modules) or {}
    lora = ", ".join(f"{k}={v}" for k, v in switches.items())
    agg = (
        "x 1 / (completion tokens in the step)"
        if t.loss_agg == "token_mean"
        else "x 1 / (tokens of the completion x completions in the step)"
    )
    return [
        (
            "[model] name, lora_rank, target_modules, [training] seed",
            f"create_lora_training_client(base_model={m.name!r}, rank={m.lora_rank}, seed={t.seed}, {lora})",
        ),
        (
            "[training] group_size, max_tokens, temperature, top_p",
            (
                f"one sample request per prompt: num_samples={t.group_size}, max_tokens={t.max_tokens}, "
                f"temperature={t.temperature}, top_p={t.top_p}, a seed per (step, prompt), stop at the chat template's "
                "end-of-turn token"
            ),
        ),
        (
            "[training] lr, weight_decay, grad_clip_norm",
            (
                f'forward_backward(loss_fn="{LOSS_FN}") then optim_step(AdamParams(learning_rate={t.lr}, '
                f"beta1={ADAM_BETA1}, beta2={ADAM_BETA2}, eps={ADAM_EPS}, weight_decay={t.weight_decay}, "
                f"grad_clip_norm={t.grad_clip_norm}))"
            ),
        ),
        ("[training] loss_agg", f"{t.loss_agg}: each datum's advantages {agg} (the service sums the loss)"),
        (
            "[training] save_every",
            f"save_state every {t.save_every} steps and at the end; tinker:// paths in trainer_state.json"
            if t.save_every
            else "save_state at the end; tinker:// path in trainer_state.json",
        ),
        ("[backend.options]", " ".join(f"{k}={v}" for k, v in o.items())),
        ("decided by the service", "LoRA scaling (alpha), precision, hardware; training logprobs use temperature 1"),
    ]


def run_warnings(cfg) -> list[str]:
    """Legal on Tinker but probably not what was meant (shown by `retrain explain`)."""
    t, out = cfg.training, []
    if t.temperature != 1.0:
        out.append(
            f"temperature = {t.temperature} on tinker: the service samples at this temperature but computes "
            "training logprobs at temperature 1, so importance ratios are not 1 on-policy "
            "(sampler_train_kl shows by how much); the local backend scales both"
        )
    if t.top_p < 1.0:
        out.append(
            f"top_p = {t.top_p} on tinker: sampling from the nucleus while training on the full distribution "
            "biases the importance ratio (sampler_train_kl)"
        )
    return out


# ---------------------------------------------------------------------------------------------
# The SDK, and checks before a run writes anything


def import_sdk():
    """The installed `tinker` SDK, or RetrainError with the install command."""
    try:
        import tinker
    except ModuleNotFoundError as e:
        if e.name != "tinker":
            raise
        raise RetrainError(f'backend = "tinker" needs the Tinker SDK: {INSTALL}') from None
    return tinker


class SDKClients(NamedTuple):
    """How the backend opens its two clients: `service()` -> ServiceClient, `rest()` -> RestClient."""

    service: Callable[[], Any]
    rest: Callable[[], Any]


def sdk_clients() -> SDKClients:
    """The SDK's own clients. Key and URL come from the SDK's environment (TINKER_API_KEY,
    TINKER_BASE_URL, `tinker auth login`), never from retrain's config. The tests put an in-process
    service here (tests/tinker_standin.py)."""
    tinker = import_sdk()
    return SDKClients(service=tinker.ServiceClient, rest=tinker.RestClient)


def _base_url() -> str:
    return os.environ.get("TINKER_BASE_URL") or "the default Tinker URL"


def describe_sdk_error(e: BaseException) -> str:
    """One line saying what an SDK error means for the user and what to do."""
    tinker = import_sdk()
    name = type(e).__name__
    if isinstance(e, tinker.AuthenticationError | tinker.PermissionDeniedError):
        return f"the Tinker service rejected the API key ({name}: {e}); check TINKER_API_KEY (or `tinker auth login`)"
    if isinstance(e, tinker.BillingError):
        return f"the Tinker account has a billing problem ({e}); see the Tinker console"
    if isinstance(e, tinker.APIConnectionError | TimeoutError):
        return f"could not reach the Tinker service at {_base_url()} ({name}: {e})"
    if isinstance(e, tinker.TinkerError) and not isinstance(e, tinker.APIError | tinker.RequestFailedError):
        # Raised before any request: no key, or a malformed one.
        return (
            f"{e}. retrain reads no key itself: export TINKER_API_KEY=tml-... (from the Tinker console), "
            "or run `tinker auth login`"
        )
    return f"{name}: {e}"


def _within(seconds: float, fn: Callable[[], Any]) -> Any:
    """fn() on a daemon thread, or TimeoutError after `seconds`.

    The SDK retries an unreachable service for minutes inside a client's constructor; a daemon
    thread lets the run give up on time (and exit) without waiting for it."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True, name="retrain-tinker-connect")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def server_models(timeout_s: float) -> list[Any]:
    """The service's `SupportedModel`s (the SDK's `RestClient.get_server_capabilities`), or
    RetrainError saying why not (no SDK, no key, key rejected, unreachable).

    Nothing to close afterwards: a `RestClient` built from credentials opens no session (nothing is
    billed or listed) and runs over the SDK's process-wide connection pool for that key, which the
    SDK keeps open by design and gives no close (closing it would break the next check in this
    process). Only the backend's `ServiceClient` opens a session, and `TinkerBackend.close` ends it."""
    tinker = import_sdk()
    clients = sdk_clients()
    try:
        caps = _within(timeout_s, lambda: clients.rest().get_server_capabilities().result())
    except TimeoutError:
        raise RetrainError(
            f"the Tinker service at {_base_url()} did not answer within {timeout_s:g} s; check "
            "the network and TINKER_BASE_URL, or raise [backend.options].connect_timeout_s"
        ) from None
    except tinker.TinkerError as e:
        raise RetrainError(describe_sdk_error(e)) from None
    return list(caps.supported_models)


def preflight(cfg) -> None:
    """Before a run writes anything: the SDK is installed, a key is configured, the service answers
    within `connect_timeout_s`, and it trains `[model].name` with room for `max_tokens`."""
    models = server_models(ENTRY.with_defaults(cfg.backend.options)["connect_timeout_s"])
    name = cfg.model.name
    trainable = [m for m in models if m.model_name and m.trainable is not False]
    found = next((m for m in trainable if m.model_name == name), None)
    if found is None:
        names = [m.model_name for m in trainable]
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise RetrainError(
            f"[model].name = {name!r}: the Tinker service does not train this model.{hint} "
            f"It trains: {', '.join(sorted(names)) or '(none listed)'}"
        )
    limit = found.max_context_length
    if limit and cfg.training.max_tokens >= limit:
        raise RetrainError(
            f"[training].max_tokens = {cfg.training.max_tokens}: {name} on Tinker has a context "
            f"of {limit} tokens, prompt included; lower max_tokens"
        )


def probe_service(timeout_s: float = 10.0) -> dict:
    """For `retrain doctor`: whether the service answers with this environment's key."""
    try:
        models = server_models(timeout_s)
    except RetrainError as e:
        return {"answers": False, "detail": str(e)}
    trainable = sorted(m.model_name for m in models if m.model_name and m.trainable is not False)
    return {"answers": True, "detail": f"{_base_url()} answers; {len(trainable)} trainable models", "models": trainable}


def limiter_dir(run_dir: Path) -> Path:
    """Where a run's request limiter lives: shared by a campaign's runs (`<campaign>/tinker_limiter`),
    the run's own dir otherwise."""
    campaign = run_dir.parent.parent
    if run_dir.parent.name == "runs" and (campaign / "manifest.json").is_file():
        return campaign / "tinker_limiter"
    return run_dir / "tinker_limiter"


# ---------------------------------------------------------------------------------------------
# Pure pieces: aggregation, datums, seeds


def aggregation_weights(num_tokens_D: Sequence[int], loss_agg: str) -> list[float]:
    """Per-datum multipliers that turn the service's summed loss into retrain's aggregation.

    The service computes L = −Σ_d Σ_t ρ_dt·A'_dt (a plain sum). Sending A'_dt = w_d·A_dt with

        token_mean:  w_d = 1 / N,           N = Σ_d T_d  (completion tokens in the step)
        seq_mean:    w_d = 1 / (T_d · S),   S = #{d : T_d > 0}

    gives exactly `retrain.rl.loss.policy_loss` with the step's normalizer, in value and gradient
    (the loss is linear in A). Datums without tokens get weight 0.
    """
    if loss_agg == "token_mean":
        n = sum(num_tokens_D)
        return [1.0 / n if t > 0 else 0.0 for t in num_tokens_D]
    if loss_agg == "seq_mean":
        s = sum(1 for t in num_tokens_D if t > 0)
        return [1.0 / (t * s) if t > 0 else 0.0 for t in num_tokens_D]
    raise ValueError(f"loss_agg must be token_mean or seq_mean, got {loss_agg!r}")


def to_tinker_datum(types, d: Datum, weight: float):
    """A retrain Datum as the SDK's `Datum` for the importance_sampling loss.

    Next-token alignment: the input is the sequence without its last token, target t is token t+1.
    Prompt positions carry logprob 0 and advantage 0, so they add nothing to the loss or gradient:

        tokens      = prompt_ids + completion_ids             (P + T)
        model_input = tokens[:-1]                             (P + T − 1)
        targets     = tokens[1:]
        logprobs    = [0]·(P − 1) + old_logprobs_T
        advantages  = [0]·(P − 1) + weight · advantages_T
    """
    tokens = list(d.prompt_ids) + list(d.completion_ids)
    pad = len(d.prompt_ids) - 1
    logprobs_N = np.concatenate([np.zeros(pad, np.float32), np.asarray(d.old_logprobs_T, np.float32)])
    adv_N = np.concatenate([np.zeros(pad, np.float32), np.asarray(d.advantages_T, np.float64) * weight])
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={
            "target_tokens": types.TensorData.from_numpy(np.asarray(tokens[1:], np.int64)),
            "logprobs": types.TensorData.from_numpy(logprobs_N),
            "advantages": types.TensorData.from_numpy(adv_N.astype(np.float32)),
        },
    )


def prompt_seed(step_seed: int, index: int) -> int:
    """The sampling seed of the `index`-th prompt of a step: distinct per prompt (two copies of one
    prompt in a batch still get different groups), a pure function of the step's seed so resume
    draws the same samples, and below 2^31 for any service-side seed type."""
    return (step_seed + 1_000_003 * index) % (2**31 - 1)


class _FailedSend:
    """A request the SDK refused to send: `.result()` raises what it raised."""

    def __init__(self, error: Exception):
        self.error = error

    def result(self, timeout: float | None = None):
        raise self.error


# ---------------------------------------------------------------------------------------------
# The backend


class TinkerBackend:
    """`Backend` on the Tinker service; the module docstring says what is sent and what comes back."""

    reports_sync_loss = True  # train_step waits for forward_backward: loss is the step's own objective

    def __init__(
        self,
        service,
        *,
        base_model: str,
        lora_rank: int,
        lora: dict[str, bool],
        seed: int,
        loss_agg: str = "token_mean",
        weight_decay: float = 0.0,
        grad_clip_norm: float = 1.0,
        limiter=None,
        max_retries: int = 3,
        retry_backoff_s: float = 2.0,
        checkpoint_ttl_s: int = 0,
        resume_hint: str = "retrain resume <run dir>",
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.sdk = import_sdk()
        self._service = service
        self.base_model, self.lora_rank, self.lora, self.seed = base_model, lora_rank, dict(lora), seed
        self.loss_agg, self.weight_decay, self.grad_clip_norm = loss_agg, weight_decay, grad_clip_norm
        self._limiter = limiter
        self.max_retries, self.retry_backoff_s = max_retries, retry_backoff_s
        self.checkpoint_ttl_s = checkpoint_ttl_s
        self._resume_hint = resume_hint
        self._sleep = sleep
        self._training = None  # created on first use, or from a checkpoint by load()
        self._sampler = None  # a SamplingClient on the current weights
        self._tokenizer = None
        self._stop_ids: list[int] | None = None
        self._prompt_ids_cache: dict[str, list[int]] = {}

    @classmethod
    def from_config(cls, cfg) -> TinkerBackend:
        """Build from a retrain Config (checked by `config_problems` at load; `preflight` has run)."""
        from retrain.backends.limiter import FileLimiter

        o = ENTRY.with_defaults(cfg.backend.options)
        t = cfg.training
        run_dir = Path(cfg.logging.log_dir) if cfg.logging.log_dir else None
        limiter = FileLimiter(limiter_dir(run_dir), o["max_concurrent"]) if run_dir else None
        return cls(
            sdk_clients().service(display_name=f"retrain {cfg.run_name}"),  # how the Tinker console lists it
            base_model=cfg.model.name,
            lora_rank=cfg.model.lora_rank,
            lora=lora_switches(cfg.model.target_modules) or {},
            seed=t.seed,
            loss_agg=t.loss_agg,
            weight_decay=t.weight_decay,
            grad_clip_norm=t.grad_clip_norm,
            limiter=limiter,
            max_retries=o["max_retries"],
            retry_backoff_s=o["retry_backoff_s"],
            checkpoint_ttl_s=o["checkpoint_ttl_s"],
            resume_hint=f"retrain resume {run_dir}" if run_dir else "retrain resume <run dir>",
        )

    # ------------------------------------------------------------ requests

    def _send(self, submit: Callable[[], Any]):
        """One request through the shared limiter: a slot is held until its answer arrives."""
        token = self._limiter.acquire() if self._limiter else None
        try:
            future = submit()
        except Exception as e:  # noqa: BLE001 - the SDK can refuse before sending; handled like a failed answer
            self._release(token)
            return _FailedSend(e)
        future.future().add_done_callback(lambda _done: self._release(token))
        return future

    def _release(self, token) -> None:
        if self._limiter is not None:
            self._limiter.release(token)

    def _retryable(self, e: BaseException) -> bool:
        sdk = self.sdk
        if isinstance(e, sdk.RequestFailedError):
            return str(e.category).lower() != "user"
        return isinstance(
            e, sdk.APIConnectionError | sdk.RateLimitError | sdk.InternalServerError | sdk.ConflictError | TimeoutError
        )

    def _stopped(self, what: str, e: BaseException, attempts: int) -> BackendUnavailable:
        tries = f" after {attempts} attempt(s)" if attempts > 1 else ""
        return BackendUnavailable(
            f"tinker: {what} failed{tries}: {describe_sdk_error(e)}. The run stopped; its last checkpoint is "
            f"intact: continue with `{self._resume_hint}`"
        )

    def _with_retries(self, what: str, submit: Callable[[], Any], first=None):
        """The answer to `submit()`'s request, resent after a retryable failure (at most max_retries
        times, waiting retry_backoff_s·2^k); `first` is a request already sent (pipelining)."""
        future = first
        for attempt in range(self.max_retries + 1):
            try:
                if future is None:
                    future = self._send(submit)
                return future.result()
            except Exception as e:
                future = None
                if not self._retryable(e) or attempt == self.max_retries:
                    raise self._stopped(what, e, attempt + 1) from e
                self._sleep(self.retry_backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------ clients

    def _created(self, what: str, submit: Callable[[], Any]) -> Any:
        """A training client from a create or restore request, sent once.

        Not resent: the SDK already retries a dropped connection inside the request (with the same
        idempotency key), and each new request names a new model on the service, so a resend after
        an answer lost on the way back would leave the first model training nothing, billed, until
        the session ends. The run stops resumably instead; `close` ends the session, and with it
        any model it created."""
        try:
            return self._send(submit).result()
        except Exception as e:
            raise BackendUnavailable(
                f"tinker: {what} failed: {describe_sdk_error(e)}. Not resent: the service may have created it "
                f"already, and a second request would start a second model. The run stopped; its last "
                f"checkpoint is intact: continue with `{self._resume_hint}`"
            ) from e

    def _training_client(self):
        if self._training is None:
            self._training = self._created(
                f"creating a LoRA training client for {self.base_model}",
                lambda: self._service.create_lora_training_client(
                    base_model=self.base_model, rank=self.lora_rank, seed=self.seed, **self.lora
                ),
            )
        return self._training

    def _sampling_client(self):
        if self._sampler is None:
            training = self._training_client()
            self._sampler = self._with_retries(
                "publishing the weights for sampling", training.save_weights_and_get_sampling_client
            )
        return self._sampler

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = self._training_client().get_tokenizer()
        return self._tokenizer

    def stop_ids(self) -> list[int]:
        if self._stop_ids is None:
            self._stop_ids = sorted(end_of_turn_ids(self.tokenizer))
        return self._stop_ids

    def prompt_ids(self, prompt: str) -> list[int]:
        """The chat-templated ids of `prompt` (the same ids the local backend feeds its model)."""
        return cached_prompt_ids(self._prompt_ids_cache, self.tokenizer, prompt)

    # ------------------------------------------------------------ sampling

    def sample(self, prompts: list[str], n: int, params: SamplingParams) -> list[list[Completion]]:
        """`n` completions per prompt: one request per prompt, all sent before any answer is awaited."""
        from retrain.backends.sampler import decode_with_offsets

        if n < 1 or params.max_tokens < 1:
            raise RetrainError(f"sampling needs n >= 1 and max_tokens >= 1, got n={n}, max_tokens={params.max_tokens}")
        if params.want_entropy:
            raise RetrainError('the tinker backend returns no per-token entropies; use uncertainty_kind = "surprisal"')
        types = self.sdk.types
        sampler = self._sampling_client()
        ids_P = [self.prompt_ids(p) for p in prompts]

        def submit(p: int) -> Callable[[], Any]:
            sampling = types.SamplingParams(
                max_tokens=params.max_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=1 if params.greedy else -1,  # greedy decoding is top-1
                seed=prompt_seed(params.seed, p),
                # The SDK reads `stop=[]` as "no stop token, not even EOS" (every sample would run to
                # max_tokens) and None as the service's own EOS stopping: with no end-of-turn token
                # known here (a tokenizer without EOS or chat template), the service decides.
                stop=self.stop_ids() or None,
            )
            prompt = types.ModelInput.from_ints(ids_P[p])
            return lambda: sampler.sample(prompt=prompt, num_samples=n, sampling_params=sampling)

        sent_P = [self._send(submit(p)) for p in range(len(ids_P))]
        groups: list[list[Completion]] = []
        for p, sent in enumerate(sent_P):
            response = self._with_retries(f"sampling (prompt {p + 1} of {len(ids_P)})", submit(p), first=sent)
            if len(response.sequences) != n:
                raise BackendUnavailable(
                    f"tinker: asked for {n} samples, the service returned {len(response.sequences)}"
                )
            group = []
            for seq in response.sequences:
                tokens = [int(t) for t in seq.tokens]
                if seq.logprobs is None:
                    raise BackendUnavailable("tinker: the service returned a sample without logprobs")
                text, offsets = decode_with_offsets(self.tokenizer, tokens)
                group.append(
                    Completion(
                        prompt_ids=list(ids_P[p]),
                        token_ids=tokens,
                        logprobs=[float(x) for x in seq.logprobs],
                        text=text,
                        offsets=offsets,
                        hit_max_tokens=seq.stop_reason == "length",
                    )
                )
            groups.append(group)
        return groups

    # ------------------------------------------------------------ training

    def train_step(self, datums: list[Datum], lr: float) -> TrainResult:
        """forward_backward + optim_step + publishing the weights, sent together, awaited once."""
        for d in datums:
            if not (len(d.completion_ids) == len(d.old_logprobs_T) == len(d.advantages_T)):
                raise ValueError("Datum: completion_ids, old_logprobs_T and advantages_T must have equal lengths")
            if not d.prompt_ids:
                raise ValueError("Datum: prompt_ids must not be empty")
        datums = [d for d in datums if d.completion_ids]  # no tokens: no loss, no gradient
        if not datums:
            return TrainResult(loss=None)
        types = self.sdk.types
        training = self._training_client()
        weights_D = aggregation_weights([len(d.completion_ids) for d in datums], self.loss_agg)
        data_D = [to_tinker_datum(types, d, w) for d, w in zip(datums, weights_D, strict=True)]
        adam = types.AdamParams(
            learning_rate=lr,
            beta1=ADAM_BETA1,
            beta2=ADAM_BETA2,
            eps=ADAM_EPS,
            weight_decay=self.weight_decay,
            grad_clip_norm=self.grad_clip_norm,
        )
        # The service runs a training client's requests in the order they were sent, so all three
        # go out before the first answer is awaited: one round trip instead of three.
        token = self._limiter.acquire() if self._limiter else None  # one slot for the three
        try:
            try:
                fb_future = training.forward_backward(data_D, LOSS_FN)
                optim_future = training.optim_step(adam)
                try:
                    publish = training.save_weights_and_get_sampling_client()
                except Exception as e:  # noqa: BLE001 - retried below, on its own
                    publish = _FailedSend(e)
                fb_out, optim_out = fb_future.result(), optim_future.result()
            except Exception as e:
                # Not resent: the service may have applied the step already, and a second
                # forward_backward would add its gradient again.
                self._sampler = None
                raise self._stopped("the training step (forward_backward + optim_step)", e, 1) from e
        finally:
            self._release(token)
        self._sampler = self._with_retries(
            "publishing the new weights for sampling", training.save_weights_and_get_sampling_client, first=publish
        )
        return self._train_result(datums, weights_D, fb_out, optim_out)

    @staticmethod
    def _train_result(datums: list[Datum], weights_D: list[float], fb_out, optim_out) -> TrainResult:
        """The step's loss and the sampler-vs-trainer mismatch, from what forward_backward returned
        (its forward ran before the optimizer step, like the local backend's)."""
        diffs, terms = [], []
        for d, w, out in zip(datums, weights_D, fb_out.loss_fn_outputs, strict=True):
            new_N = np.asarray(out["logprobs"].data, dtype=np.float64)
            old_T = np.asarray(d.old_logprobs_T, np.float64)
            new_T = new_N[len(new_N) - len(d.completion_ids) :]
            diffs.append(old_T - new_T)
            terms.append(-np.exp(new_T - old_T) * np.asarray(d.advantages_T, np.float64) * w)
        diff = np.concatenate(diffs)
        metrics = {**fb_out.metrics, **(optim_out.metrics or {})}
        # The service's own sum when it reports one; else the same sum from the returned logprobs.
        loss = metrics.get("loss:sum", float(np.concatenate(terms).sum()))
        grad_norm = next((float(v) for k, v in metrics.items() if "grad_norm" in k), None)
        return TrainResult(
            loss=float(loss),
            clip_fraction=0.0,  # the importance_sampling loss has no clip
            kl_ref=0.0,  # and no reference term
            sampler_train_kl=float(diff.mean()),
            grad_norm=grad_norm,  # only when the service reports one
            num_tokens=int(diff.size),
        )

    # ------------------------------------------------------------ checkpoints

    def save(self, path: str) -> str:
        """`save_state` on the service (weights + Adam state), named after the local checkpoint dir;
        writes `path/tinker_checkpoint.json` pointing at it and returns the `tinker://` path."""
        training = self._training_client()
        name = Path(path).name
        ttl = self.checkpoint_ttl_s or None
        saved = self._with_retries(
            f"saving checkpoint {name}",
            lambda: training.save_state(name, ttl_seconds=ttl, overwrite=True),  # overwrite: a retried save
        )
        os.makedirs(path, exist_ok=True)
        write_json_atomic(
            Path(path) / POINTER,
            {
                "tinker_path": saved.path,
                "base_model": self.base_model,
                "lora_rank": self.lora_rank,
                "saved_at": now_iso(),
                "download": f"tinker checkpoint download {saved.path}",  # a PEFT adapter, e.g. for retrain squeeze
            },
        )
        return saved.path

    def load(self, path: str) -> None:
        """Continue from a checkpoint: a `tinker://` path, or a local dir holding tinker_checkpoint.json.
        A new training client starts from its weights and Adam state; sampling uses them next."""
        ref = path if path.startswith("tinker://") else read_json(Path(path) / POINTER).get("tinker_path")
        if not ref:
            raise RetrainError(f"{path}: no {POINTER} here; this checkpoint was not written by the tinker backend")
        try:
            self._training = self._created(
                f"restoring {ref}", lambda: self._service.create_training_client_from_state_with_optimizer(ref)
            )
        except BackendUnavailable as e:
            if isinstance(e.__cause__, self.sdk.NotFoundError):
                raise RetrainError(
                    f"tinker: {ref} is not on the service any more ({e.__cause__}); a checkpoint "
                    "with a TTL expires ([backend.options].checkpoint_ttl_s)"
                ) from None
            raise
        self._sampler = None

    def close(self, status: str = "success") -> None:
        """End the service session as "success", "errored" or "interrupted" (best effort: the run's
        outcome is already recorded)."""
        try:
            self._service.close(status).result(timeout=30)
        except Exception as e:  # noqa: BLE001 - closing must never turn a finished run into a failure
            warnings.warn(f"tinker: could not end the service session ({type(e).__name__}: {e})", stacklevel=2)
