"""The local backend: transformers + peft LoRA on CPU or one CUDA device.

Precision (`dtype = "auto"`, retrain.backends.precision): bf16 base weights with fp32 LoRA weights
and fp32 AdamW state (peft upcasts adapter weights; logits and losses are computed in fp32) on CUDA
and on CPUs with native bf16 that measure it faster; fp32 elsewhere (bf16 matmuls are ~100× slower
on AVX2-only CPUs). No gradient checkpointing: on the target hardware it only costs time.

Speed (docs/performance.md): sampling prefills each prompt once for its whole group; training runs
each prompt once too (retrain.backends.prefix), its completions in micro-batches of
`micro_batch_size` rows (4 in fp32, 8 in bf16 by default); the logprob of the sampled token is
computed without materialising the full-vocabulary log-softmax; each LoRA projection is one autograd
node with a boolean dropout mask, and CPU fp32 sampling runs on merged copies of the adapted weights
(retrain.backends.lora); the decode step runs from a preallocated KV cache on CUDA (captured in a
CUDA graph) and in bf16 on CPU (retrain.backends.decode).

Temperature: the loss uses log_softmax(logits / T) with T = `self.temperature` (set from
`[training].temperature`), the same scaling the sampler records, so on-policy the ratio is 1.

LoRA on `lm_head` of a tied-embedding model (needed for a random tiny model to learn): peft wraps
the output projection only; the shared base weight stays frozen and tied, so the embedding is
unchanged and only the adapter delta acts on the logits. The adapter file holds the LoRA matrices
only (`save_embedding_layers=False`): the frozen base weights belong to the base model. Merging such
an adapter into the base weights would also change the embedding, so retrain never merges in place
(the merged copies CPU fp32 sampling decodes with are new tensors; the shared weight stays as it is).

Example::

    backend = LocalBackend("tiny-random", lora_rank=8, target_modules=["q_proj", "lm_head"])
    groups = backend.sample(["Say 7"], n=4, params=SamplingParams(max_tokens=8, temperature=1.0))
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from pathlib import Path

import torch

from retrain.backends.base import (
    DEFAULT_TARGET_MODULES,
    Completion,
    Datum,
    SamplingParams,
    TrainResult,
    effective_lora_alpha,
)
from retrain.backends.chat import cached_prompt_ids
from retrain.backends.lora import merged_adapters, use_fast_dropout, use_fused_lora
from retrain.backends.models import load_model_and_tokenizer, model_shape
from retrain.backends.precision import NATIVE_BF16_FLAGS, auto_dtype, cpu_flags
from retrain.backends.prefix import (
    PromptPrefix,
    length_chunks,
    prefix_batches,
    shared_prefix_hidden,
)
from retrain.backends.sampler import (
    decode_with_offsets,
    decoder_and_head,
    logit_softcap,
    sample_groups,
    token_logprobs_from_hidden,
)
from retrain.errors import ConfigError, RetrainError


def resolve_device(device: str) -> torch.device:
    """auto → cuda when available, else cpu; `cuda[:N]` must exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RetrainError(
                f"[backend].device = {device!r} but torch sees no CUDA device (torch {torch.__version__}); "
                'use device = "cpu" or "auto", or install a CUDA build of torch'
            )
        dev = torch.device(device)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RetrainError(
                f"[backend].device = {device!r} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return dev
    return torch.device(device)  # "cpu"; the form of `device` is checked at config load


def resolve_dtype(
    dtype: str, device: torch.device, hidden_size: int | None = None, intermediate_size: int | None = None
) -> tuple[torch.dtype, dict]:
    """(torch dtype, why): auto → bfloat16 on CUDA and on CPUs where bf16 pays
    (retrain.backends.precision), float32 otherwise; an explicit dtype is taken as given."""
    if dtype == "auto":
        return auto_dtype(device, hidden_size, intermediate_size)
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16}  # [backend].dtype, checked at config load
    if table[dtype] is torch.bfloat16 and device.type == "cpu" and not (cpu_flags() & set(NATIVE_BF16_FLAGS)):
        warnings.warn(
            "bfloat16 on a CPU without avx512_bf16/amx_bf16 is very slow (a software fallback); "
            'use dtype = "auto" or "float32"',
            stacklevel=2,
        )
    return table[dtype], {"dtype": dtype, "reason": "[backend].dtype"}


