"""Sampling engines (`[inference].engine`): where the local backend's completions are sampled.

One entry each in `ENGINES`. An entry says what the engine provides (per-token entropies need
the full distribution, which only the in-process engine has) and what it needs from the config.
`target` is None for "hf": the backend samples in-process itself (`retrain.backends.sampler`).
For "openai" it is `openai_engine.build(cfg, make_local)`: the local backend, wrapped so that an
OpenAI-compatible server (vLLM) samples and the adapter reaches it after every step
(docs/inference.md).
"""

from __future__ import annotations

import re
from typing import Any

from retrain.registry import Registry, Variant

ENGINES: Registry[Any] = Registry("engine", "[inference].engine")

# LoRA targets vLLM cannot load from a PEFT adapter (it serves LoRA on the linear projections only).
VLLM_UNSERVABLE_TARGETS = ("lm_head", "embed_tokens", "wte", "wpe")
_URL_RE = re.compile(r"https?://[^/\s:]+(:\d+)?(/.*)?")


def _hf_problems(cfg: Any) -> list[str]:
    if cfg.inference.launch:
        return [
            '[inference].launch: starts a vLLM server, which only engine = "openai" uses; '
            'set engine = "openai" or remove launch'
        ]
    return []


def _openai_problems(cfg: Any) -> list[str]:
    """What the openai engine needs from the rest of the config."""
    inf, problems = cfg.inference, []
    if not inf.url and not inf.launch:
        problems.append(
            '[inference].url: required when engine = "openai"; e.g. url = "http://localhost:8000/v1", '
            "or set launch = true to let retrain start a server"
        )
    if inf.url and not _URL_RE.fullmatch(inf.url):
        problems.append(f"[inference].url: expected http://HOST:PORT/v1, got {inf.url!r}")
    if cfg.backend.backend != "local":
        problems.append(
            f'[inference].engine: "openai" samples for the local backend (it trains, the server samples); '
            f'backend = {cfg.backend.backend!r} samples by itself: use engine = "hf"'
        )
    bad = sorted(t for t in (cfg.model.target_modules or []) if t in VLLM_UNSERVABLE_TARGETS)
    if bad:
        problems.append(
            f"[model].target_modules: {bad} cannot be served by vLLM's LoRA (projections only); "
            'remove them, or use engine = "hf"'
        )
    return problems


ENGINES.add(
    Variant(
        "hf",
        None,
        "in-process transformers sampling, the prompt's prefill shared by its group",
        provides=frozenset({"entropies"}),
        check=_hf_problems,
    )
)
ENGINES.add(
    Variant(
        "openai",
        "retrain.backends.openai_engine:build",
        "an OpenAI-compatible server (vLLM with --enable-lora) samples; the local backend trains",
        check=_openai_problems,
    )
)
