"""An in-process stand-in for the Tinker service, for tests that must not touch the network.

It implements the part of the SDK surface retrain's tinker backend uses, with the installed SDK's
names, signatures, futures and types (read from tinker 0.38's source):

    ServiceClient.create_lora_training_client(base_model, rank, seed, train_mlp, train_attn,
        train_unembed, user_metadata, optimizer)                  -> future of a TrainingClient
    ServiceClient.create_training_client_from_state_with_optimizer(path, ...) -> future of one
    ServiceClient.close(status, detail)                          -> future of None
    RestClient(...)  (raises TinkerError without a key, like the SDK's constructor)
    RestClient.get_server_capabilities()                         -> APIFuture[GetServerCapabilitiesResponse]
    TrainingClient.forward_backward(data, loss_fn, loss_fn_config) -> APIFuture[ForwardBackwardOutput]
    TrainingClient.optim_step(optim_params)                      -> APIFuture[OptimStepResponse]
    TrainingClient.save_state(name, ttl_seconds, overwrite, user_metadata) -> APIFuture[SaveWeightsResponse]
    TrainingClient.save_weights_and_get_sampling_client()        -> future of a SamplingClient
    TrainingClient.get_tokenizer()
    SamplingClient.sample(prompt, num_samples, sampling_params)  -> APIFuture[SampleResponse]

Requests and answers are the SDK's own types (Datum, ModelInput, TensorData, SamplingParams,
AdamParams, SampleResponse, SampledSequence, ForwardBackwardOutput, ...); futures are the SDK's
`AwaitableConcurrentFuture`. Behind them is the local backend's real math on a transformers + peft
model: `LocalBackend.completion_logprobs` at temperature 1 (the service's training forward), the
service's loss −Σ exp(logp − logprobs)·advantages summed over every position of every datum,
gradients accumulated until `optim_step`, which is torch's AdamW with the request's AdamParams and
global-norm clipping; sampling is `retrain.backends.sampler.sample_groups` on a snapshot of the
weights. One worker thread runs requests in the order they were sent, as the service does for a
training client, so a client that sends before it waits really overlaps them.

What the tests can look at: `log` (every request the service ran, with its payload), `events`
("send:<kind>" when the client sent, "wait:<kind>" when it first waited on the answer), `checkpoints`
(tinker path -> saved state) and `fail_next(kind, error, times)` to make requests fail.

    service = StandInService({"tiny-random": "tiny-random"})
    monkeypatch.setattr(retrain.backends.tinker, "sdk_clients", service.sdk_clients)
"""

from __future__ import annotations

import concurrent.futures
import copy
import itertools
import os
import threading
from collections import defaultdict

import httpx
import numpy as np
import tinker
import torch
from tinker import types
from tinker.lib._auth_token_provider import MISSING_API_KEY_MESSAGE
from tinker.lib.public_interfaces.api_future import AwaitableConcurrentFuture
from tinker.types.get_server_capabilities_response import SupportedModel

from retrain.backends.base import Datum as RetrainDatum
from retrain.backends.local import LocalBackend
from retrain.backends.sampler import sample_groups
from retrain.backends.tinker import LORA_GROUPS, SDKClients

URL = "http://tinker.standin/api"


def connection_error() -> Exception:
    return tinker.APIConnectionError(request=httpx.Request("POST", URL))


def server_error(status: int = 500) -> Exception:
    request = httpx.Request("POST", URL)
    cls = {429: tinker.RateLimitError, 400: tinker.BadRequestError, 404: tinker.NotFoundError}.get(
        status, tinker.InternalServerError
    )
    return cls(f"stand-in HTTP {status}", response=httpx.Response(status, request=request), body=None)


class _Future(AwaitableConcurrentFuture):
    """The SDK's future type; notes in `events` the first time the client waits on it."""

    def __init__(self, future, service: StandInService, kind: str):
        super().__init__(future)
        self._service, self._kind, self._waited = service, kind, False

    def result(self, timeout: float | None = None):
        if not self._waited:
            self._waited = True
            self._service.events.append(f"wait:{self._kind}")
        return super().result(timeout)


def _copy_result(source: concurrent.futures.Future, target: concurrent.futures.Future) -> None:
    if source.exception() is not None:
        target.set_exception(source.exception())
    else:
        target.set_result(source.result())


def _done(value) -> AwaitableConcurrentFuture:
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_result(value)
    return AwaitableConcurrentFuture(future)


