"""LoRA's forward and backward as one autograd node, with the dropout mask kept as booleans.

peft computes a LoRA projection as five autograd nodes,

    y = W·x + B·A·dropout(x) · s          s = lora_alpha / r,  dropout(x) = x ⊙ m / (1 − p),  m ~ Bernoulli(1 − p)

and its dropout keeps two full-size float copies of the projection's input for the backward (the
scaled mask and the dropped input). `LoRAFunction` computes the same values,

    forward:   u = x ⊙ m / (1 − p);   h = A·u;   z = (B·h) · s
    backward:  g_h = s · Bᵀ·g_z;   ∂A = g_h ⊗ u;   ∂B = s · g_z ⊗ h;   ∂x = (Aᵀ·g_h) ⊙ m / (1 − p)

saving only x (the 3 projections that read the same input share one tensor, stored once), the mask m
as booleans and the rank-r h; u is recomputed in the backward (one elementwise pass). On SmolLM2 with
LoRA on its 7 projections and p = 0.05 that cuts the activations a training token keeps from 1.96 MB
to 1.28 MB (fp32, measured with `torch.autograd.graph.saved_tensors_hooks`). Values and gradients
equal peft's up to float rounding (~1e-7 relative in fp32, tests/test_lora.py). Masks come from
`keep_mask`, on this path and on the `FastDropout` fallback alike.

`use_fused_lora(model)` gives every plain peft LoRA `Linear` this forward; anything else (several
active adapters, DoRA and other variants, a merged or disabled adapter, extra arguments) goes through
peft's own forward, so `disable_adapter()` and saving/loading behave exactly as before.

Example::

    model = get_peft_model(base, LoraConfig(r=16, lora_dropout=0.05, target_modules=["q_proj"]))
    use_fused_lora(model)         # same outputs and gradients, less memory, fewer nodes
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

# 16 random bits per element: one 64-bit draw covers 4 elements.
_LEVELS = 1 << 16


def dropout_p(p: float) -> float:
    """The drop probability actually applied: `p` rounded to a multiple of 2⁻¹⁶ (0.05 → 0.0500031),
    at most 1 − 2⁻¹⁶ (so 1 / (1 − p) stays finite)."""
    return min(round(p * _LEVELS), _LEVELS - 1) / _LEVELS


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device) -> torch.Tensor:
    """Booleans, each True with probability 1 − dropout_p(p), independently.

        keep = (b ≥ 2¹⁶ · dropout_p(p))     b uniform on {0, …, 2¹⁶ − 1}: 16 bits of a 64-bit draw

    `torch.rand(shape) ≥ p` costs one 32-bit draw and a float conversion per element; slicing 64-bit
    draws into four 16-bit ones is ~2.4× faster on CPU (70 µs vs 168 µs for a 4 × 31 × 576 mask, 2
    threads), and the mask draws were 5% (fp32) to 8% (bf16) of a SmolLM2 training step (torch.profiler:
    `aten::uniform_`).
    A uniform float has 24 bits, so `rand ≥ p` also rounds p, to 2⁻²⁴; 2⁻¹⁶ is far below anything a
    dropout rate means."""
    n = 1
    for size in shape:
        n *= size
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)
    threshold = round(dropout_p(p) * _LEVELS) - _LEVELS // 2  # b ≥ t  ⇔  b − 2¹⁵ ≥ t − 2¹⁵ (int16)
    return bits.view(torch.int16)[:n].view(shape) >= threshold


class FastDropout(torch.nn.Module):
    """Dropout with keep ~ Bernoulli(1 − p) (`keep_mask`) and y = x · keep / (1 − p), p = `dropout_p`.

    The fallback for LoRA layers `LoRAFunction` does not take (it draws the same masks): `nn.Dropout`
    draws with `bernoulli_` and scales in two more passes, about twice this time on CPU."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * keep_mask(x.shape, self.p, x.device) * (1.0 / (1.0 - dropout_p(self.p)))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_fast_dropout(model: torch.nn.Module) -> int:
    """Swap the `nn.Dropout` of every LoRA layer (peft's `lora_dropout` tables) for `FastDropout`;
    returns how many were swapped. Dropout holds no weights, so saved adapters are unchanged."""
    swapped = 0
    for module in model.modules():
        table = getattr(module, "lora_dropout", None)
        if not isinstance(table, torch.nn.ModuleDict):
            continue
        for name, dropout in table.items():
            if isinstance(dropout, torch.nn.Dropout) and dropout.p > 0:
                table[name] = FastDropout(dropout.p)
                swapped += 1
    return swapped


