"""Where a step of the side-by-side workload spends its time: torch.profiler's top operators.

    python benchmarks/profile_step.py                         # fp32, 2 threads, ~1 min on a quiet 2-core box
    python benchmarks/profile_step.py --dtype auto --threads 2

Runs the workload of bench_vs_trl.py (side_workload.py) through `retrain.run.run_one_step`: one
warm-up step, then `--steps` profiled steps; writes the operators sorted by self CPU time, and the
sample/train split, to benchmarks/results/perf_profile[_<dtype>].txt. Shares are what to read (a
busy machine slows every operator); the machine's load during the run is written at the top.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_vs_trl as B
import quiet
import side_workload as W


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2, help="profiled steps after one warm-up")
    ap.add_argument("--rows", type=int, default=30, help="operators listed")
    args = ap.parse_args(argv)
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(args.threads)
    from retrain.run import build_components, run_one_step

    suffix = "" if args.dtype == "float32" else f"_{args.dtype}"
    out = HERE / "results" / f"perf_profile{suffix}.txt"
    with tempfile.TemporaryDirectory() as tmp:
        cfg = B.side_config(Path(tmp), args.steps + 1, args.dtype)
        c = build_components(cfg)
        run_one_step(cfg, c, 0)  # warm-up
        rows = []
        quiet.wait_quiet("profile")
        with quiet.Window() as w, profile(activities=[ProfilerActivity.CPU]) as prof:
            for step in range(1, args.steps + 1):
                row, _ = run_one_step(cfg, c, step)
                rows.append(row)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows)
    head = (
        f"# torch.profiler, side-by-side workload ({W.N_PROMPTS}x{W.GROUP}x{W.MAX_TOKENS}), dtype {args.dtype}, "
        f"{args.threads} threads, {args.steps} steps, {time.strftime('%Y-%m-%d %H:%M')}\n"
        f"# other processes used {w.others_cpu_s / w.wall:.2f} cores during the profile "
        f"({'contended' if w.contended else 'quiet'}); load average {os.getloadavg()[0]:.1f}\n"
    )
    for r in rows:
        head += (
            f"# step {r['step']}: {r['step_time_s']:.2f} s (sample {r['sample_time_s']:.2f} s, "
            f"train {r['train_time_s']:.2f} s), {r['mean_completion_tokens']:.1f} tokens/completion\n"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(head + "\n" + table + "\n")
    print(head + "\n" + table)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