class StandInService:
    """The service: models it serves, checkpoints it stores, one worker running requests in order."""

    def __init__(self, models: dict[str, str], *, max_context_length: int = 32768, latency_s: float = 0.0):
        self.models = dict(models)  # name on the service -> local model id or alias it runs
        self.max_context_length = max_context_length
        self.latency_s = latency_s  # a network round trip added to every answer (benchmarks)
        self.log: list[tuple[str, dict]] = []
        self.events: list[str] = []
        self.checkpoints: dict[str, dict] = {}
        self.closed: list[str] = []
        self.training_clients: list[StandInTrainingClient] = []  # every model created or restored
        self._faults: dict[str, dict[int, Exception]] = defaultdict(dict)  # kind -> {request index: error}
        self._counts: dict[str, int] = defaultdict(int)  # requests of each kind sent so far
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="standin-tinker")
        self._ids = itertools.count(1)

    def sdk_clients(self) -> SDKClients:
        """What `retrain.backends.tinker.sdk_clients` returns, but for this service."""
        return SDKClients(service=lambda **kw: StandInServiceClient(self), rest=lambda **kw: StandInRestClient(self))

    def fail_next(self, kind: str, error: str | int = "connection", times: int = 1, skip: int = 0) -> None:
        """After `skip` more requests of `kind` ("sample", "forward_backward", "optim_step", "save_state",
        "publish", "create", "restore", "capabilities"), the next `times` fail with a connection error
        or an HTTP status error (e.g. 500, 429, 400)."""
        start = self._counts[kind] + skip
        for index in range(start, start + times):
            self._faults[kind][index] = connection_error() if error == "connection" else server_error(int(error))

    def requests(self, kind: str) -> list[dict]:
        return [payload for k, payload in self.log if k == kind]

    def _check_key(self) -> None:
        if not os.environ.get("TINKER_API_KEY"):
            raise tinker.TinkerError(MISSING_API_KEY_MESSAGE)

    def _submit(self, kind: str, fn, **payload) -> _Future:
        """Queue `fn` on the worker (requests run in the order they were sent); log it when it runs."""
        self._check_key()
        self.events.append(f"send:{kind}")
        index = self._counts[kind]
        self._counts[kind] += 1
        fault = self._faults[kind].pop(index, None)

        def job():
            if fault is not None:
                self.log.append((f"failed:{kind}", payload))
                raise fault
            result = fn()
            self.log.append((kind, {**payload, "result": result}))
            return result

        if not self.latency_s:
            return _Future(self._worker.submit(job), self, kind)
        # Half the round trip before the service sees the request, half before the answer is back;
        # requests in flight overlap their trips, as on a network.
        answer: concurrent.futures.Future = concurrent.futures.Future()

        def arrive() -> None:
            ran = self._worker.submit(job)
            ran.add_done_callback(lambda f: threading.Timer(self.latency_s / 2, _copy_result, (f, answer)).start())

        threading.Timer(self.latency_s / 2, arrive).start()
        return _Future(answer, self, kind)


class StandInRestClient:
    def __init__(self, service: StandInService, *, base_url: str | None = None, api_key: str | None = None):
        service._check_key()  # the SDK's constructor fails at once without a key
        self._service = service

    def get_server_capabilities(self):
        s = self._service
        models = [
            SupportedModel(model_name=name, max_context_length=s.max_context_length, trainable=True, sampleable=True)
            for name in s.models
        ]
        return s._submit("capabilities", lambda: types.GetServerCapabilitiesResponse(supported_models=models))


class StandInServiceClient:
    def __init__(self, service: StandInService):
        self._service = service

    def create_lora_training_client(
        self,
        base_model: str,
        rank: int = 32,
        seed: int | None = None,
        train_mlp: bool = True,
        train_attn: bool = True,
        train_unembed: bool = True,
        user_metadata: dict[str, str] | None = None,
        optimizer: types.OptimizerConfig | None = None,
    ):
        lora = types.LoraConfig(
            rank=rank, seed=seed, train_mlp=train_mlp, train_attn=train_attn, train_unembed=train_unembed
        )
        s = self._service

        def create():
            if base_model not in s.models:
                raise server_error(400)
            return StandInTrainingClient(s, base_model, lora)

        return s._submit("create", create, base_model=base_model, lora=lora)

    def create_training_client_from_state_with_optimizer(
        self,
        path: str,
        base_model: str | None = None,
        user_metadata: dict[str, str] | None = None,
        weights_access_token: str | None = None,
    ):
        s = self._service

        def restore():
            saved = s.checkpoints.get(path)
            if saved is None:
                raise server_error(404)
            client = StandInTrainingClient(s, saved["base_model"], saved["lora"])
            client._restore(saved)
            return client

        return s._submit("restore", restore, path=path)

    def close(self, status: str, detail: str | None = None):
        self._service.closed.append(status)
        return _done(None)


