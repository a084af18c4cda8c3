"""Shared fixtures: the tiny random model, an isolated model cache, and the `cuda` marker.

- `tiny_model_dir` (session): a directory holding the tiny Qwen2 + byte-level tokenizer
  (`retrain.backends.models.build_tiny_random`), built once per test session; load it with
  `AutoModelForCausalLM` or pass it as `[model].name`.
- The model cache (`$RETRAIN_CACHE`) points at a per-session temporary directory, so the
  `"tiny-random"` alias never reads or writes the user's `~/.cache`. `user_model_cache` gives the
  cache as it was before (slow tests that need the converted SmolLM2 use it).
- Tests marked `@pytest.mark.cuda` are skipped when torch sees no CUDA device.
"""

from __future__ import annotations

import os

import pytest

# Tests never reach the Hugging Face hub (set before transformers is imported anywhere).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from retrain.backends.models import build_tiny_random, cache_root

_USER_CACHE = cache_root()


@pytest.fixture(scope="session", autouse=True)
def _isolated_model_cache(tmp_path_factory):
    old = os.environ.get("RETRAIN_CACHE")
    os.environ["RETRAIN_CACHE"] = str(tmp_path_factory.mktemp("model_cache"))
    yield
    if old is None:
        os.environ.pop("RETRAIN_CACHE", None)
    else:
        os.environ["RETRAIN_CACHE"] = old


@pytest.fixture(scope="session")
def user_model_cache():
    """The model cache root outside the tests (`$RETRAIN_CACHE` or ~/.cache/retrain/models)."""
    return _USER_CACHE


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """The tiny random Qwen2 (seed 0), saved once per session; a path for `from_pretrained`."""
    return build_tiny_random(tmp_path_factory.mktemp("tiny_model"))


def pytest_collection_modifyitems(config, items):
    cuda_items = [item for item in items if item.get_closest_marker("cuda")]
    if not cuda_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in cuda_items:
        item.add_marker(skip)
