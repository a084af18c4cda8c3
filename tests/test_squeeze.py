"""LoRA-Squeeze: spectra without the full product, retention, recommendation, compression, CLI."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import types

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from retrain import squeeze, squeeze_cli
from retrain.errors import RetrainError
from retrain.squeeze import (
    analyze_adapter,
    compress_adapter,
    default_target_ranks,
    format_table,
    lora_singular_values,
    recommend_rank,
    truncated_factors,
    variance_retained,
)


def _factors_with_spectrum(s_n: list[float], out_dim: int, in_dim: int, r: int, seed: int):
    """LoRA factors (A r×in, B out×r) whose product B·A has exactly the singular values `s_n`."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(out_dim, r, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(in_dim, r, generator=g, dtype=torch.float64))
    s = torch.zeros(r, dtype=torch.float64)
    s[: len(s_n)] = torch.tensor(s_n, dtype=torch.float64)
    mix = torch.linalg.qr(torch.randn(r, r, generator=g, dtype=torch.float64))[0]  # hide the SVD basis
    B = U @ torch.diag(s) @ mix
    A = mix.T @ V.T
    return A.float(), B.float()


def _write_adapter(path, layers: dict[str, tuple[torch.Tensor, torch.Tensor]], r: int, alpha: float, **extra):
    path.mkdir(parents=True)
    tensors = {}
    for module, (A, B) in layers.items():
        tensors[f"base_model.model.{module}.lora_A.weight"] = A.contiguous()
        tensors[f"base_model.model.{module}.lora_B.weight"] = B.contiguous()
    save_file(tensors, str(path / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "rank_pattern": {}, "alpha_pattern": {}, **extra}
    (path / "adapter_config.json").write_text(json.dumps(config))
    return path


# --- the linear algebra ----------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    r=st.integers(1, 12),
    out_dim=st.integers(1, 40),
    in_dim=st.integers(1, 40),
    seed=st.integers(0, 10_000),
)
def test_singular_values_equal_direct_svd_of_product(r, out_dim, in_dim, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(r, in_dim, generator=g, dtype=torch.float64)
    B = torch.randn(out_dim, r, generator=g, dtype=torch.float64)
    s_core = lora_singular_values(A, B)
    s_direct = torch.linalg.svdvals(B @ A)
    n = min(r, in_dim, out_dim)
    assert s_core.shape == (n,)
    torch.testing.assert_close(s_core, s_direct[:n], rtol=1e-9, atol=1e-9)


def test_singular_values_recover_a_constructed_spectrum():
    A, B = _factors_with_spectrum([5.0, 3.0, 0.5], out_dim=30, in_dim=20, r=6, seed=1)
    s = lora_singular_values(A, B)
    torch.testing.assert_close(s, torch.tensor([5.0, 3.0, 0.5, 0, 0, 0], dtype=torch.float64), atol=1e-5, rtol=1e-5)


def test_variance_retained_hand_values():
    s = [3.0, 2.0, 1.0]  # energies 9, 4, 1 of 14
    assert variance_retained(s, 1) == pytest.approx(9 / 14)
    assert variance_retained(s, 2) == pytest.approx(13 / 14)
    assert variance_retained(s, 3) == 1.0
    assert variance_retained(s, 10) == 1.0
    assert variance_retained([0.0, 0.0], 1) == 1.0  # a zero update (fresh PEFT adapter) loses nothing


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 100.0, allow_nan=False), min_size=1, max_size=16))
def test_variance_retained_is_monotone_and_reaches_one_at_full_rank(values):
    s = sorted(values, reverse=True)
    kept = [variance_retained(s, k) for k in range(1, len(s) + 1)]
    assert all(0.0 <= v <= 1.0 for v in kept)
    assert all(b >= a - 1e-12 for a, b in zip(kept, kept[1:], strict=False))
    assert kept[-1] == pytest.approx(1.0)