def resolve_target_modules(model: torch.nn.Module, requested) -> list[str] | str:
    """LoRA targets: the default projections present in the model, or the requested names (checked).

    `requested` None/empty, or exactly the default set, means "the default projections this model
    has" (GPT-2-style models have none: then the user must name theirs). "all-linear" passes through.
    """
    if requested == "all-linear":
        return requested
    if isinstance(requested, str):
        requested = [requested]
    names = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}
    if not requested or set(requested) == set(DEFAULT_TARGET_MODULES):
        present = [t for t in DEFAULT_TARGET_MODULES if t in names]
        if not present:
            raise RetrainError(
                "[model].target_modules: this model has none of the default projections "
                f"({', '.join(DEFAULT_TARGET_MODULES)}); set it to some of its linear layers: {', '.join(sorted(names))}"
            )
        return present
    missing = [t for t in requested if t not in names]
    if missing:
        raise RetrainError(
            f"[model].target_modules: {missing} not found in the model; its linear layers are: "
            f"{', '.join(sorted(names))}"
        )
    return list(requested)


def auto_micro_batch_size(dtype: torch.dtype) -> int:
    """`micro_batch_size = "auto"`: 4 rows in fp32, 8 in bf16, i.e. the same activation memory.

    Rows per micro-batch set the matmuls' height: on a 2-core AVX512-BF16 CPU (SmolLM2, ~27-token
    completions) 8 rows instead of 4 made the bf16 training phase ~15-25% faster at +0.3 GB peak RSS,
    while fp32 gained nothing and would add 0.5 GB (docs/performance.md)."""
    return 8 if dtype in (torch.bfloat16, torch.float16) else 4


