"""What a new run checks before it writes anything.

A run that failed on a bad data file used to leave its run dir behind (config files, a "failed"
run.json) and send the corrected rerun to `<dir>_2`. So `retrain.run.train` calls `preflight`
first; everything here reads, nothing writes under the log dir:

- the backend can start (`retrain.backends.preflight`: for tinker the SDK, key and service);
- every plugin the config chooses imports (plugins are code: see README);
- the local backend's device exists, and its model resolves: an alias, a local dir with a
  config.json, or a hub id whose config loads (the weights are not loaded here);
- sampled lengths fit the model: `[training].max_tokens` and `[eval].max_tokens` are below its
  context (`max_position_embeddings`);
- one step fits the machine: a lower bound on what sampling holds (`sampling_memory`) is below
  the device's memory, and the step's completions below the host's;
- the data loads, every row parsed (its errors name file:line).

    checked = preflight(cfg, data_seed=0)   # RetrainError on the first problem
    checked.data                            # the Dataset, so the run does not load it twice
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from retrain.errors import RetrainError
from retrain.plugins import CALLABLE_RE

GIB = 1 << 30
# Per sampled token the local backend keeps a token id, a logprob and an entropy in Python lists
# until the step ends: three list slots (8 bytes each) and two float objects (24 bytes each).
HOST_BYTES_PER_TOKEN = 3 * 8 + 2 * 24
# Keys whose values are free text or belong to a backend, never plugin paths (a wandb project "team:x").
_FREE_TEXT = re.compile(r"(^|\.)(logging|options)(\.|$)")


@dataclass
class Checked:
    data: Any  # retrain.data.Dataset
    model_config: Any | None  # the local backend's transformers config; None for other backends


def plugin_paths(cfg) -> list[dict[str, str]]:
    """Every `module:function` value in the config (campaign conditions included), as
    {"key": "reward.custom", "path": "my_rewards:score"}: code a run would import."""
    from retrain.config import config_to_dict

    found: list[dict[str, str]] = []

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{key}[{i}]")
        elif isinstance(value, str) and CALLABLE_RE.fullmatch(value) and not _FREE_TEXT.search(key):
            if value.startswith("reasoning_gym:"):
                return  # a built-in source with its task after the colon
            if {"key": key, "path": value} not in found:
                found.append({"key": key, "path": value})

    walk(config_to_dict(cfg), "")
    return found


def import_plugins(cfg) -> None:
    """Import (and so check) every plugin the run would: each registry's chosen variant, and a
    custom reward. The config only checked their form; importing runs their module's code."""
    from retrain.config.errors import chosen_variants
    from retrain.rewards import load_custom_reward

    for registry, name in chosen_variants(cfg):
        registry.entry(name)
    if cfg.reward.type == "custom" and cfg.reward.custom:
        load_custom_reward(cfg.reward.custom)


def load_model_config(name: str, revision: str):
    """The transformers config of `[model].name`, without loading weights; RetrainError when it
    cannot be found (a misspelt hub id, no network and not in the cache, a bad local path)."""
    from transformers import AutoConfig

    from retrain.backends.models import ALIASES, resolve_model

    source = resolve_model(name, revision or None)
    try:
        return AutoConfig.from_pretrained(source, revision=revision or None)
    except (OSError, ValueError) as e:
        rev = f" (revision {revision!r})" if revision else ""
        raise RetrainError(
            f"[model].name = {name!r}{rev}: cannot load its config ({str(e).splitlines()[0]}). If it is a Hugging "
            "Face id, check the spelling and that the hub is reachable (or the model is in the local cache "
            "when HF_HUB_OFFLINE=1); if it is a local path, check that it exists. Aliases: " + ", ".join(ALIASES)
        ) from None


def _text_config(model_config):
    get = getattr(model_config, "get_text_config", None)
    return get() if callable(get) else model_config


def check_lengths(cfg, model_config) -> None:
    """`[training].max_tokens` and `[eval].max_tokens` must leave room for a prompt in the context."""
    context = getattr(_text_config(model_config), "max_position_embeddings", None)
    if not isinstance(context, int) or context <= 0:
        return
    for key, value in (("[training].max_tokens", cfg.training.max_tokens), ("[eval].max_tokens", cfg.eval.max_tokens)):
        if value and value >= context:
            raise RetrainError(
                f"{key} = {value}: {cfg.model.name} reads at most {context} tokens (max_position_embeddings), "
                f"prompt included; use at most {context // 2} or so"
            )