def test_truncated_factors_product_is_the_rank_k_truncation():
    A, B = _factors_with_spectrum([4.0, 2.0, 1.0, 0.5], out_dim=12, in_dim=10, r=4, seed=2)
    A2, B2 = truncated_factors(A, B, 2, scale=3.0)
    assert A2.shape == (2, 10) and B2.shape == (12, 2)
    U, S, Vh = torch.linalg.svd((B @ A).double())
    expected = 3.0 * U[:, :2] @ torch.diag(S[:2]) @ Vh[:2]
    torch.testing.assert_close(B2 @ A2, expected, atol=1e-5, rtol=1e-5)
    # the even split: both factors carry √S (‖B'‖_F = ‖A'‖_F)
    assert torch.linalg.norm(B2) == pytest.approx(float(torch.linalg.norm(A2)), rel=1e-9)


def test_default_target_ranks():
    assert default_target_ranks(32) == [1, 2, 4, 8, 16, 32]
    assert default_target_ranks(24) == [1, 2, 4, 8, 16, 24]
    assert default_target_ranks(1) == [1]


def test_recommend_rank_smallest_passing_else_source():
    assert recommend_rank({1: 0.5, 2: 0.96, 4: 0.99}, 0.95, 4) == 2
    assert recommend_rank({1: 0.5, 2: 0.9}, 0.95, 8) == 8


# --- analysis on an adapter with a known spectrum ----------------------------------------------


@pytest.fixture
def known_adapter(tmp_path):
    # layer a: energies 16, 4, 0, 0 (V: .8, 1, 1, 1); layer b: energies 1,1,1,1 (V: .25, .5, .75, 1)
    layers = {
        "model.layers.0.self_attn.q_proj": _factors_with_spectrum([4.0, 2.0], 24, 16, 4, seed=3),
        "model.layers.0.self_attn.v_proj": _factors_with_spectrum([1.0, 1.0, 1.0, 1.0], 24, 16, 4, seed=4),
    }
    return _write_adapter(tmp_path / "adapter", layers, r=4, alpha=8)


def test_analyze_table_and_recommendation(known_adapter):
    result = analyze_adapter(known_adapter, threshold=0.8)
    assert result.source_rank == 4
    assert [row.rank for row in result.table] == [1, 2, 4]
    by_rank = {row.rank: row for row in result.table}
    assert by_rank[1].mean == pytest.approx((0.8 + 0.25) / 2, abs=1e-6)
    assert by_rank[1].min == pytest.approx(0.25, abs=1e-6) and by_rank[1].max == pytest.approx(0.8, abs=1e-6)
    assert by_rank[2].mean == pytest.approx((1.0 + 0.5) / 2, abs=1e-6)
    assert by_rank[4].mean == pytest.approx(1.0)
    assert result.recommended_rank == 4  # 0.75 at rank 2 < 0.8
    assert analyze_adapter(known_adapter, threshold=0.75).recommended_rank == 2
    custom = analyze_adapter(known_adapter, target_ranks=[3, 1], threshold=0.8)
    assert [row.rank for row in custom.table] == [1, 3]
    assert custom.table[1].mean == pytest.approx((1.0 + 0.75) / 2, abs=1e-6)
    assert custom.recommended_rank == 3
    assert {layer.module for layer in result.layers} == {
        "base_model.model.model.layers.0.self_attn.q_proj",
        "base_model.model.model.layers.0.self_attn.v_proj",
    }


def test_to_dict_is_the_manifest_shape(known_adapter):
    d = json.loads(json.dumps(analyze_adapter(known_adapter, threshold=0.75).to_dict()))
    assert set(d) == {"recommended_rank", "source_rank", "threshold", "table", "adapter_path"}
    assert d["recommended_rank"] == 2 and d["source_rank"] == 4 and d["threshold"] == 0.75
    assert d["table"][0] == {
        "rank": 1,
        "mean": pytest.approx(0.525, abs=1e-6),
        "min": pytest.approx(0.25, abs=1e-6),
        "max": pytest.approx(0.8, abs=1e-6),
    }


def test_format_table_marks_the_recommended_row(known_adapter):
    text = format_table(analyze_adapter(known_adapter, threshold=0.75))
    marked = [line for line in text.splitlines() if "<-- recommended" in line]
    assert len(marked) == 1 and marked[0].split()[:2] == ["2", "75.00"]
    assert "Recommended rank: 2" in text
    none_pass = format_table(analyze_adapter(known_adapter, target_ranks=[1], threshold=0.99))
    assert "No target rank reaches 99.0%" in none_pass and "Recommended rank: 4" in none_pass