class LocalBackend:
    """`Backend` on transformers + peft. See the module docstring for precision and temperature."""

    reports_sync_loss = True  # train_step returns the loss it just optimised

    def __init__(
        self,
        model_name: str,
        *,
        revision: str | None = None,
        lora_rank: int = 16,
        lora_alpha: float = 0,
        lora_dropout: float = 0.0,
        target_modules: list[str] | str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        micro_batch_size: int | str = "auto",
        max_sample_rows: int = 256,
        clip_eps: float = 0.0,
        clip_eps_high: float = 0.0,
        kl_beta: float = 0.0,
        loss_agg: str = "token_mean",
        weight_decay: float = 0.0,
        grad_clip_norm: float = 1.0,
        temperature: float = 1.0,
        seed: int = 0,
    ):
        from peft import LoraConfig, get_peft_model

        from retrain.backends import BACKENDS

        # The config checks these at load; the same rule (the local entry's options) guards the Python API.
        options = {"micro_batch_size": micro_batch_size, "max_sample_rows": max_sample_rows}
        problems = BACKENDS.entry("local").option_problems("[backend.options]", options, "the local backend")
        if problems:
            raise ConfigError(problems, source="LocalBackend")
        self.device = resolve_device(device)
        self.dtype, self.dtype_choice = resolve_dtype(dtype, self.device, *model_shape(model_name, revision))
        if dtype == "auto" and self.device.type == "cpu" and self.dtype is torch.bfloat16:
            print(
                f"retrain: running the model in bf16 on this CPU ({self.dtype_choice['reason']}); "
                '[backend] dtype = "float32" keeps fp32',
                file=sys.stderr,
                flush=True,
            )
        self.micro_batch_size = auto_micro_batch_size(self.dtype) if micro_batch_size == "auto" else micro_batch_size
        self.max_sample_rows = max_sample_rows
        self.clip_eps, self.clip_eps_high, self.kl_beta = clip_eps, clip_eps_high, kl_beta
        self.loss_agg = loss_agg
        self.grad_clip_norm = grad_clip_norm
        self.temperature = temperature  # the loss's T; must equal the sampling temperature

        base, self.tokenizer = load_model_and_tokenizer(model_name, revision, self.dtype)
        self._prompt_ids_cache: dict[str, list[int]] = {}
        targets = resolve_target_modules(base, target_modules)
        lora = LoraConfig(
            task_type="CAUSAL_LM",
            r=lora_rank,
            lora_alpha=effective_lora_alpha(lora_alpha, lora_rank),
            lora_dropout=lora_dropout,
            target_modules=targets,
        )
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            # The tied-lm_head warning is about merging in place, which retrain never does (module docstring).
            warnings.filterwarnings("ignore", message=".*tie_word_embeddings.*")
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            torch.manual_seed(seed)  # LoRA A init: the same seed gives the same starting adapter
            self.model = get_peft_model(base, lora)
        use_fast_dropout(self.model)
        use_fused_lora(self.model)
        self.model.to(self.device)
        self.model.eval()
        self._softcap = logit_softcap(self.model)
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        # lr is set on the param groups at every step (the caller owns the schedule).
        self.optimizer = torch.optim.AdamW(self._params, lr=0.0, weight_decay=weight_decay)
        self.stop_ids = self._stop_ids()
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.stop_ids)

    @classmethod
    def from_config(cls, cfg) -> LocalBackend:
        """Build from a retrain Config ([model], [training], [backend], [backend.options])."""
        from retrain.backends import BACKENDS

        options = BACKENDS.entry("local").with_defaults(cfg.backend.options)  # checked at config load
        m, t = cfg.model, cfg.training
        return cls(
            m.name,
            revision=m.revision or None,
            lora_rank=m.lora_rank,
            lora_alpha=m.lora_alpha,
            lora_dropout=m.lora_dropout,
            target_modules=m.target_modules,
            device=cfg.backend.device,
            dtype=cfg.backend.dtype,
            micro_batch_size=options["micro_batch_size"],
            max_sample_rows=options["max_sample_rows"],
            clip_eps=t.clip_eps,
            clip_eps_high=t.clip_eps_high,
            kl_beta=t.kl_beta,
            loss_agg=t.loss_agg,
            weight_decay=t.weight_decay,
            grad_clip_norm=t.grad_clip_norm,
            temperature=t.temperature,
            seed=t.seed,
        )

    # ------------------------------------------------------------ sampling

    def _stop_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            if isinstance(source, int):
                ids.add(source)
            elif source:
                ids.update(int(i) for i in source)
        if not ids:
            raise RetrainError("the tokenizer and generation_config define no EOS token; cannot tell when to stop")
        return ids

    def prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of `prompt` as one user message with the assistant turn opened.

        Cached: prompts come from a fixed dataset and eval re-sends the same ones, so the chat
        template (Jinja) and the tokenizer run once per distinct prompt, not once per step."""
        return cached_prompt_ids(self._prompt_ids_cache, self.tokenizer, prompt)

    def sample(self, prompts: list[str], n: int, params: SamplingParams) -> list[list[Completion]]:
        """`n` completions per prompt; see `sampler.sample_groups` (prefill once per prompt)."""
        if n < 1 or params.max_tokens < 1:
            raise RetrainError(f"sampling needs n ≥ 1 and max_tokens ≥ 1, got n={n}, max_tokens={params.max_tokens}")
        if not params.greedy and params.temperature > 0 and abs(params.temperature - self.temperature) > 1e-12:
            warnings.warn(
                f"sampling at T={params.temperature} but the loss uses T={self.temperature}: "
                "importance ratios will not be 1 on-policy",
                stacklevel=2,
            )
        self.model.eval()  # LoRA dropout off while sampling (docs/performance.md)
        ids_P = [self.prompt_ids(p) for p in prompts]
        generator = torch.Generator(device=self.device)
        generator.manual_seed(params.seed)
        per_chunk = max(1, self.max_sample_rows // n)
        groups: list[list[Completion]] = []
        # On CPU in fp32 the decode runs on merged copies of the adapted weights (retrain.backends.lora.
        # merged_adapters: ~10% of a SmolLM2 decode); bf16 and CUDA keep the adapter unmerged.
        merge = merged_adapters(self.model) if self.device.type == "cpu" else contextlib.nullcontext()
        with merge:
            for start in range(0, len(ids_P), per_chunk):
                chunk_P = ids_P[start : start + per_chunk]
                raw_P_G = sample_groups(
                    self.model,
                    chunk_P,
                    n,
                    max_tokens=params.max_tokens,
                    temperature=params.temperature,
                    top_p=params.top_p,
                    greedy=params.greedy,
                    want_entropy=params.want_entropy,
                    generator=generator,
                    stop_ids=self.stop_ids,
                    pad_id=self.pad_id,
                    device=self.device,
                    # Preallocated KV cache + CUDA graph on CUDA (launch-bound there). On CPU the
                    # preallocated cache measured 25% faster sampling in bf16 and no faster in fp32
                    # (SmolLM2, 32 rows; docs/performance.md), so fp32 keeps the growing cache.
                    static_cache=self.device.type == "cuda" or self.dtype is torch.bfloat16,
                    cuda_graph=True,
                )
                for prompt_ids, raw_G in zip(chunk_P, raw_P_G, strict=True):
                    group = []
                    for raw in raw_G:
                        text, offsets = decode_with_offsets(self.tokenizer, raw.token_ids)
                        group.append(
                            Completion(
                                prompt_ids=list(prompt_ids),
                                token_ids=raw.token_ids,
                                logprobs=raw.logprobs,
                                text=text,
                                offsets=offsets,
                                hit_max_tokens=raw.hit_max_tokens,
                                entropies=raw.entropies,
                            )
                        )
                    groups.append(group)
        return groups

    # ------------------------------------------------------------ training

    def completion_logprobs(self, datums: list[Datum]) -> tuple[torch.Tensor, torch.Tensor]:
        """(logprobs_B_T, mask_B_T) of each datum's completion tokens under the current policy.

        The forward runs the way the sampler produced the tokens (retrain.backends.prefix): each
        distinct prompt once, then every completion on top of its prompt's KV cache. The lm_head
        runs only on the N real completion positions, never over the prompt or the padding.
        """
        decoder, _ = decoder_and_head(self.model)
        hidden_B_T_d, targets_B_T, mask_B_T = shared_prefix_hidden(
            decoder, [d.prompt_ids for d in datums], [d.completion_ids for d in datums], self.pad_id, self.device
        )
        return self._logprobs(hidden_B_T_d, targets_B_T, mask_B_T), mask_B_T

    def _logprobs(self, hidden_B_T_d, targets_B_T, mask_B_T) -> torch.Tensor:
        _, head = decoder_and_head(self.model)
        logprobs_N = token_logprobs_from_hidden(
            head, hidden_B_T_d[mask_B_T], targets_B_T[mask_B_T], self.temperature, self._softcap
        )
        logprobs_B_T = torch.zeros(mask_B_T.shape, dtype=logprobs_N.dtype, device=self.device)
        return logprobs_B_T.masked_scatter(mask_B_T, logprobs_N)

    def _padded(self, rows: list[list[float]], t_max: int) -> torch.Tensor:
        out = torch.zeros((len(rows), t_max), dtype=torch.float32)
        for b, row in enumerate(rows):
            out[b, : len(row)] = torch.tensor(row, dtype=torch.float32)
        return out.to(self.device)

    def train_step(self, datums: list[Datum], lr: float) -> TrainResult:
        """One AdamW step on the policy loss (retrain.rl.loss) over all datums, micro-batched.

        Each micro-batch's loss is divided by the whole step's normalizer, so their sum is the
        full-batch loss and their accumulated gradients the full-batch gradient.
        """
        from retrain.rl.loss import loss_normalizer, policy_loss

        for d in datums:
            if not (len(d.completion_ids) == len(d.old_logprobs_T) == len(d.advantages_T)):
                raise ValueError("Datum: completion_ids, old_logprobs_T and advantages_T must have equal lengths")
            if not d.prompt_ids:
                raise ValueError("Datum: prompt_ids must not be empty")
        datums = [d for d in datums if d.completion_ids]  # no tokens: no loss, no gradient
        if not datums:
            return TrainResult(loss=None)
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        normalizer = loss_normalizer([len(d.completion_ids) for d in datums], self.loss_agg)
        decoder, _ = decoder_and_head(self.model)

        loss_sum, tokens = 0.0, 0
        weighted = {"clip_fraction": 0.0, "kl": 0.0, "sampler_train_kl": 0.0}
        # Each prompt runs once (retrain.backends.prefix); its completions run in micro-batches of
        # at most micro_batch_size rows, each backpropagated at once, which bounds activation memory.
        for batch_D in prefix_batches([d.prompt_ids for d in datums], self.micro_batch_size):
            prefix = PromptPrefix(
                decoder, [datums[i].prompt_ids for i in batch_D], self.pad_id, self.device, detach=True
            )
            # Chunks cut by completion length: less right-padding (retrain.backends.prefix.length_chunks).
            for rows in length_chunks([len(datums[i].completion_ids) for i in batch_D], self.micro_batch_size):
                mb = [datums[batch_D[r]] for r in rows]
                ref_B_T = None
                if self.kl_beta > 0:
                    with torch.no_grad(), self.model.disable_adapter():
                        ref_B_T, _ = self.completion_logprobs(mb)
                hidden_B_T_d, targets_B_T, mask_B_T = prefix.hidden(decoder, rows, [d.completion_ids for d in mb])
                new_B_T = self._logprobs(hidden_B_T_d, targets_B_T, mask_B_T)
                t_max = mask_B_T.shape[1]
                out = policy_loss(
                    new_B_T,
                    self._padded([d.old_logprobs_T for d in mb], t_max),
                    self._padded([d.advantages_T for d in mb], t_max),
                    mask_B_T,
                    clip_eps=self.clip_eps,
                    clip_eps_high=self.clip_eps_high,
                    loss_agg=self.loss_agg,
                    kl_beta=self.kl_beta,
                    ref_logprobs_B_T=ref_B_T,
                    normalizer=normalizer,
                )
                out.loss.backward()
                loss_sum += float(out.loss.item())
                tokens += out.num_tokens
                for key in weighted:
                    weighted[key] += getattr(out, key) * out.num_tokens
            prefix.backward()
        max_norm = self.grad_clip_norm if self.grad_clip_norm > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self._params, max_norm))
        self.optimizer.step()
        self.model.eval()
        return TrainResult(
            loss=loss_sum,
            clip_fraction=weighted["clip_fraction"] / max(tokens, 1),
            kl_ref=weighted["kl"] / max(tokens, 1),
            sampler_train_kl=weighted["sampler_train_kl"] / max(tokens, 1),
            grad_norm=grad_norm,
            num_tokens=tokens,
        )

    # ------------------------------------------------------------ checkpoints

    def save(self, path: str) -> None:
        """adapter_model.safetensors + adapter_config.json (LoRA matrices only) + optimizer.pt."""
        self.save_adapter(path)
        torch.save(self.optimizer.state_dict(), os.path.join(path, "optimizer.pt"))

    def save_adapter(self, path: str) -> None:
        """The PEFT adapter alone (what a sampling server loads after each step; no optimizer)."""
        os.makedirs(path, exist_ok=True)
        self.model.save_pretrained(path, save_embedding_layers=False)

    def load(self, path: str, *, optimizer: bool = True) -> None:
        """Restore the adapter weights (and the optimizer state) written by `save`, exactly."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        folder = Path(path)
        weights, config = folder / "adapter_model.safetensors", folder / "adapter_config.json"
        if not weights.is_file() or not config.is_file():
            raise RetrainError(
                f"{folder}: not a saved adapter (needs adapter_model.safetensors and adapter_config.json)"
            )
        saved = json.loads(config.read_text())
        ours = self.model.peft_config["default"]
        if saved.get("r") != ours.r or set(saved.get("target_modules") or []) != set(ours.target_modules or []):
            raise RetrainError(
                f"{folder}: adapter has rank {saved.get('r')} on {sorted(saved.get('target_modules') or [])}, "
                f"but this run's LoRA is rank {ours.r} on {sorted(ours.target_modules)}; "
                "use the same [model] lora_rank and target_modules as the run that saved it"
            )
        state = load_file(str(weights), device=str(self.device))
        result = set_peft_model_state_dict(self.model, state)
        missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
        if getattr(result, "unexpected_keys", None) or missing:
            raise RetrainError(
                f"{folder}: adapter does not match the model (unexpected: "
                f"{list(result.unexpected_keys)[:3]}, missing: {missing[:3]})"
            )
        if optimizer:
            opt_file = folder / "optimizer.pt"
            if not opt_file.is_file():
                raise RetrainError(f"{folder}: optimizer.pt is missing, so training cannot resume exactly")
            self.optimizer.load_state_dict(torch.load(opt_file, map_location=self.device, weights_only=True))
