"""Shared-prefix sampling vs per-completion prefill, at the quickstart's shapes.

    python benchmarks/bench_sampler.py                       # SmolLM2 on CPU, 2 prompts × 8, 32 tokens
    python benchmarks/bench_sampler.py --model tiny-random --prompts 4 --group 8 --repeats 5
    python benchmarks/bench_sampler.py --random-medium --device cuda --prompts 8 --group 16 --tokens 256

Rows (same decode loop, `retrain.backends.sampler.sample_groups`, unless noted):
- shared prefill: each prompt prefilled once, its KV cache repeated to its G rows (what retrain does);
- naive prefill: every completion prefills its own copy of the prompt (P·G prefill rows), as
  `generate(num_return_sequences=G)` and TRL do;
- hf generate: `model.generate(do_sample=True, num_return_sequences=G)`, for reference;
- prefill only: the prompt forward alone, P rows vs P·G rows.
"fixed" rows disable the stop tokens so every variant decodes exactly `--tokens` tokens (same work);
"eos" rows stop at EOS as in training. Times are wall seconds, min and median over `--repeats`
(variants interleaved; on a shared CPU host timing noise is large, so read the minimum).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from retrain.backends.base import SamplingParams
from retrain.backends.local import LocalBackend
from retrain.backends.sampler import (
    decoder_and_head,
    left_pad,
    run_decoder,
    sample_groups,
)

PROMPT = "What is {a} + {b}? Answer with just the number."


def timed_round_robin(fns: dict, repeats: int, sync) -> dict[str, list[float]]:
    """Time each variant `repeats` times, interleaved, so drift (clocks, contention) hits all alike."""
    for fn in fns.values():
        fn()  # warm-up (allocator, kernels, lazy init)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats):
        print(f"round {r + 1}/{repeats}", file=sys.stderr, flush=True)
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times


def medium_random_model_dir(path: Path) -> str:
    """A random Qwen2 of ~0.2B parameters (no download): shapes for GPU timing only."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from retrain.backends.models import build_tiny_random

    build_tiny_random(path)  # the byte-level tokenizer; the model is replaced below
    config = Qwen2Config(
        vocab_size=32768,
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=12,
        num_attention_heads=16,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(path)
    return str(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--random-medium", action="store_true", help="use a random ~0.2B Qwen2 (GPU timing)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sampler.txt"))
    args = ap.parse_args(argv)

    model = args.model
    if args.random_medium:
        import tempfile

        model = medium_random_model_dir(Path(tempfile.mkdtemp()) / "medium")
    t0 = time.perf_counter()
    backend = LocalBackend(model, lora_rank=16, device=args.device, temperature=0.7)
    load_s = time.perf_counter() - t0
    device = backend.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    prompts = [PROMPT.format(a=17 + 9 * i, b=25 + 7 * i) for i in range(args.prompts)]
    ids_P = [backend.prompt_ids(p) for p in prompts]
    params = SamplingParams(max_tokens=args.tokens, temperature=0.7, seed=0)
    stops = backend.stop_ids
    never = {-1}  # no token id matches: every row decodes `--tokens` tokens

    def loop(prompt_ids, n, stop_ids):
        gen = torch.Generator(device=device).manual_seed(0)
        return sample_groups(
            backend.model,
            prompt_ids,
            n,
            max_tokens=args.tokens,
            temperature=0.7,
            top_p=1.0,
            greedy=False,
            want_entropy=False,
            generator=gen,
            stop_ids=stop_ids,
            pad_id=backend.pad_id,
            device=device,
        )

    naive_ids = [ids for ids in ids_P for _ in range(args.group)]
    decoder, _ = decoder_and_head(backend.model)

    @torch.inference_mode()
    def prefill(rows):
        x, mask, pos = left_pad(rows, backend.pad_id, device)
        run_decoder(decoder, x, mask, pos)

    @torch.inference_mode()
    def hf_generate():
        x, mask, _ = left_pad(ids_P, backend.pad_id, device)
        backend.model.generate(
            input_ids=x,
            attention_mask=mask,
            do_sample=True,
            temperature=0.7,
            top_k=0,
            top_p=1.0,
            max_new_tokens=args.tokens,
            num_return_sequences=args.group,
            eos_token_id=sorted(stops),
            pad_token_id=backend.pad_id,
        )

    backend.model.eval()
    rows = {
        "shared prefill, fixed": lambda: loop(ids_P, args.group, never),
        "naive prefill, fixed": lambda: loop(naive_ids, 1, never),
        "shared prefill, eos": lambda: backend.sample(prompts, args.group, params),
        "naive prefill, eos": lambda: loop(naive_ids, 1, stops),
        "hf generate, eos": hf_generate,
        f"prefill only, {len(ids_P)} rows": lambda: prefill(ids_P),
        f"prefill only, {len(naive_ids)} rows": lambda: prefill(naive_ids),
    }
    results = timed_round_robin(rows, args.repeats, sync)
    tokens = [len(c.token_ids) for g in backend.sample(prompts, args.group, params) for c in g]

    name = Path(model).name if args.random_medium else model
    lines = [
        (
            f"bench_sampler: model={name} device={device} dtype={backend.dtype} "
            f"prompts={args.prompts} group={args.group} max_tokens={args.tokens} repeats={args.repeats}"
        ),
        (
            f"host: {platform.node()} {platform.processor() or platform.machine()} torch={torch.__version__} "
            f"threads={torch.get_num_threads()}"
            + (f" gpu={torch.cuda.get_device_name(device)}" if device.type == "cuda" else "")
        ),
        (
            f"prompt tokens: {[len(i) for i in ids_P]}; completion tokens with eos: "
            f"mean {sum(tokens) / len(tokens):.1f} of {args.tokens}; model load {load_s:.1f} s"
        ),
        f"{'variant':<28}{'min s':>9}{'median s':>10}",
    ]
    for row, times in results.items():
        lines.append(f"{row:<28}{min(times):>9.3f}{statistics.median(times):>10.3f}")
    fixed_gain = min(results["naive prefill, fixed"]) / min(results["shared prefill, fixed"])
    lines.append(f"shared vs naive prefill at equal decode work: {fixed_gain:.2f}x faster")
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
