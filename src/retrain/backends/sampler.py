"""Group sampling with a shared-prefix KV cache, and the logits path the trainer shares with it.

Why a hand-written decode loop rather than `generate` (docs/performance.md): `generate` with
`num_return_sequences` prefills every prompt once per completion (24% of sampling time at G = 8 on
SmolLM2, more with longer prompts) and keeps decoding finished rows until the last one stops. Here each
prompt is prefilled once, its cache is copied to its G rows, and finished rows leave the decode batch.
The decode step itself (a preallocated KV cache, and a CUDA graph on CUDA) is in
`retrain.backends.decode`.

Both the sampler and `LocalBackend.train_step` turn hidden states into logprobs through
`token_logprobs_from_hidden`, so on-policy the trainer's logprob of a sampled token equals the
sampler's up to float noise (importance ratio 1):

    logprob_t = log_softmax(logits_t / T)[token_t]      T = the sampling temperature

With top_p < 1 the token is drawn from the nucleus (renormalised), but the recorded logprob is still
the one above, i.e. what the loss computes; the difference shows up in `sampler_train_kl`.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from functools import lru_cache

import torch

from retrain.backends.decode import make_decode_state, run_decoder
from retrain.backends.prefix import left_pad
from retrain.errors import RetrainError


@dataclass
class RawSample:
    """One completion as token ids plus per-token statistics (no text yet)."""

    token_ids: list[int]
    logprobs: list[float]
    entropies: list[float] | None
    hit_max_tokens: bool


# ---------------------------------------------------------------- model plumbing


def decoder_and_head(model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The transformer stack and the output projection of a (possibly PEFT-wrapped) causal LM.

    LoRA layers are injected in place, so calling these directly runs the adapter too, and
    `peft_model.disable_adapter()` still turns it off.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def scaled_logits(head, hidden_N_d: torch.Tensor, temperature: float, softcap: float | None) -> torch.Tensor:
    """fp32 logits / T for the given hidden states only (never for the whole sequence).

    `softcap`: Gemma-style `cap · tanh(logits / cap)`, applied before the temperature as the model's
    own forward would. T = 1 skips the division (x / 1 == x, and it saves an N × V copy).
    """
    logits_N_V = head(hidden_N_d).float()
    if softcap:
        logits_N_V = softcap * torch.tanh(logits_N_V / softcap)
    return logits_N_V if temperature == 1.0 else logits_N_V / temperature


def logit_softcap(model) -> float | None:
    config = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
    config = getattr(config, "text_config", config)
    return getattr(config, "final_logit_softcapping", None)


def token_logprobs_from_hidden(
    head, hidden_N_d: torch.Tensor, targets_N: torch.Tensor, temperature: float, softcap: float | None
) -> torch.Tensor:
    """log_softmax(head(h) / T)[target] for each of N positions (differentiable); see
    `target_logprobs` for how it avoids materialising the N × V log-probabilities."""
    return target_logprobs(scaled_logits(head, hidden_N_d, temperature, softcap), targets_N)


def target_logprobs(logits_N_V: torch.Tensor, targets_N: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """z[target] − logsumexp(z) per row (= log_softmax(z)[target]), with the gradient

        ∂/∂z = g · (onehot(target) − softmax(z))

    computed into ONE N × V tensor. `log_softmax` + `gather` keep the N × V log-probabilities for
    the backward and build two more N × V tensors there (the gather's scattered zeros and the
    softmax); at 49k vocabulary entries those passes were ~5% of a SmolLM2 training step on CPU
    (torch.profiler, before this function replaced them). Rows go in chunks of `chunk` so each
    chunk's temporaries stay in cache."""
    if logits_N_V.requires_grad and torch.is_grad_enabled():
        return _TargetLogprob.apply(logits_N_V, targets_N, chunk)
    return _target_logprobs_forward(logits_N_V, targets_N, chunk)[0]


def _target_logprobs_forward(logits_N_V, targets_N, chunk):
    lse_N = torch.empty(logits_N_V.shape[0], dtype=logits_N_V.dtype, device=logits_N_V.device)
    for start in range(0, logits_N_V.shape[0], chunk):
        lse_N[start : start + chunk] = torch.logsumexp(logits_N_V[start : start + chunk], dim=-1)
    return logits_N_V.gather(-1, targets_N[:, None]).squeeze(-1) - lse_N, lse_N


