"""How the sampler runs one decode step once the prompts are prefilled: a preallocated KV cache.

`sampler.sample_groups` prefills each prompt once (a `DynamicCache`), then asks for a decode
state and calls `step(tokens_B) -> logits_B_V` once per generated token:

    state = make_decode_state(decoder, to_logits, prefill_cache, mask_P_L, n=8, max_new_tokens=32)
    logits_B_V = state.step(tok_B)        # one token per row, logits of the next
    state.keep(rows_B)                    # drop finished rows (when `state.can_drop_rows`)

`StaticDecode` (every model whose cache layers are plain full-attention layers: Llama, Qwen2,
Qwen3, SmolLM2, ...) copies the prefill into tensors of the final length `prompt + max_new_tokens`
and writes each new key/value in place, with an additive attention bias that opens one column per
step. `DynamicCache` instead concatenates the whole cache at every step (`aten::cat`: 8% of a SmolLM2
fp32 sampling call of 32 rows on CPU, 2.5% of the whole step in benchmarks/results/perf_profile.txt),
and its shapes change every step, which rules out CUDA graphs. On CPU the preallocated cache is used
in bf16, where it measured 25% faster; in fp32 it measured no faster than concatenating.

On CUDA, `StaticDecode` captures the step (decoder + lm_head) in a CUDA graph and replays it: a
decode step of a small model is a few hundred kernel launches of microseconds each (the launch
overhead, not the GPU, bounds the in-process loop). Shapes must then stay fixed, so finished rows
stay in the batch (their tokens are ignored). A capture that fails (an op that syncs with the
host, an unsupported model) falls back to the same step without the graph, with a warning.

`DynamicDecode` keeps `DynamicCache` for the rest (sliding-window and hybrid caches).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from functools import lru_cache
from typing import Protocol

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicLayer


class DecodeState(Protocol):
    can_drop_rows: bool

    def step(self, tokens_B: torch.Tensor) -> torch.Tensor:
        """Feed one token per row; return the fp32, temperature-scaled logits of the next token."""
        ...

    def keep(self, rows_B: torch.Tensor) -> None:
        """Keep only these batch rows (in this order) from now on."""
        ...


def run_decoder(decoder, input_ids_B_L, attention_mask, position_ids_B_L, cache=None) -> torch.Tensor:
    """Hidden states [B, L, d] of the transformer stack; `cache` is updated in place.

    `attention_mask` is the 2D padding mask (the model builds its causal mask from it) or a
    prepared 4D additive bias [B, 1, L, S], used as is."""
    kwargs = {"input_ids": input_ids_B_L, "attention_mask": attention_mask, "position_ids": position_ids_B_L}
    if cache is not None:
        kwargs[_cache_kwarg(type(decoder))] = cache
        kwargs["use_cache"] = True
    else:
        kwargs["use_cache"] = False
    return decoder(**kwargs).last_hidden_state


@lru_cache(maxsize=32)
def _cache_kwarg(decoder_type: type) -> str:
    # transformers 5.2x renamed `past_key_values` to `cache`; accept both.
    return "cache" if "cache" in inspect.signature(decoder_type.forward).parameters else "past_key_values"


class PreallocatedLayer(CacheLayerMixin):
    """One layer's keys and values in tensors of the final length [B, H, L, D], written in place.

    `cursor` (a 0-d tensor on the cache's device, so a CUDA graph can advance it) is the slot the
    next token's key/value goes to; every row writes the same slot (prompts are left-padded, so
    all rows are equally long). Slots not yet written are zeros that the attention bias hides."""

    is_compileable = True
    is_sliding = False

    def __init__(self, keys_B_H_L_D: torch.Tensor, values_B_H_L_D: torch.Tensor, length: int):
        super().__init__()
        self.keys, self.values = keys_B_H_L_D, values_B_H_L_D
        self.device = keys_B_H_L_D.device
        self.cursor = torch.tensor(length, dtype=torch.long, device=self.device)
        self.is_initialized = True

    def lazy_initialization(self, key_states, value_states) -> None:  # allocated up front
        raise RuntimeError("PreallocatedLayer is built with its tensors")

    def update(self, key_states, value_states, *args, **kwargs):
        slots = self.cursor + torch.arange(key_states.shape[-2], device=self.device)
        self.keys.index_copy_(2, slots, key_states)
        self.values.index_copy_(2, slots, value_states)
        self.cursor.add_(key_states.shape[-2])
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.keys.shape[-2], 0

    def get_seq_length(self) -> int:
        return int(self.cursor)

    def get_max_length(self) -> int:
        return self.keys.shape[-2]

    def batch_select_indices(self, rows_B: torch.Tensor) -> None:
        self.keys, self.values = self.keys[rows_B], self.values[rows_B]


def supports_static(prefill_cache) -> bool:
    """True when every layer of the prefill cache is a plain full-attention `DynamicLayer`."""
    layers = getattr(prefill_cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer and layer.is_initialized for layer in layers)


def make_decode_state(
    decoder,
    to_logits: Callable[[torch.Tensor], torch.Tensor],
    prefill_cache,
    mask_P_L: torch.Tensor,
    *,
    n: int,
    max_new_tokens: int,
    static: bool = True,
    cuda_graph: bool = True,
) -> DecodeState:
    """The decode state for `n` rows per prefilled prompt: static when the model allows it."""
    if static and supports_static(prefill_cache):
        return StaticDecode(
            decoder,
            to_logits,
            prefill_cache,
            mask_P_L,
            n=n,
            max_new_tokens=max_new_tokens,
            cuda_graph=cuda_graph and mask_P_L.device.type == "cuda",
        )
    return DynamicDecode(decoder, to_logits, prefill_cache, mask_P_L, n=n)


class DynamicDecode:
    """The transformers `DynamicCache` path: the cache grows by concatenation at every step."""

    can_drop_rows = True

    def __init__(self, decoder, to_logits, prefill_cache, mask_P_L: torch.Tensor, *, n: int):
        self.decoder, self.to_logits, self.cache = decoder, to_logits, prefill_cache
        self.cache.batch_repeat_interleave(n)
        self.mask_B_L = mask_P_L.repeat_interleave(n, dim=0)
        self.next_pos_B = mask_P_L.sum(-1).repeat_interleave(n, dim=0)

    def step(self, tokens_B: torch.Tensor) -> torch.Tensor:
        self.mask_B_L = torch.cat([self.mask_B_L, self.mask_B_L.new_ones(len(tokens_B), 1)], dim=-1)
        hidden_B_1_d = run_decoder(self.decoder, tokens_B[:, None], self.mask_B_L, self.next_pos_B[:, None], self.cache)
        self.next_pos_B = self.next_pos_B + 1
        return self.to_logits(hidden_B_1_d[:, -1])

    def keep(self, rows_B: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows_B)
        self.mask_B_L, self.next_pos_B = self.mask_B_L[rows_B], self.next_pos_B[rows_B]


class StaticDecode:
    """Preallocated KV cache (see the module docstring); a CUDA graph of the step on CUDA."""

    def __init__(
        self,
        decoder,
        to_logits,
        prefill_cache,
        mask_P_L: torch.Tensor,
        *,
        n: int,
        max_new_tokens: int,
        cuda_graph: bool = False,
    ):
        self.decoder, self.to_logits = decoder, to_logits
        prompt_len = mask_P_L.shape[1]
        total = prompt_len + max_new_tokens
        layers = []
        for layer in prefill_cache.layers:
            layers.append(PreallocatedLayer(_grow(layer.keys, n, total), _grow(layer.values, n, total), prompt_len))
        self.cache = Cache(layers=layers)
        dtype = layers[0].keys.dtype
        # Additive attention bias: 0 where a row may attend, the dtype's min elsewhere (left padding
        # and the slots not yet written). Each step opens the slot it writes.
        visible_B_L = torch.zeros((len(mask_P_L) * n, total), dtype=torch.bool, device=mask_P_L.device)
        visible_B_L[:, :prompt_len] = mask_P_L.repeat_interleave(n, dim=0).bool()
        self.bias_B_1_1_L = torch.zeros(visible_B_L.shape, dtype=dtype, device=mask_P_L.device)
        self.bias_B_1_1_L.masked_fill_(~visible_B_L, torch.finfo(dtype).min)
        self.bias_B_1_1_L = self.bias_B_1_1_L[:, None, None, :]
        self.next_pos_B = mask_P_L.sum(-1).repeat_interleave(n, dim=0)
        self.slot = prompt_len
        self.total = total
        self.graph = None
        self.can_drop_rows = True
        if cuda_graph:
            self._capture()

    def step(self, tokens_B: torch.Tensor) -> torch.Tensor:
        if self.slot >= self.total:
            raise RuntimeError(f"the preallocated cache holds {self.total} positions; all are written")
        self.bias_B_1_1_L[..., self.slot] = 0
        self.slot += 1
        if self.graph is not None:
            self._tokens_B_1.copy_(tokens_B[:, None])
            self._pos_B_1.copy_(self.next_pos_B[:, None])
            self.graph.replay()
            logits_B_V = self._logits_B_V
        else:
            logits_B_V = self._forward(tokens_B[:, None], self.next_pos_B[:, None])
        self.next_pos_B = self.next_pos_B + 1
        return logits_B_V

    def keep(self, rows_B: torch.Tensor) -> None:
        if not self.can_drop_rows:
            raise RuntimeError("a captured decode step has fixed rows")
        self.cache.batch_select_indices(rows_B)
        self.bias_B_1_1_L, self.next_pos_B = self.bias_B_1_1_L[rows_B], self.next_pos_B[rows_B]

    def _forward(self, tokens_B_1: torch.Tensor, pos_B_1: torch.Tensor) -> torch.Tensor:
        hidden_B_1_d = run_decoder(self.decoder, tokens_B_1, self.bias_B_1_1_L, pos_B_1, self.cache)
        return self.to_logits(hidden_B_1_d[:, -1])

    def _capture(self) -> None:
        """Record `_forward` in a CUDA graph over static input buffers (falls back on failure)."""
        rows = self.next_pos_B.shape[0]
        device = self.next_pos_B.device
        self._tokens_B_1 = torch.zeros((rows, 1), dtype=torch.long, device=device)
        self._pos_B_1 = self.next_pos_B[:, None].clone()
        cursors = [layer.cursor.clone() for layer in self.cache.layers]
        try:
            # Warm up on a side stream (lazy kernel and allocator set-up must not be captured), then
            # rewind the cursors the warm-up advanced (the slot it wrote is written again later).
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                self._forward(self._tokens_B_1, self._pos_B_1)
            torch.cuda.current_stream(device).wait_stream(side)
            for layer, cursor in zip(self.cache.layers, cursors, strict=True):
                layer.cursor.copy_(cursor)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._logits_B_V = self._forward(self._tokens_B_1, self._pos_B_1)
        except Exception as exc:  # noqa: BLE001 - any capture failure means: run the step eagerly
            for layer, cursor in zip(self.cache.layers, cursors, strict=True):
                layer.cursor.copy_(cursor)
            warnings.warn(
                f"CUDA graph capture of the decode step failed ({type(exc).__name__}: {exc}); decoding without it",
                stacklevel=3,
            )
            return
        self.graph = graph
        self.can_drop_rows = False


def _grow(prefill_P_H_L_D: torch.Tensor, n: int, total: int) -> torch.Tensor:
    """[P, H, L, D] → [P·n, H, total, D]: each prompt's rows repeated n times, zeros after L."""
    rows_P_H_L_D = prefill_P_H_L_D.repeat_interleave(n, dim=0)
    out = rows_P_H_L_D.new_zeros((*rows_P_H_L_D.shape[:2], total, rows_P_H_L_D.shape[-1]))
    out[:, :, : rows_P_H_L_D.shape[2]] = rows_P_H_L_D
    return out