def test_bad_inputs_raise_retrain_errors(tmp_path, known_adapter):
    with pytest.raises(RetrainError, match="adapter not found"):
        analyze_adapter(tmp_path / "nope")
    with pytest.raises(RetrainError, match="min_variance_retention"):
        analyze_adapter(known_adapter, threshold=1.5)
    with pytest.raises(RetrainError, match="target_ranks"):
        analyze_adapter(known_adapter, target_ranks=[0, 2])
    empty = tmp_path / "not_lora"
    empty.mkdir()
    save_file({"w": torch.zeros(2, 2)}, str(empty / "adapter_model.safetensors"))
    with pytest.raises(RetrainError, match="no LoRA layers"):
        analyze_adapter(empty)


# --- compression -----------------------------------------------------------------------------


def test_compress_scales_alpha_and_keeps_scaled_update(known_adapter, tmp_path):
    out = compress_adapter(known_adapter, 2, tmp_path / "r2")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 2 and config["lora_alpha"] == 4  # 8 · 2/4: alpha/r stays 2
    src, new = (
        load_file(str(known_adapter / "adapter_model.safetensors")),
        load_file(str(out / "adapter_model.safetensors")),
    )
    key_a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    key_b = key_a.replace("lora_A", "lora_B")
    assert new[key_a].shape == (2, 16) and new[key_b].shape == (24, 2) and new[key_a].dtype == src[key_a].dtype
    # q_proj has rank 2 already: 2·B'A' (new alpha/r) equals 2·BA exactly
    torch.testing.assert_close(new[key_b] @ new[key_a], src[key_b] @ src[key_a], atol=1e-5, rtol=1e-5)
    assert json.loads((out / "squeeze.json").read_text())["rank"] == 2


def test_compressed_adapter_gets_the_umask_modes(known_adapter, tmp_path):
    old = os.umask(0o027)
    try:
        out = compress_adapter(known_adapter, 2, tmp_path / "r2")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o750  # mkdtemp alone gives 0700
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == {
        "adapter_model.safetensors": 0o640,
        "adapter_config.json": 0o640,
        "squeeze.json": 0o640,
    }


def test_compress_non_integer_alpha_stays_exact(tmp_path):
    layers = {"m.q_proj": _factors_with_spectrum([1.0, 0.5, 0.25], 8, 8, 4, seed=5)}
    src = _write_adapter(tmp_path / "a", layers, r=4, alpha=10)
    config = json.loads((compress_adapter(src, 3, tmp_path / "r3") / "adapter_config.json").read_text())
    assert config["lora_alpha"] == pytest.approx(7.5) and config["r"] == 3


def test_compress_refuses_to_overwrite_and_bad_ranks(known_adapter, tmp_path):
    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "keep.txt").write_text("user data")
    with pytest.raises(RetrainError, match="already exists"):
        compress_adapter(known_adapter, 2, existing)
    assert (existing / "keep.txt").read_text() == "user data" and len(list(existing.iterdir())) == 1
    for bad in (0, 5, 2.0):
        with pytest.raises(RetrainError, match="compression rank"):
            compress_adapter(known_adapter, bad, tmp_path / f"bad{bad}")
        assert not (tmp_path / f"bad{bad}").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging dir left behind


# --- end to end with a tiny Qwen2 and peft ------------------------------------------------------

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_VARIANTS = {
    "plain": {"r": 8, "lora_alpha": 16},
    "patterns": {"r": 8, "lora_alpha": 16, "rank_pattern": {"q_proj": 4}, "alpha_pattern": {"v_proj": 32}},
    "rslora": {"r": 8, "lora_alpha": 16, "use_rslora": True},
}


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=320,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    path = tmp_path_factory.mktemp("tiny_qwen2")
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    return path