class _TargetLogprob(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits_N_V, targets_N, chunk):
        out_N, lse_N = _target_logprobs_forward(logits_N_V, targets_N, chunk)
        ctx.save_for_backward(logits_N_V, targets_N, lse_N)
        ctx.chunk = chunk
        return out_N

    @staticmethod
    def backward(ctx, grad_N):
        logits_N_V, targets_N, lse_N = ctx.saved_tensors
        grad_N_V = torch.empty_like(logits_N_V)
        for start in range(0, logits_N_V.shape[0], ctx.chunk):
            rows = slice(start, start + ctx.chunk)
            torch.sub(logits_N_V[rows], lse_N[rows, None], out=grad_N_V[rows])
            grad_N_V[rows].exp_().mul_(-grad_N[rows, None])
        grad_N_V.scatter_add_(-1, targets_N[:, None], grad_N[:, None].to(grad_N_V.dtype))
        return grad_N_V, None, None


# ---------------------------------------------------------------- token choice


def choose_tokens(
    logits_B_V: torch.Tensor,
    *,
    greedy: bool,
    top_p: float,
    want_entropy: bool,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Pick one token per row of temperature-scaled fp32 logits.

        logp = log_softmax(logits);  token ~ softmax(logits) (restricted to the top-p nucleus when
        top_p < 1, renormalised), or argmax when greedy;  H = −Σ p·log p over the full vocabulary.

    Sampling is by inverse CDF with one uniform per row (`searchsorted` on the cumulative sum), which
    avoids `torch.multinomial`'s per-vocab-entry exponentials (39 ms per step at 32 × 49k on CPU,
    measured). Returns (tokens_B, logprobs_B, entropies_B or None), all on the logits' device.
    """
    logp_B_V = torch.log_softmax(logits_B_V, dim=-1)
    probs_B_V = logp_B_V.exp() if (want_entropy or not greedy) else None
    if greedy:
        tokens_B = logits_B_V.argmax(dim=-1)
    else:
        u_B = torch.rand(logits_B_V.shape[0], 1, generator=generator, device=logits_B_V.device)
        if top_p < 1.0:
            sorted_B_V, order_B_V = probs_B_V.sort(dim=-1, descending=True)
            # Keep a token when the mass strictly before it is < top_p (the first is always kept).
            keep_B_V = (sorted_B_V.cumsum(-1) - sorted_B_V) < top_p
            cdf_B_V = torch.where(keep_B_V, sorted_B_V, 0.0).cumsum(-1)
            pick_B = torch.searchsorted(cdf_B_V, u_B * cdf_B_V[:, -1:], right=True)
            pick_B = pick_B.clamp(max=logits_B_V.shape[-1] - 1)
            tokens_B = order_B_V.gather(-1, pick_B).squeeze(-1)
        else:
            cdf_B_V = probs_B_V.cumsum(-1)
            pick_B = torch.searchsorted(cdf_B_V, u_B * cdf_B_V[:, -1:], right=True)
            tokens_B = pick_B.clamp(max=logits_B_V.shape[-1] - 1).squeeze(-1)
    logprobs_B = logp_B_V.gather(-1, tokens_B[:, None]).squeeze(-1)
    entropies_B = None
    if want_entropy:
        # finfo.min keeps 0 · log 0 = 0 when a logit is -inf (masked vocabulary entries).
        entropies_B = -(probs_B_V * logp_B_V.clamp(min=torch.finfo(logp_B_V.dtype).min)).sum(-1)
    return tokens_B, logprobs_B, entropies_B


# ---------------------------------------------------------------- the decode loop


@torch.inference_mode()
def sample_groups(
    model,
    prompt_ids_P: list[list[int]],
    n: int,
    *,
    max_tokens: int,
    temperature: float,
    top_p: float,
    greedy: bool,
    want_entropy: bool,
    generator: torch.Generator | None,
    stop_ids: set[int],
    pad_id: int,
    device,
    static_cache: bool = True,
    cuda_graph: bool = True,
) -> list[list[RawSample]]:
    """`n` completions for each prompt; each prompt is prefilled ONCE and its cache shared by its group.

    Rows leave the decode batch as soon as they emit a stop token (kept in `token_ids`) so finished
    completions cost nothing more (except under a CUDA graph, whose rows are fixed: there finished
    rows run on and are ignored). Deterministic given `generator`'s seed and the weights.
    `static_cache` / `cuda_graph` choose the decode state (retrain.backends.decode); they change
    the speed, not the completions. The caller puts the model in eval mode (no dropout while sampling).
    """
    from transformers import DynamicCache

    if any(len(ids) == 0 for ids in prompt_ids_P):
        raise RetrainError("cannot sample from an empty prompt (the chat template produced no tokens)")
    decoder, head = decoder_and_head(model)
    softcap = logit_softcap(model)
    T = temperature if temperature > 0 else 1.0

    def to_logits(hidden_B_d: torch.Tensor) -> torch.Tensor:
        return scaled_logits(head, hidden_B_d, T, softcap)

    input_ids_P_L, mask_P_L, pos_P_L = left_pad(prompt_ids_P, pad_id, device)
    cache = DynamicCache(config=decoder.config)
    hidden_P_L_d = run_decoder(decoder, input_ids_P_L, mask_P_L, pos_P_L, cache)
    # Only the last position's logits are needed; the group shares them, then its cache.
    logits_B_V = to_logits(hidden_P_L_d[:, -1]).repeat_interleave(n, dim=0)
    state = make_decode_state(
        decoder, to_logits, cache, mask_P_L, n=n, max_new_tokens=max_tokens, static=static_cache, cuda_graph=cuda_graph
    )

    rows = len(prompt_ids_P) * n
    tokens_R: list[list[int]] = [[] for _ in range(rows)]
    logprobs_R: list[list[float]] = [[] for _ in range(rows)]
    entropies_R: list[list[float]] | None = [[] for _ in range(rows)] if want_entropy else None
    hit_max_R = [False] * rows
    row_of_B: list[int | None] = list(range(rows))  # original row of each batch row; None once finished
    stop_t = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)

    for step in range(max_tokens):
        tok_B, lp_B, ent_B = choose_tokens(
            logits_B_V, greedy=greedy or temperature <= 0, top_p=top_p, want_entropy=want_entropy, generator=generator
        )
        done_B = torch.isin(tok_B, stop_t)
        # One device→host copy per step: token ids, logprobs (and entropies), done flags.
        stats = [lp_B] + ([ent_B] if want_entropy else []) + [done_B.float()]
        stats_B = torch.stack(stats, dim=-1).tolist()
        tok_list = tok_B.tolist()
        last = step == max_tokens - 1
        keep = []
        for i, row in enumerate(row_of_B):
            if row is None:
                continue
            tokens_R[row].append(tok_list[i])
            logprobs_R[row].append(stats_B[i][0])
            if entropies_R is not None:
                entropies_R[row].append(stats_B[i][1])
            if stats_B[i][-1] > 0:
                row_of_B[i] = None
                continue
            if last:
                hit_max_R[row] = True
            else:
                keep.append(i)
        if last or not keep:
            break
        if len(keep) < len(row_of_B) and state.can_drop_rows:
            keep_t = torch.tensor(keep, dtype=torch.long, device=device)
            state.keep(keep_t)
            tok_B = tok_B[keep_t]
            row_of_B = [row_of_B[i] for i in keep]
        logits_B_V = state.step(tok_B)

    groups: list[list[RawSample]] = []
    for p in range(len(prompt_ids_P)):
        group = []
        for row in range(p * n, (p + 1) * n):
            group.append(
                RawSample(
                    token_ids=tokens_R[row],
                    logprobs=logprobs_R[row],
                    entropies=entropies_R[row] if entropies_R is not None else None,
                    hit_max_tokens=hit_max_R[row],
                )
            )
        groups.append(group)
    return groups


# ---------------------------------------------------------------- text and offsets


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable-unicode → byte map, inverted (the ByteLevel pre-tokenizer's alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def _is_byte_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None) if backend is not None else None
    return decoder is not None and "ByteLevel" in repr(decoder)


def _special_ids(tokenizer) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    for token_id, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(added, "special", False):
            ids.add(int(token_id))
    return ids


def _byte_level_offsets(tokenizer, ids: list[int]) -> tuple[str, list[tuple[int, int]]] | None:
    """Exact spans for byte-level BPE: feed each token's bytes to an incremental UTF-8 decoder.

    A character split across tokens belongs to the token that completes it (earlier pieces get an
    empty span). Returns None when a token cannot be mapped to bytes.
    """
    byte_of = _byte_decoder()
    special = _special_ids(tokenizer)
    added = {int(i): t.content for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
    pieces = tokenizer.convert_ids_to_tokens(ids)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text_parts: list[str] = []
    offsets: list[tuple[int, int]] = []
    pos = 0
    last_real = -1
    for token_id, piece in zip(ids, pieces, strict=True):
        if token_id in special or piece is None:
            # Specials are skipped by decode; so are ids past the tokenizer's vocabulary (models pad
            # their embedding matrix, e.g. Qwen: 151936 rows for ~151.7k tokens, and may sample them).
            offsets.append((pos, pos))
            continue
        if token_id in added:
            data = added[token_id].encode("utf-8")
        else:
            try:
                data = bytes(byte_of[ch] for ch in piece)
            except (KeyError, TypeError):
                return None
        chunk = decoder.decode(data)
        last_real = len(offsets)
        text_parts.append(chunk)
        offsets.append((pos, pos + len(chunk)))
        pos += len(chunk)
    tail = decoder.decode(b"", final=True)
    if tail:  # an unfinished UTF-8 sequence at the end becomes U+FFFD, owned by the last real token
        text_parts.append(tail)
        offsets[last_real] = (offsets[last_real][0], pos + len(tail))
        offsets[last_real + 1 :] = [(pos + len(tail), pos + len(tail))] * (len(offsets) - last_real - 1)
    return "".join(text_parts), offsets


def _windowed_offsets(tokenizer, ids: list[int], text: str, window: int = 4) -> list[tuple[int, int]] | None:
    """Spans from short windowed decodes: the text token t adds is decode(ids[w:t+1]) minus
    decode(ids[w:c]), c = tokens already placed, w = c − window. Exact for tokenizers whose decoding
    is local (SentencePiece/Metaspace, WordPiece, byte fallback). A token that leaves a character
    unfinished (U+FFFD at the end) gets an empty span and the token completing it gets the character,
    as on the byte-level path. None when the pieces do not rebuild `text`."""
    offsets: list[tuple[int, int]] = []
    pos, placed = 0, 0
    for t in range(len(ids)):
        w = max(0, placed - window)
        before = tokenizer.decode(ids[w:placed], skip_special_tokens=True) if placed > w else ""
        after = tokenizer.decode(ids[w : t + 1], skip_special_tokens=True)
        if not after.startswith(before):
            return None
        piece = after[len(before) :]
        if piece.endswith("\ufffd") and t < len(ids) - 1 and t - placed < 3:
            offsets.append((pos, pos))  # maybe the first bytes of a character: wait for the rest
            continue
        if text[pos : pos + len(piece)] != piece:
            return None
        offsets.append((pos, pos + len(piece)))
        pos += len(piece)
        placed = t + 1
    return offsets if pos == len(text) else None


def decode_with_offsets(tokenizer, ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """(text, offsets): `text = tokenizer.decode(ids, skip_special_tokens=True)` and, per token, the
    (start, end) character span it contributes to `text` (special tokens: empty spans).

    Byte-level tokenizers (GPT-2, Qwen, Llama 3, SmolLM2) use an exact O(T) byte path; others use
    short windowed decodes (O(T)), checked to rebuild the text; failing both, prefix decoding,
    offsets[t] = (len(decode(ids[:t])), len(decode(ids[:t+1]))), O(T²) decodes.
    """
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if _is_byte_level(tokenizer):
        fast = _byte_level_offsets(tokenizer, ids)
        if fast is not None and fast[0] == text:
            return fast
    windowed = _windowed_offsets(tokenizer, ids, text)
    if windowed is not None:
        return text, windowed
    offsets = []
    prev = 0
    for t in range(len(ids)):
        cur = len(tokenizer.decode(ids[: t + 1], skip_special_tokens=True))
        # Prefix decodes are not always monotone (a partial UTF-8 char decodes to U+FFFD).
        cur = min(max(cur, prev), len(text))
        offsets.append((prev, cur))
        prev = cur
    if offsets:
        offsets[-1] = (offsets[-1][0], len(text))
    return text, offsets
