"""What pipelining buys the tinker backend: a training step's three requests sent together vs one by one.

Uses the in-process stand-in service (tests/tinker_standin.py, the tiny random model) with a
simulated network round trip added to every answer, and times, per step:

- pipelined: `TinkerBackend.train_step` (forward_backward, optim_step and the weight export are all
  sent before the first answer is awaited: one round trip);
- sequential: the same three SDK calls, each awaited before the next is sent (three round trips);
- sampling: `TinkerBackend.sample` for batch_size prompts (every request out before the first wait).

Run by hand (not in the test suite); results in benchmarks/results/tinker_pipeline.txt:

    python benchmarks/bench_tinker_pipeline.py --latency 0.2 --steps 5

Timing on a shared 2-core VM swings by ±15% or more: compare numbers from the same session only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]
os.environ.setdefault("TINKER_API_KEY", "tml-benchmark")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.2, help="simulated round trip, seconds")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)

    import tinker
    from tinker_standin import StandInService

    from retrain.backends.base import Datum, SamplingParams
    from retrain.backends.tinker import (
        ADAM_BETA1,
        ADAM_BETA2,
        ADAM_EPS,
        LOSS_FN,
        TinkerBackend,
        to_tinker_datum,
    )

    service = StandInService({"tiny-random": "tiny-random"}, latency_s=args.latency)
    backend = TinkerBackend(
        service.sdk_clients().service(),
        base_model="tiny-random",
        lora_rank=4,
        lora={"train_attn": True, "train_mlp": False, "train_unembed": True},
        seed=0,
    )
    prompts = [f"What is {i} + {i}?" for i in range(args.batch_size)]
    params = SamplingParams(max_tokens=8, temperature=1.0)
    backend.sample(prompts[:1], 1, params)  # warm up: the training client, tokenizer, first export

    times = {"sample": [], "train_pipelined": [], "train_sequential": []}
    for step in range(args.steps):
        t0 = time.perf_counter()
        groups = backend.sample(prompts, args.group_size, SamplingParams(max_tokens=8, temperature=1.0, seed=step))
        times["sample"].append(time.perf_counter() - t0)
        datums = [
            Datum(c.prompt_ids, c.token_ids, c.logprobs, [(-1.0) ** i] * len(c.token_ids))
            for g in groups
            for i, c in enumerate(g)
        ]
        t0 = time.perf_counter()
        backend.train_step(datums, lr=1e-3)
        times["train_pipelined"].append(time.perf_counter() - t0)
        training = service.training_clients[-1]
        data = [to_tinker_datum(tinker.types, d, 1 / sum(len(x.completion_ids) for x in datums)) for d in datums]
        adam = tinker.types.AdamParams(learning_rate=1e-3, beta1=ADAM_BETA1, beta2=ADAM_BETA2, eps=ADAM_EPS)
        t0 = time.perf_counter()
        training.forward_backward(data, LOSS_FN).result()
        training.optim_step(adam).result()
        training.save_weights_and_get_sampling_client().result()
        times["train_sequential"].append(time.perf_counter() - t0)

    lines = [
        (
            f"tinker backend on the stand-in service, simulated round trip {args.latency:.3f} s, "
            f"{args.batch_size} prompts x {args.group_size} samples, median of {args.steps} steps (s):"
        )
    ]
    for name, values in times.items():
        lines.append(f"  {name:<17} {statistics.median(values):.3f}")
    saved = statistics.median(times["train_sequential"]) - statistics.median(times["train_pipelined"])
    lines.append(f"  pipelining saves {saved:.3f} s per training step ({saved / args.latency:.1f} round trips)")
    if hasattr(os, "getloadavg"):
        lines.append(f"  (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs while measuring)")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