def sampling_memory(model_config, *, rows: int, tokens: int, dtype_bytes: int) -> int:
    """A lower bound on the bytes one sampling chunk holds on the device: the KV cache of `rows`
    sequences of `tokens` tokens (prompts not counted) plus their fp32 logits.

        kv = 2 · layers · kv_heads · head_dim · tokens · rows · dtype_bytes,  logits = rows · vocab · 4
    """
    c = _text_config(model_config)
    layers = getattr(c, "num_hidden_layers", 0) or 0
    heads = getattr(c, "num_attention_heads", 0) or 0
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    head_dim = getattr(c, "head_dim", None) or ((getattr(c, "hidden_size", 0) or 0) // max(heads, 1))
    vocab = getattr(c, "vocab_size", 0) or 0
    return 2 * layers * kv_heads * head_dim * tokens * rows * dtype_bytes + rows * vocab * 4


def _device_memory(device) -> tuple[int, str]:
    """(bytes, "what it is") of the device the local backend runs on."""
    import psutil

    if device.type == "cuda":
        import torch

        props = torch.cuda.get_device_properties(device.index or 0)
        return props.total_memory, f"{device} ({props.name})"
    return psutil.virtual_memory().total, "this machine's RAM"


def check_memory(cfg, model_config) -> None:
    """Refuse sizes no machine here can hold (group_size = 10**9 asked for terabytes). A lower bound,
    so it never refuses a run that would fit; the messages name the knobs."""
    import psutil
    import torch

    from retrain.backends import BACKENDS
    from retrain.backends.local import resolve_device, resolve_dtype

    t = cfg.training
    device = resolve_device(cfg.backend.device)
    text = getattr(model_config, "text_config", model_config)
    dtype, _ = resolve_dtype(
        cfg.backend.dtype, device, getattr(text, "hidden_size", None), getattr(text, "intermediate_size", None)
    )  # the dtype the backend will pick
    dtype_bytes = torch.finfo(dtype).bits // 8
    max_rows = BACKENDS.entry("local").with_defaults(cfg.backend.options)["max_sample_rows"]
    rows = min(t.batch_size, max(1, max_rows // t.group_size)) * t.group_size  # see LocalBackend.sample
    need = sampling_memory(model_config, rows=rows, tokens=t.max_tokens, dtype_bytes=dtype_bytes)
    have, where = _device_memory(device)
    if need > have:
        raise RetrainError(
            f"[training] group_size = {t.group_size}, max_tokens = {t.max_tokens}: sampling holds {rows} sequences at "
            f"once, which needs at least {need / GIB:,.1f} GiB (KV cache and logits of {cfg.model.name}) but "
            f"{where} has {have / GIB:,.1f} GiB; lower group_size or max_tokens"
        )
    host_need = t.batch_size * t.group_size * t.max_tokens * HOST_BYTES_PER_TOKEN
    host = psutil.virtual_memory().total
    if host_need > host:
        raise RetrainError(
            f"[training] batch_size x group_size x max_tokens = {t.batch_size} x {t.group_size} x {t.max_tokens} "
            f"tokens per step need at least {host_need / GIB:,.1f} GiB of RAM to hold, but this machine has "
            f"{host / GIB:,.1f} GiB; lower batch_size, group_size or max_tokens"
        )


def preflight(cfg, data_seed: int, *, backend: bool = True) -> Checked:
    """Every check of the module docstring, in order of cost; returns what was loaded. `backend`
    False leaves out the backend's outside-world check (a campaign made it already for another run
    with the same `retrain.backends.preflight_key`)."""
    from retrain.backends import preflight as backend_preflight
    from retrain.data import load_dataset

    if backend:
        backend_preflight(cfg)  # the outside world a backend needs (tinker: SDK, key, service, model)
    import_plugins(cfg)
    model_config = None
    if cfg.backend.backend == "local":
        model_config = load_model_config(cfg.model.name, cfg.model.revision)
        check_lengths(cfg, model_config)
        check_memory(cfg, model_config)
    data = load_dataset(cfg.data, cfg.eval, data_seed)
    if not data.train:
        raise RetrainError(f"[data].source = {cfg.data.source!r} produced no training examples")
    return Checked(data=data, model_config=model_config)
