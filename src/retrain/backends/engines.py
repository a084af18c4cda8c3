"""Sampling engines (`[inference].engine`): where the local backend's completions are sampled.

One entry each in `ENGINES`. An entry says what the engine provides (per-token entropies need
the full distribution, which only the in-process engine has) and what it needs from the config.
`target` is None for "hf": the backend samples in-process itself (`retrain.backends.sampler`).

"openai" (an OpenAI-compatible server such as `vllm serve --enable-lora`) is declared but not
built yet: choosing it is a config error rather than a silent fall-back to "hf".
"""

from __future__ import annotations

from typing import Any

from retrain.registry import Registry, Variant

ENGINES: Registry[Any] = Registry("engine", "[inference].engine")

ENGINES.add(Variant("hf", None, "in-process transformers sampling, the prompt's prefill shared by its group",
                    provides=frozenset({"entropies"})))


def _openai_problems(cfg: Any) -> list[str]:
    problems = []
    if not cfg.inference.url:
        problems.append('[inference].url: required when engine = "openai"; e.g. url = "http://localhost:8000/v1"')
    problems.append('[inference].engine: "openai" is not available in this build yet; use engine = "hf"')
    return problems


ENGINES.add(Variant("openai", None, "an OpenAI-compatible server (vllm serve --enable-lora); not available yet",
                    check=_openai_problems))