def _load_base(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _lora_deltas(peft_model) -> dict[str, torch.Tensor]:
    from peft.tuners.lora import LoraLayer

    return {
        name: m.get_delta_weight("default").detach().double()
        for name, m in peft_model.named_modules()
        if isinstance(m, LoraLayer)
    }


@pytest.fixture(scope="module", params=sorted(LORA_VARIANTS))
def trained_adapter(request, tiny_base, tmp_path_factory):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    model = get_peft_model(_load_base(tiny_base), LoraConfig(target_modules=TARGETS, **LORA_VARIANTS[request.param]))
    with torch.no_grad():  # PEFT zero-initialises B: give every layer a real update
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.2)
    path = tmp_path_factory.mktemp(f"adapter_{request.param}") / "adapter"
    model.save_pretrained(path)
    return path


def test_compressed_adapter_reproduces_logits_and_loses_exactly_the_discarded_energy(
    trained_adapter, tiny_base, tmp_path
):
    from peft import PeftModel

    ids = torch.randint(0, 320, (2, 12), generator=torch.Generator().manual_seed(7))
    original = PeftModel.from_pretrained(_load_base(tiny_base), trained_adapter).eval()
    full = PeftModel.from_pretrained(
        _load_base(tiny_base), compress_adapter(trained_adapter, 8, tmp_path / "r8")
    ).eval()
    half = PeftModel.from_pretrained(
        _load_base(tiny_base), compress_adapter(trained_adapter, 4, tmp_path / "r4")
    ).eval()
    with torch.no_grad():
        logits, logits_full = original(ids).logits, full(ids).logits
        base_logits = _load_base(tiny_base)(ids).logits
    assert (logits - base_logits).abs().max() > 1e-3  # the adapter really changes the model
    torch.testing.assert_close(logits_full, logits, atol=1e-5, rtol=1e-5)

    assert full.peft_config["default"].r == 8 and half.peft_config["default"].r == 4
    delta, delta_half = _lora_deltas(original), _lora_deltas(half)
    assert delta.keys() == delta_half.keys() and len(delta) == 2 * len(TARGETS)
    for name, d in delta.items():
        s = torch.linalg.svdvals(d)
        discarded = float((s[4:] ** 2).sum())
        error = float(((d - delta_half[name]) ** 2).sum())
        assert error == pytest.approx(discarded, rel=1e-4, abs=1e-10), name


def test_analysis_of_peft_adapter_matches_its_deltas(trained_adapter, tiny_base):
    from peft import PeftModel

    result = analyze_adapter(trained_adapter)
    assert result.source_rank == 8 and [row.rank for row in result.table] == [1, 2, 4, 8]
    assert result.table[-1].mean == pytest.approx(1.0) and result.table[-1].min == pytest.approx(1.0)
    deltas = _lora_deltas(PeftModel.from_pretrained(_load_base(tiny_base), trained_adapter))
    by_module = {layer.module.removeprefix("base_model.model."): layer for layer in result.layers}
    for name, d in deltas.items():
        layer = by_module[name.removeprefix("base_model.model.")]
        s = torch.linalg.svdvals(d)
        # retention is scale-free: the file's B·A and the scaled delta give the same V(k)
        assert layer.retention(2) == pytest.approx(float((s[:2] ** 2).sum() / (s**2).sum()), rel=1e-6)


# --- wandb and the standalone config run --------------------------------------------------------


class _FakeRun:
    def __init__(self, **kwargs):
        self.init_kwargs, self.logged, self.summary, self.finished = kwargs, [], {}, False

    def log(self, data):
        self.logged.append(data)

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    runs = []
    module = types.ModuleType("wandb")

    def init(**kwargs):
        runs.append(_FakeRun(**kwargs))
        return runs[-1]

    module.init = init
    module.Table = lambda columns, data: {"columns": columns, "data": data}
    monkeypatch.setitem(sys.modules, "wandb", module)
    return runs


def _cfg(adapter, output="", compress_to=0, project=""):
    sq = types.SimpleNamespace(
        adapter_path=str(adapter),
        min_variance_retention=0.75,
        target_ranks=[],
        compress_to=compress_to,
        output_path=output,
    )
    log = types.SimpleNamespace(wandb_project=project, wandb_entity="", wandb_mode="offline", wandb_group="")
    return types.SimpleNamespace(squeeze=sq, logging=log)


