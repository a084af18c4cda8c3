"""Sampling engines side by side: the in-process sampler ("hf") vs a vLLM server ("openai").

One invocation, the same workload for both: a real run (`retrain.run.train`, eval off) per engine
with the same model, prompts, batch, group size, max_tokens and a dense reward (so both train on
the same number of datums); the first step of each (one-time
costs: vLLM's first-request warm-up, allocator growth) is dropped and the median of the rest is
reported. tok/s = completion tokens sampled / sample time; step time = sample + score + train (+ the
adapter sync after each optimizer step for the server engine, also shown on its own).

    python benchmarks/bench_engine.py                         # SmolLM2-135M, launches vLLM from .venv-vllm
    python benchmarks/bench_engine.py --url http://127.0.0.1:8000/v1 --served-model smollm2-135m
    python benchmarks/bench_engine.py --model Qwen/Qwen3-0.6B --device cuda --batch-size 8 --group-size 16 \\
        --max-tokens 512 --out benchmarks/results/engine_cuda.txt  # GPU machine: `pip install vllm` there

Launch mode starts `python -m vllm.entrypoints.openai.api_server` with $RETRAIN_VLLM_PYTHON (default
.venv-vllm/bin/python; `bash scripts/setup_vllm.sh`). Its startup time is reported separately, not
in the step times. Timing on a shared 2-core VM swings by 3x: compare numbers from one invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def digit_share(completion: str, reference: str) -> float:
    """A dense reward (share of digit characters): every group is informative, so both engines train
    on the same number of datums each step and their train times compare."""
    return sum(ch.isdigit() for ch in completion) / len(completion) if completion else 0.0


def run_engine(base_overrides: dict, engine: dict, log_dir: Path) -> tuple[list[dict], float]:
    from retrain.config import quickstart_config
    from retrain.run import train

    cfg = quickstart_config().with_overrides({**base_overrides, **engine, "logging.log_dir": str(log_dir)})
    t0 = time.perf_counter()
    assert train(cfg) == 0, f"the {engine.get('inference.engine', 'hf')} run failed; see {log_dir}"
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return rows, wall


def summarize(rows: list[dict], batch: int, group: int) -> dict:
    timed = rows[1:] or rows  # drop the first step (one-time costs)
    med = lambda key: statistics.median(r[key] or 0.0 for r in timed)  # noqa: E731
    tokens = statistics.median(r["mean_completion_tokens"] * batch * group for r in timed)
    return {
        "steps_timed": len(timed),
        "completion_tokens": tokens,
        "sample_s": med("sample_time_s"),
        "tok_per_s": statistics.median(r["mean_completion_tokens"] * batch * group / r["sample_time_s"] for r in timed),
        "train_s": med("train_time_s"),
        "step_s": med("step_time_s"),
        "sync_s": med("weight_sync_time_s") if "weight_sync_time_s" in timed[0] else None,
        "sampler_train_kl": statistics.median(
            abs(r["sampler_train_kl"]) for r in timed if r["sampler_train_kl"] is not None
        )
        if any(r["sampler_train_kl"] is not None for r in timed)
        else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=4, help="steps per engine; the first is not timed")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--lora-rank", type=int, default=16)
    ap.add_argument("--url", default="", help="use this running server instead of launching one")
    ap.add_argument("--served-model", default="", help="with --url: the name it serves")
    ap.add_argument("--python", default="", help="launch: interpreter with vLLM (default $RETRAIN_VLLM_PYTHON)")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)

    base = {
        "model.name": args.model,
        "model.lora_rank": args.lora_rank,
        "training.max_steps": args.steps,
        "training.batch_size": args.batch_size,
        "training.group_size": args.group_size,
        "training.max_tokens": args.max_tokens,
        "training.save_every": 0,
        "eval.every": 0,
        "backend.device": args.device,
        "reward.type": "custom",
        "reward.custom": "bench_engine:digit_share",
    }
    sys.path.insert(0, str(Path(__file__).parent))  # the reward above, by its plugin path
    openai = {"inference.engine": "openai"}
    if args.url:
        openai.update({"inference.url": args.url, "inference.served_model": args.served_model})
    else:
        openai.update(
            {
                "inference.launch": True,
                "inference.python": args.python,
                "inference.server_args": ["--max-model-len", str(args.max_tokens + 1024)],
            }
        )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        rows, _ = run_engine(base, {"inference.engine": "hf"}, Path(tmp) / "hf")
        results["hf (in-process)"] = summarize(rows, args.batch_size, args.group_size)
        rows, wall = run_engine(base, openai, Path(tmp) / "openai")
        results["openai (vLLM)"] = summarize(rows, args.batch_size, args.group_size)
        startup = None
        log = Path(tmp) / "openai" / "vllm_server.log"
        if log.exists():
            startup = wall - sum(r["step_time_s"] for r in rows)  # launch + model load + checks + close

    lines = [
        f"# bench_engine: {args.model}, {args.batch_size} prompts x {args.group_size} completions, "
        f"max_tokens {args.max_tokens}, LoRA r{args.lora_rank}, {args.steps} steps per engine (first not timed)",
        f"# machine: {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load average {os.getloadavg()[0]:.1f}; "
        f"server: {'--url ' + args.url if args.url else 'launched'}",
        f"{'engine':<18} {'tok/s':>8} {'sample s':>9} {'sync s':>7} {'train s':>8} {'step s':>7} "
        f"{'tokens/step':>11} {'|sampler_train_kl|':>19}",
    ]
    for name, r in results.items():
        sync = f"{r['sync_s']:.2f}" if r["sync_s"] is not None else "-"
        kl = f"{r['sampler_train_kl']:.1e}" if r["sampler_train_kl"] is not None else "-"
        lines.append(
            f"{name:<18} {r['tok_per_s']:>8.1f} {r['sample_s']:>9.2f} {sync:>7} {r['train_s']:>8.2f} "
            f"{r['step_s']:>7.2f} {r['completion_tokens']:>11.0f} {kl:>19}"
        )
    if startup is not None:
        lines.append(f"# launched server: {startup:.0f} s outside the timed steps (start, health, checks, stop)")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
