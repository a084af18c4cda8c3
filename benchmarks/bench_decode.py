"""Decode throughput of the in-process sampler: growing cache vs preallocated cache vs CUDA graph, and
HF `generate`, on random models of real shapes (no download).

    python benchmarks/bench_decode.py --arch smollm2 --prompts 8 --group 16 --tokens 256     # on a GPU
    python benchmarks/bench_decode.py --arch qwen3-0.6b --prompts 8 --group 16 --tokens 1024
    python benchmarks/bench_decode.py --arch tiny --device cpu --tokens 16 --repeats 1        # smoke test

Rows (same prompts, `--prompts` × `--group` rows, exactly `--tokens` new tokens each: no stop token,
so every variant does the same work; LoRA r16 on the 7 projections, unmerged, as during training):
- dynamic: `sample_groups` with transformers' DynamicCache (the loop before the fast path);
- static: the preallocated KV cache (retrain.backends.decode.StaticDecode), eager;
- static+graph: the same step captured in a CUDA graph (CUDA only; what the local backend uses on CUDA);
- hf generate: `model.generate(do_sample=True)` over the prompts repeated `--group` times.
tok/s counts generated tokens (rows × tokens) over wall seconds, best of `--repeats`. The greedy
completions of static+graph are compared with dynamic's (bf16 can legitimately flip near-ties).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ARCHS = {
    # SmolLM2-135M-Instruct's config (Llama), random weights.
    "smollm2": (
        "llama",
        {
            "vocab_size": 49152,
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "max_position_embeddings": 8192,
            "rope_theta": 100000.0,
            "tie_word_embeddings": True,
            "rms_norm_eps": 1e-5,
        },
    ),
    # Qwen3-0.6B's config, random weights.
    "qwen3-0.6b": (
        "qwen3",
        {
            "vocab_size": 151936,
            "hidden_size": 1024,
            "intermediate_size": 3072,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "max_position_embeddings": 40960,
            "rope_theta": 1000000.0,
            "tie_word_embeddings": True,
            "rms_norm_eps": 1e-6,
        },
    ),
    "tiny": (
        "llama",
        {
            "vocab_size": 512,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "tie_word_embeddings": True,
        },
    ),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build(arch: str, device, dtype):
    from peft import LoraConfig, get_peft_model
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    kind, kw = ARCHS[arch]
    config = (LlamaConfig if kind == "llama" else Qwen3Config)(**kw, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    model = (LlamaForCausalLM if kind == "llama" else Qwen3ForCausalLM)(config).to(dtype)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS, task_type="CAUSAL_LM"))
    return model.to(device).eval()


def main(argv=None) -> int:
    from retrain.backends.sampler import sample_groups

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=sorted(ARCHS), default="smollm2")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-generate", action="store_true")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    model = build(args.arch, device, dtype)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1, vocab, (args.prompt_len,), generator=gen).tolist() for _ in range(args.prompts)]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def loop(static: bool, graph: bool, greedy: bool = False, seed: int = 0, tokens: int | None = None):
        return sample_groups(
            model,
            prompts,
            args.group,
            max_tokens=tokens or args.tokens,
            temperature=1.0,
            top_p=1.0,
            greedy=greedy,
            want_entropy=False,
            generator=torch.Generator(device=device).manual_seed(seed),
            stop_ids={-1},
            pad_id=0,
            device=device,
            static_cache=static,
            cuda_graph=graph,
        )

    def generate(tokens: int | None = None):
        ids = torch.tensor(prompts, device=device).repeat_interleave(args.group, dim=0)
        with torch.inference_mode():
            model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                top_k=0,
                max_new_tokens=tokens or args.tokens,
                min_new_tokens=tokens or args.tokens,
                pad_token_id=0,
            )

    variants = {
        "dynamic": lambda tokens=None: loop(False, False, tokens=tokens),
        "static": lambda tokens=None: loop(True, False, tokens=tokens),
    }
    if device.type == "cuda":
        variants["static+graph"] = lambda tokens=None: loop(True, True, tokens=tokens)
    if not args.skip_generate:
        variants["hf generate"] = generate
    rows_total = args.prompts * args.group
    times: dict[str, float] = {}
    for name, fn in variants.items():
        fn(tokens=min(args.tokens, 16))  # warm-up: kernels, allocator (a short run is enough)
        best = float("inf")
        for _ in range(args.repeats):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            best = min(best, time.perf_counter() - t0)
        times[name] = best
        print(f"{name:>14}: {best:8.2f} s  {rows_total * args.tokens / best:10.0f} tok/s", flush=True)
    check = {}
    fast = "static+graph" if "static+graph" in variants else "static"
    a = loop(False, False, greedy=True)
    b = loop(True, fast == "static+graph", greedy=True)
    pairs = [(x.token_ids, y.token_ids) for ga, gb in zip(a, b, strict=True) for x, y in zip(ga, gb, strict=True)]
    check = {
        "greedy_rows_identical": sum(x == y for x, y in pairs),
        "rows": len(pairs),
        "first_divergence_mean": sum(
            next((i for i, (u, v) in enumerate(zip(x, y, strict=True)) if u != v), len(x)) for x, y in pairs
        )
        / len(pairs),
    }
    print(
        f"greedy {fast} vs dynamic: {check['greedy_rows_identical']}/{check['rows']} rows identical "
        f"(mean first divergence at token {check['first_divergence_mean']:.0f} of {args.tokens})"
    )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    result = {
        "arch": args.arch,
        "device": name,
        "dtype": str(dtype),
        "prompts": args.prompts,
        "group": args.group,
        "tokens": args.tokens,
        "prompt_len": args.prompt_len,
        "torch": torch.__version__,
        "seconds": times,
        "tok_per_s": {k: rows_total * args.tokens / v for k, v in times.items()},
        "speedup_vs_dynamic": {k: times["dynamic"] / v for k, v in times.items()},
        "greedy_check": check,
    }
    print(json.dumps(result["speedup_vs_dynamic"]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
