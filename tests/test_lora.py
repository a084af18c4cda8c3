"""The fused LoRA node (retrain.backends.lora): peft's values and gradients, less saved memory."""

from __future__ import annotations

import types

import pytest
import torch

from retrain.backends import lora as L
from retrain.backends.local import LocalBackend, auto_micro_batch_size

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]


def _backend(tiny_model_dir, p: float, dtype: str = "float32") -> LocalBackend:
    backend = LocalBackend(
        tiny_model_dir, lora_rank=4, lora_dropout=p, target_modules=ALL, device="cpu", dtype=dtype, seed=0
    )
    with torch.no_grad():  # a nonzero adapter, so B·A matters in the forward and A gets a gradient
        g = torch.Generator().manual_seed(1)
        for name, param in backend.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.1)
    return backend


def _set_path(backend: LocalBackend, fused: bool) -> None:
    for module in backend.model.modules():
        if hasattr(module, "_peft_forward"):
            module.forward = types.MethodType(L._fused_forward, module) if fused else module._peft_forward


def _forward_backward(backend: LocalBackend, fused: bool, ids: torch.Tensor):
    _set_path(backend, fused)
    backend.model.train()
    backend.model.zero_grad(set_to_none=True)
    torch.manual_seed(5)  # the dropout masks
    emb = backend.model.get_input_embeddings()(ids).detach().requires_grad_()
    logits = backend.model(inputs_embeds=emb).logits.float()
    logits.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in backend.model.named_parameters() if p.grad is not None}
    return logits.detach(), emb.grad.clone(), grads


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("p", [0.0, 0.2])
def test_fused_lora_gives_peft_values_and_gradients(tiny_model_dir, p, dtype):
    """The outputs, input gradients and LoRA gradients of peft's five nodes (with FastDropout drawing
    the same masks), with bf16 base weights too."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 on a CPU without native bf16 warns that it is slow
        backend = _backend(tiny_model_dir, p, dtype)
    ids = torch.randint(3, 300, (3, 11), generator=torch.Generator().manual_seed(0))
    fused, peft = _forward_backward(backend, True, ids), _forward_backward(backend, False, ids)
    # The fused node folds 1 / (1 − p) and s into A and B: float rounding apart, the same numbers
    # (fp32: ~1e-7 relative; bf16 base: a last-bit flip where the fp32 LoRA sum is added to bf16).
    tol = 1e-5 if dtype == "float32" else 1e-2

    def close(a, b):
        return (a - b).abs().max().item() <= tol * b.abs().max().item()

    assert close(fused[0], peft[0]) and close(fused[1], peft[1])
    assert fused[2].keys() == peft[2].keys() and len(fused[2]) == 2 * len(ALL[:-1]) * 2 + 2  # 2 layers + lm_head
    for name, grad in peft[2].items():
        assert close(fused[2][name], grad), name


def test_fused_lora_saves_a_boolean_mask_not_two_float_copies(tiny_model_dir):
    """What the backward keeps per training token: peft's dropout keeps the scaled mask and the dropped
    input as floats for each of the 7 projections; the fused node keeps booleans and shares x."""
    backend = _backend(tiny_model_dir, 0.1)
    ids = torch.randint(3, 300, (2, 9), generator=torch.Generator().manual_seed(0))

    def saved_bytes(fused: bool) -> tuple[int, set]:
        _set_path(backend, fused)
        for module in backend.model.modules():  # the baseline is peft as it comes: nn.Dropout
            table = getattr(module, "lora_dropout", None)
            if isinstance(table, torch.nn.ModuleDict) and not fused:
                for name in table:
                    table[name] = torch.nn.Dropout(0.1)
        backend.model.train()
        storages: dict[int, int] = {}
        dtypes = set()
        params = {p.untyped_storage().data_ptr() for p in backend.model.parameters()}

        def pack(t):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in params:
                storages[ptr] = t.untyped_storage().nbytes()
                dtypes.add(t.dtype)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            backend.model.get_base_model().model(input_ids=ids)  # the decoder layers (no logits)
        return sum(storages.values()), dtypes

    fused, fused_dtypes = saved_bytes(True)
    peft, _ = saved_bytes(False)
    assert torch.bool in fused_dtypes
    assert fused < 0.75 * peft, (fused, peft)


def test_fused_lora_leaves_disabled_and_merged_adapters_to_peft(tiny_model_dir):
    backend = _backend(tiny_model_dir, 0.0)
    assert L.use_fused_lora(backend.model) == 0  # already fused at construction: idempotent
    ids = torch.randint(3, 300, (1, 6), generator=torch.Generator().manual_seed(0))
    backend.model.eval()
    with torch.no_grad():
        on = backend.model(input_ids=ids).logits
        with backend.model.disable_adapter():
            off = backend.model(input_ids=ids).logits
        base = backend.model.get_base_model()
    assert not torch.allclose(on, off)  # the adapter acts, and disabling it still turns it off
    _set_path(backend, False)
    with torch.no_grad(), backend.model.disable_adapter():
        assert torch.equal(base(input_ids=ids).logits, off)


@pytest.mark.parametrize("p", [0.05, 0.25, 0.5])
def test_keep_mask_keeps_one_minus_p(p):
    torch.manual_seed(0)
    shape = (7, 13, 1001)  # an element count that is not a multiple of 4
    keep = L.keep_mask(shape, p, torch.device("cpu"))
    assert keep.dtype is torch.bool and keep.shape == shape
    n = keep.numel()
    sd = (p * (1 - p) / n) ** 0.5
    assert abs(keep.float().mean().item() - (1 - L.dropout_p(p))) < 5 * sd
    assert L.dropout_p(0.05) == 3277 / 65536 and L.dropout_p(0.25) == 0.25
    assert L.keep_mask((5,), 0.0, torch.device("cpu")).all()
    assert L.dropout_p(1 - 2**-20) == 1 - 2**-16  # never 1: the 1 / (1 − p) scale stays finite


def test_micro_batch_size_auto_holds_activation_memory_fixed(tiny_model_dir):
    import warnings

    assert auto_micro_batch_size(torch.float32) == 4 and auto_micro_batch_size(torch.bfloat16) == 8
    backend = LocalBackend(tiny_model_dir, lora_rank=4, target_modules=["q_proj"], device="cpu")
    assert backend.micro_batch_size == 4  # tiny models stay fp32 under auto
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 on a CPU without native bf16 warns that it is slow
        bf16 = LocalBackend(tiny_model_dir, lora_rank=4, target_modules=["q_proj"], device="cpu", dtype="bfloat16")
    assert bf16.micro_batch_size == 8
    explicit = LocalBackend(tiny_model_dir, lora_rank=4, target_modules=["q_proj"], device="cpu", micro_batch_size=3)
    assert explicit.micro_batch_size == 3


def test_merged_adapters_sample_the_same_policy_and_leave_the_base_untouched(tiny_model_dir):
    backend = _backend(tiny_model_dir, 0.1)
    backend.model.eval()
    base = {n: p.detach().clone() for n, p in backend.model.named_parameters()}
    ids = torch.randint(3, 300, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        unmerged = backend.model(input_ids=ids).logits
        with L.merged_adapters(backend.model) as n:
            merged = backend.model(input_ids=ids).logits
            with torch.enable_grad():  # a training forward inside the block still runs the adapter
                assert backend.model(input_ids=ids).logits.requires_grad
    assert n == len(ALL[:-1]) * 2 + 1  # every adapted projection of the 2 layers, and lm_head
    assert torch.allclose(merged, unmerged, rtol=1e-5, atol=1e-5) and not torch.equal(merged, unmerged)
    for name, p in backend.model.named_parameters():
        assert torch.equal(p, base[name]), name
    assert all(m._merged_weight is None for m in backend.model.modules() if hasattr(m, "_merged_weight"))


def test_cpu_fp32_sampling_decodes_on_merged_weights(tiny_model_dir):
    from retrain.backends.base import SamplingParams

    backend = _backend(tiny_model_dir, 0.0)
    layer = next(m for m in backend.model.modules() if hasattr(m, "_merged_weight"))
    seen = []
    hook = layer.register_forward_pre_hook(lambda m, args: seen.append(m._merged_weight is not None))
    try:
        backend.sample(["Say 7"], 2, SamplingParams(max_tokens=3, temperature=1.0, seed=0))
    finally:
        hook.remove()
    assert seen and all(seen)  # prefill and every decode step
    assert layer._merged_weight is None  # freed after sampling


def test_merged_adapters_leave_bf16_base_weights_unmerged(tiny_model_dir):
    """Merging an fp32 update into bf16 weights would round it away: the block merges nothing."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backend = _backend(tiny_model_dir, 0.0, "bfloat16")
    with L.merged_adapters(backend.model) as n:
        assert n == 0