class StandInTrainingClient:
    """One LoRA model on the service: a LocalBackend's peft model, trained by the requests below."""

    def __init__(self, service: StandInService, base_model: str, lora: types.LoraConfig):
        self._service, self.base_model, self.lora = service, base_model, lora
        self.model_id = f"standin-run-{next(service._ids)}"
        targets = [m for flag, group in LORA_GROUPS.items() if getattr(lora, flag) for m in group]
        self.local = LocalBackend(
            service.models[base_model],
            lora_rank=lora.rank,
            target_modules=targets,
            device="cpu",
            temperature=1.0,
            seed=lora.seed or 0,
        )
        self._snapshots = itertools.count(1)
        service.training_clients.append(self)

    def get_tokenizer(self):
        return self.local.tokenizer

    def _restore(self, saved: dict) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.local.model, copy.deepcopy(saved["adapter"]))
        self.local.optimizer.load_state_dict(copy.deepcopy(saved["optimizer"]))

    def adapter_state(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(self.local.model, save_embedding_layers=False)
        return {k: v.detach().clone() for k, v in state.items()}

    # ------------------------------------------------------------ training

    def forward_backward(self, data: list[types.Datum], loss_fn: types.LossFnType, loss_fn_config: dict | None = None):
        if loss_fn != "importance_sampling" or loss_fn_config:
            raise ValueError(f"the stand-in implements the importance_sampling loss only, got {loss_fn!r}")
        rows = [_check_is_datum(d) for d in data]
        return self._service._submit("forward_backward", lambda: self._forward_backward(rows), data=data)

    def _forward_backward(self, rows):
        local = self.local
        local.model.train()
        # model_input[i] predicts target[i]; with a shift-by-one datum that is the completion
        # logprob of targets after the first input token.
        logprobs_B_T, mask_B_T = local.completion_logprobs(
            [RetrainDatum([r["input"][0]], r["targets"], r["logprobs"], r["advantages"]) for r in rows]
        )
        old_B_T = _padded([r["logprobs"] for r in rows], mask_B_T.shape[1])
        adv_B_T = _padded([r["advantages"] for r in rows], mask_B_T.shape[1])
        ratio_B_T = torch.exp(torch.where(mask_B_T, logprobs_B_T - old_B_T, 0.0))
        loss = -(ratio_B_T * adv_B_T * mask_B_T).sum()  # the service sums over every token of every datum
        loss.backward()  # gradients accumulate until optim_step
        outputs = [
            {
                "logprobs": types.TensorData.from_numpy(
                    logprobs_B_T[b, : len(r["targets"])].detach().numpy().astype(np.float32)
                )
            }
            for b, r in enumerate(rows)
        ]
        return types.ForwardBackwardOutput(
            loss_fn_output_type="ArrayRecord", loss_fn_outputs=outputs, metrics={"loss:sum": float(loss.item())}
        )

    def optim_step(self, optim_params: types.AdamParams | None = None, *, adam_params: types.AdamParams | None = None):
        params = optim_params or adam_params
        if not isinstance(params, types.AdamParams):
            raise TypeError("Expected AdamParams")
        return self._service._submit("optim_step", lambda: self._optim_step(params), params=params)

    def _optim_step(self, p: types.AdamParams):
        local = self.local
        for group in local.optimizer.param_groups:
            group.update(lr=p.learning_rate, betas=(p.beta1, p.beta2), eps=p.eps, weight_decay=p.weight_decay)
        if p.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_([w for w in local.model.parameters() if w.requires_grad], p.grad_clip_norm)
        local.optimizer.step()
        local.optimizer.zero_grad(set_to_none=True)
        local.model.eval()
        return types.OptimStepResponse(metrics=None)

    # ------------------------------------------------------------ weights

    def save_state(
        self,
        name: str,
        ttl_seconds: int | None = None,
        overwrite: bool = False,
        user_metadata: dict[str, str] | None = None,
    ):
        path = f"tinker://{self.model_id}/weights/{name}"

        def save():
            if path in self._service.checkpoints and not overwrite:
                raise server_error(409)
            self._service.checkpoints[path] = {
                "base_model": self.base_model,
                "lora": self.lora,
                "ttl_seconds": ttl_seconds,
                "adapter": self.adapter_state(),
                "optimizer": copy.deepcopy(self.local.optimizer.state_dict()),
            }
            return types.SaveWeightsResponse(path=path)

        return self._service._submit("save_state", save, name=name, ttl_seconds=ttl_seconds)

    def save_weights_and_get_sampling_client(
        self, name: str | None = None, retry_config=None, record_stability_info: bool = False, kind: str = "snapshot"
    ):
        return self._service._submit(
            "publish", lambda: StandInSamplingClient(self, self.adapter_state(), next(self._snapshots))
        )


class StandInSamplingClient:
    """Samples from a snapshot of a training client's weights (later training does not change it)."""

    def __init__(self, owner: StandInTrainingClient, adapter: dict, snapshot: int):
        self._owner, self._adapter, self.snapshot = owner, adapter, snapshot

    def sample(
        self,
        prompt: types.ModelInput,
        num_samples: int,
        sampling_params: types.SamplingParams,
        include_prompt_logprobs: bool = False,
        topk_prompt_logprobs: int = 0,
        topk_sample_logprobs: int = 0,
        target_prompt_logprobs=None,
        prompt_alt_tokens_k: int = 0,
        prompt_logprobs_last_n: int | None = None,
    ):
        if not isinstance(prompt, types.ModelInput) or not isinstance(sampling_params, types.SamplingParams):
            raise TypeError("sample takes a ModelInput and SamplingParams")
        return self._owner._service._submit(
            "sample",
            lambda: self._sample(prompt.to_ints(), num_samples, sampling_params),
            prompt=prompt.to_ints(),
            num_samples=num_samples,
            params=sampling_params,
            snapshot=self.snapshot,
        )

    def _sample(self, prompt_ids: list[int], n: int, p: types.SamplingParams) -> types.SampleResponse:
        from peft import set_peft_model_state_dict

        local = self._owner.local
        if p.top_k not in (-1, 1):
            raise ValueError("the stand-in samples with top_k -1 (off) or 1 (greedy)")
        training_weights = self._owner.adapter_state()
        set_peft_model_state_dict(local.model, self._adapter)
        try:
            local.model.eval()
            generator = torch.Generator().manual_seed(p.seed if p.seed is not None else 0)
            stop = set(p.stop) if p.stop is not None else local.stop_ids
            with torch.no_grad():
                raw = sample_groups(
                    local.model,
                    [prompt_ids],
                    n,
                    max_tokens=p.max_tokens,
                    temperature=p.temperature,
                    top_p=p.top_p,
                    greedy=p.top_k == 1,
                    want_entropy=False,
                    generator=generator,
                    stop_ids=stop,
                    pad_id=local.pad_id,
                    device=local.device,
                )[0]
        finally:
            set_peft_model_state_dict(local.model, training_weights)
        sequences = [
            types.SampledSequence(
                stop_reason="length" if r.hit_max_tokens else "stop",
                sequence_id=f"seq-{i}",
                tokens_np=np.asarray(r.token_ids, np.int32),
                logprobs_np=np.asarray(r.logprobs, np.float32),
            )
            for i, r in enumerate(raw)
        ]
        return types.SampleResponse(sequences=sequences)


def _check_is_datum(d) -> dict:
    """What the service checks of an importance_sampling datum: SDK types, dtypes, aligned lengths."""
    if not isinstance(d, types.Datum) or not isinstance(d.model_input, types.ModelInput):
        raise TypeError(f"expected tinker.Datum with a ModelInput, got {type(d).__name__}")
    inputs = d.loss_fn_inputs
    if set(inputs) != {"target_tokens", "logprobs", "advantages"}:
        raise ValueError(f"importance_sampling takes target_tokens, logprobs, advantages; got {sorted(inputs)}")
    want = {"target_tokens": "int64", "logprobs": "float32", "advantages": "float32"}
    for key, dtype in want.items():
        if not isinstance(inputs[key], types.TensorData) or inputs[key].dtype != dtype:
            raise ValueError(f"{key} must be {dtype} TensorData")
    tokens = d.model_input.to_ints()
    targets = [int(x) for x in inputs["target_tokens"].data]
    n = d.model_input.length
    if not all(len(inputs[k].data) == n for k in want):
        raise ValueError("every loss_fn_input must have model_input.length entries")
    if tokens[1:] != targets[:-1]:
        raise ValueError("target_tokens must be model_input shifted by one (next-token alignment)")
    return {
        "input": tokens,
        "targets": targets,
        "logprobs": list(inputs["logprobs"].data),
        "advantages": list(inputs["advantages"].data),
    }


def _padded(rows: list[list[float]], width: int) -> torch.Tensor:
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for b, row in enumerate(rows):
        out[b, : len(row)] = torch.tensor(row, dtype=torch.float32)
    return out


def adapters_agree(ours, theirs) -> bool:
    """Two LoRA weights after the same Adam steps on two backends agree.

    Adam's first step is lr·g/(|g| + eps): where |g| is near eps (1e-8) the two backends' float
    summation orders show (the local backend runs each prompt once, the stand-in each sequence
    whole), so a few elements (0.2%, at least 2) may differ up to 1e-4; the rest within 1e-5 + 1e-4
    relative."""
    import torch

    apart = (ours - theirs).abs() > 1e-5 + 1e-4 * theirs.abs()
    return int(apart.sum()) <= max(2, apart.numel() // 500) and torch.allclose(ours, theirs, atol=1e-4)