def test_run_from_config_prints_compresses_and_logs(known_adapter, tmp_path, capsys, fake_wandb):
    assert squeeze.run_from_config(_cfg(known_adapter, output=str(tmp_path / "out"), project="p")) == 0
    printed = capsys.readouterr().out
    assert "Recommended rank: 2" in printed and "rank 4 -> 2" in printed
    assert json.loads((tmp_path / "out" / "adapter_config.json").read_text())["r"] == 2
    (run,) = fake_wandb
    assert run.init_kwargs["name"] == "squeeze-analysis" and run.init_kwargs["project"] == "p"
    assert run.init_kwargs["mode"] == "offline" and "rank-2" in run.init_kwargs["tags"]
    table = run.logged[0]["squeeze/variance_table"]
    assert [row[0] for row in table["data"]] == [1, 2, 4] and [row[4] for row in table["data"]] == [False, True, False]
    assert run.summary["squeeze/recommended_rank"] == 2 and run.summary["squeeze/source_rank"] == 4
    assert run.finished


def test_run_from_config_compress_to_and_no_wandb_without_project(known_adapter, tmp_path, fake_wandb):
    squeeze.run_from_config(_cfg(known_adapter, output=str(tmp_path / "o1"), compress_to=1))
    assert json.loads((tmp_path / "o1" / "adapter_config.json").read_text())["r"] == 1
    assert fake_wandb == []


def test_missing_wandb_names_the_install_command(known_adapter, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise ImportError
    with pytest.raises(RetrainError, match=r"pip install 'retrain\[wandb\]'"):
        squeeze.run_from_config(_cfg(known_adapter, project="p"))


def test_run_from_config_requires_adapter_path():
    with pytest.raises(RetrainError, match=r"\[squeeze\].adapter_path"):
        squeeze.run_from_config(_cfg(""))


# --- CLI ---------------------------------------------------------------------------------------


def _parse(argv):
    parser = argparse.ArgumentParser(prog="retrain")
    squeeze_cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_json_and_compress(known_adapter, tmp_path, capsys):
    args = _parse(
        ["squeeze", str(known_adapter), "--min-variance-retention", "0.75", "--target-ranks", "1,2", "--json"]
    )
    assert args.func(args) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["recommended_rank"] == 2 and [row["rank"] for row in payload["table"]] == [1, 2]

    args = _parse(["squeeze", str(known_adapter), "--compress-to", "1", "--output", str(tmp_path / "c")])
    assert args.func(args) == 0
    assert "<-- recommended" in capsys.readouterr().out
    assert json.loads((tmp_path / "c" / "adapter_config.json").read_text())["r"] == 1


def test_cli_errors_are_retrain_errors(known_adapter, tmp_path):
    args = _parse(["squeeze", str(tmp_path / "missing")])
    with pytest.raises(RetrainError, match=str(tmp_path / "missing")):
        args.func(args)
    args = _parse(["squeeze", str(known_adapter), "--target-ranks", "1,x"])
    with pytest.raises(RetrainError, match="--target-ranks"):
        args.func(args)
    args = _parse(["squeeze", str(known_adapter), "--compress-to", "2"])
    with pytest.raises(RetrainError, match="--output"):
        args.func(args)


def test_math_sanity_of_fixture_factors():
    A, B = _factors_with_spectrum([2.0], 5, 5, 2, seed=0)
    assert math.isclose(float(torch.linalg.svdvals((B @ A).double())[0]), 2.0, rel_tol=1e-5)


def test_run_from_a_real_toml(known_adapter, tmp_path, capsys, fake_wandb):
    from retrain.config import load_config

    toml = tmp_path / "squeeze.toml"
    toml.write_text(
        f'[squeeze]\nadapter_path = "{known_adapter}"\nmin_variance_retention = 0.75\n'
        f'output_path = "{tmp_path / "sq"}"\n[logging]\nwandb_project = "p"\nwandb_mode = "disabled"\n'
    )
    assert squeeze.run_from_config(load_config(toml)) == 0
    assert "Recommended rank: 2" in capsys.readouterr().out
    assert json.loads((tmp_path / "sq" / "adapter_config.json").read_text())["r"] == 2
    assert fake_wandb == []  # wandb_mode = "disabled": no run, and wandb is not required
