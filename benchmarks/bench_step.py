"""Per-phase time of one RL step at the quickstart settings (sample / score / advantages / train / log).

Runs a short real run through `retrain.run.train` (eval off) and reports the median of each phase
over the steps after the first (which pays one-time costs). Run by hand, not in the test suite:

    python benchmarks/bench_step.py                          # SmolLM2-135M on this machine
    python benchmarks/bench_step.py --model tiny-random --steps 5
    python benchmarks/bench_step.py --device cuda --out benchmarks/results/step_cuda.txt

Timing on a shared 2-core VM swings by ±15% or more (measured when other processes run): compare numbers
taken in the same session only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

PHASES = ["sample_time_s", "score_time_s", "advantage_time_s", "train_time_s"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)

    from retrain import logs
    from retrain.config import quickstart_config
    from retrain.run import train

    log_times = _time_sinks(logs)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = quickstart_config().with_overrides(
            {
                "model.name": args.model,
                "training.max_steps": args.steps,
                "training.batch_size": args.batch_size,
                "training.group_size": args.group_size,
                "training.max_tokens": args.max_tokens,
                "training.save_every": 0,
                "eval.every": 0,
                "backend.device": args.device,
                "logging.log_dir": str(Path(tmp) / "run"),
            }
        )
        t0 = time.perf_counter()
        assert train(cfg) == 0
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
        info = json.loads((Path(tmp) / "run" / "run.json").read_text())

    timed = rows[1:] if len(rows) > 1 else rows
    med = {k: statistics.median(r[k] for r in timed) for k in PHASES + ["step_time_s", "tokens_per_second"]}
    med["rest_s"] = statistics.median(r["step_time_s"] - sum(r[k] for k in PHASES) for r in timed)
    med["log_s"] = statistics.median(log_times[1:] or log_times)
    lines = [
        f"bench_step: model={args.model} device={args.device} batch={args.batch_size} group={args.group_size} "
        f"max_tokens={args.max_tokens} steps={args.steps} (median of steps 1..{len(rows) - 1})",
        f"versions: {json.dumps(info['versions'])}",
        f"total wall (incl. model load): {wall:.1f} s",
        *(f"  {k:<18} {med[k]:8.3f} s" for k in PHASES + ["log_s", "rest_s", "step_time_s"]),
        "  (log_s: JSONL + console sinks, outside step_time_s; rest_s: data, controllers, bookkeeping)",
        f"  tokens/s           {med['tokens_per_second']:8.1f}",
        f"  completion tokens/completion (mean over steps): "
        f"{statistics.mean(r['mean_completion_tokens'] for r in rows):.1f}",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


def _time_sinks(logs) -> list[float]:
    """Wrap the JSONL and console sinks so each step's log time is measured without touching run.py."""
    times: list[float] = []
    per_step: dict[int, float] = {}
    for cls in (logs.JsonlSink, logs.ConsoleSink):
        original = cls.log_step

        def timed(self, row, generations, _original=original):
            t = time.perf_counter()
            _original(self, row, generations)
            per_step[row["step"]] = per_step.get(row["step"], 0.0) + time.perf_counter() - t
            if isinstance(self, logs.ConsoleSink):  # the last sink of a step
                times.append(per_step.pop(row["step"]))

        cls.log_step = timed
    return times


if __name__ == "__main__":
    sys.exit(main())