class LoRAFunction(torch.autograd.Function):
    """z = (B·A·(x ⊙ m / (1 − p))) · s with m ~ Bernoulli(1 − p) drawn here (p = 0: no mask).

    x may be lower precision than A and B (bf16 base weights, fp32 adapter): it is upcast to the
    adapter's dtype, as peft does, and saved in its own dtype. The scalars 1 / (1 − p) and s are
    folded into the small r × d matrices rather than applied to the activations: one elementwise
    pass over the activations in the forward (x ⊙ m) and two in the backward, instead of eight;
    the result differs from peft's order of operations by float rounding only."""

    @staticmethod
    def forward(ctx, x, A_r_i, B_o_r, scaling: float, p: float):
        keep = keep_mask(x.shape, p, x.device) if p > 0.0 else None  # booleans: 1 byte per element saved
        u = (x * keep if keep is not None else x).to(A_r_i.dtype)  # x ⊙ m is exact in any dtype
        drop_scale = 1.0 / (1.0 - dropout_p(p)) if keep is not None else 1.0
        h = F.linear(u, A_r_i * drop_scale)
        ctx.save_for_backward(x, keep, h, A_r_i, B_o_r)
        ctx.scaling, ctx.drop_scale = scaling, drop_scale
        return F.linear(h, B_o_r * scaling)

    @staticmethod
    def backward(ctx, g_z):
        x, keep, h, A_r_i, B_o_r = ctx.saved_tensors
        g_z = g_z.to(B_o_r.dtype)
        g_h = F.linear(g_z, (B_o_r * ctx.scaling).t())  # s · Bᵀ·g_z
        grad_x = grad_A = grad_B = None
        if ctx.needs_input_grad[0]:
            grad_u = F.linear(g_h, (A_r_i * ctx.drop_scale).t())
            grad_x = (grad_u * keep if keep is not None else grad_u).to(x.dtype)
        if ctx.needs_input_grad[1]:
            u = (x * keep if keep is not None else x).to(A_r_i.dtype)
            grad_A = (g_h.reshape(-1, g_h.shape[-1]).t() @ u.reshape(-1, u.shape[-1])) * ctx.drop_scale
        if ctx.needs_input_grad[2]:
            grad_B = (g_z.reshape(-1, g_z.shape[-1]).t() @ h.reshape(-1, h.shape[-1])) * ctx.scaling
        return grad_x, grad_A, grad_B, None, None


def _module_drop_p(dropout: torch.nn.Module) -> float | None:
    """The drop probability of a LoRA dropout module, or None for a kind this path does not know."""
    if isinstance(dropout, torch.nn.Identity):
        return 0.0
    p = getattr(dropout, "p", None)
    return float(p) if isinstance(p, float) and type(dropout).__name__ in {"Dropout", "FastDropout"} else None


def _plain_adapter(layer) -> tuple[str, float] | None:
    """(adapter name, dropout p) when `layer` runs one active vanilla LoRA adapter; else None."""
    active = layer.active_adapters
    if layer.disable_adapters or layer.merged or len(active) != 1:
        return None
    name = active[0]
    if name not in layer.lora_A or name in layer.lora_variant:
        return None
    p = _module_drop_p(layer.lora_dropout[name])
    return None if p is None else (name, p)


def _fused_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """peft `lora.Linear.forward` for one active vanilla adapter; anything else goes to peft's."""
    plain = None if args or kwargs else _plain_adapter(self)
    if plain is None:
        return self._peft_forward(x, *args, **kwargs)
    name, p = plain
    if self._merged_weight is not None and not torch.is_grad_enabled():
        return F.linear(x, self._merged_weight, self.base_layer.bias)  # inside `merged_adapters`
    result = self.base_layer(x)
    A, B = self.lora_A[name].weight, self.lora_B[name].weight
    if not self.training:
        p = 0.0
    if torch.is_grad_enabled() and (A.requires_grad or B.requires_grad or x.requires_grad):
        z = LoRAFunction.apply(x, A, B, self.scaling[name], p)
    else:  # sampling, reference logprobs: peft's arithmetic, no autograd node
        z = F.linear(F.linear(x.to(A.dtype), A), B) * self.scaling[name]
    return (result + z).to(result.dtype)


@contextmanager
def merged_adapters(model: torch.nn.Module) -> Iterator[int]:
    """Within the block, no-grad forwards of the fused layers use W' = W + s·B·A, computed once on
    entry into new tensors (the base weights are untouched) and freed on exit; yields how many.

    For sampling on CPU in fp32, where the adapter's two skinny matmuls per projection were ~10% of
    a SmolLM2 decode (32 rows: 4.3 s vs 3.9 s with the adapter disabled). Only where the base and the
    adapter share a dtype: merging fp32 LoRA weights into bf16 ones would round the update away
    (bf16 keeps 8 bits; an early adapter changes W by far less than W's last bit). Costs the adapted
    weights' size while the block runs (SmolLM2, 7 projections: 424 MB). W' and the unmerged
    W·x + s·B·(A·x) agree to float rounding, so `sampler_train_kl` stays at fp32 noise."""
    layers = []
    try:
        with torch.no_grad():
            for module in model.modules():
                if not hasattr(module, "_peft_forward") or type(module.base_layer) is not torch.nn.Linear:
                    continue
                plain = _plain_adapter(module)
                if plain is None:
                    continue
                W, A, B = module.base_layer.weight, module.lora_A[plain[0]].weight, module.lora_B[plain[0]].weight
                if W.dtype != A.dtype:
                    continue
                module._merged_weight = torch.addmm(W, B, A, alpha=module.scaling[plain[0]])
                layers.append(module)
        yield len(layers)
    finally:
        for module in layers:
            module._merged_weight = None


def use_fused_lora(model: torch.nn.Module) -> int:
    """Give every peft LoRA `Linear` of `model` the fused forward; returns how many. Idempotent."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    fused = 0
    for module in model.modules():
        if type(module) is LoraLinear and not hasattr(module, "_peft_forward"):
            module._peft_forward = module.forward
            module._merged_weight = None
            module.forward = types.MethodType(_fused_forward, module)
            fused += 1
    return fused
