"""The quickstart as a user runs it (`retrain`, no arguments): wall time, held-out curve, peak RSS.

    python benchmarks/bench_quickstart.py                      # dtype as `auto` decides on this host
    python benchmarks/bench_quickstart.py --dtype float32      # force fp32 (what a CPU without bf16 runs)

Runs `python -m retrain` in a fresh temporary directory (so logs/quickstart is new) after waiting for
a quiet machine, and records how much CPU other processes used meanwhile (a quiet run has ~0).
The model conversion must already be cached (run `retrain` once), as in the README's timing.
Results: benchmarks/results/quickstart[_<dtype>].json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import quiet


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="", help="force [backend] dtype (default: the quickstart's own, auto)")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    overrides = ["--backend.dtype", args.dtype] if args.dtype else []
    out = Path(args.out or results_path(args.dtype))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryDirectory() as tmp:
        wait = quiet.wait_quiet("quickstart")
        with quiet.Window() as w:
            proc = subprocess.run(
                [sys.executable, "-m", "retrain", *overrides],
                cwd=tmp,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
            return 1
        run = Path(tmp) / "logs" / "quickstart"
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        evals = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
        info = json.loads((run / "run.json").read_text())
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    dtype_line = next((line for line in proc.stderr.splitlines() if "bf16" in line), "")
    curve = [(e["after_step"], e["eval_correct_rate"]) for e in evals]
    res = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "wall_s": round(w.wall, 1),
        "window": w.record(),
        "wait": wait,
        "others_cores_during_run": round(w.others_cpu_s / w.wall, 2),
        "peak_rss_mb": round(peak_mb, 1),
        "dtype": args.dtype or "auto",
        "dtype_message": dtype_line,
        "versions": info.get("versions"),
        "eval_curve": curve,
        "eval_gain": round(curve[-1][1] - curve[0][1], 3),
        "correct_rate_first10": round(statistics.mean(r["correct_rate"] for r in rows[:10]), 3),
        "correct_rate_last10": round(statistics.mean(r["correct_rate"] for r in rows[-10:]), 3),
        "median_step_s": round(statistics.median(r["step_time_s"] for r in rows), 2),
        "median_sample_s": round(statistics.median(r["sample_time_s"] for r in rows), 2),
        "median_train_s": round(statistics.median(r["train_time_s"] for r in rows), 2),
        "eval_time_s": round(sum(e["eval_time_s"] for e in evals), 1),
        "sampler_train_kl_mean": statistics.mean(
            r["sampler_train_kl"] for r in rows if r["sampler_train_kl"] is not None
        ),
        "steps": len(rows),
    }
    md = (
        f"# quickstart ({res['dtype']}), {res['when']}\n\n"
        f"wall {res['wall_s']} s (other processes used {res['others_cores_during_run']} cores meanwhile), "
        f"peak RSS {peak_mb / 1024:.2f} GB, {res['steps']} steps; median step {res['median_step_s']} s "
        f"(sample {res['median_sample_s']} s, train {res['median_train_s']} s), evals {res['eval_time_s']} s.\n\n"
        f"held-out accuracy after steps {', '.join(str(s) for s, _ in curve)}: "
        f"{', '.join(f'{a:.3f}' for _, a in curve)} (gain {res['eval_gain']:+.3f}); training correct_rate "
        f"{res['correct_rate_first10']:.1%} (first 10 steps) → {res['correct_rate_last10']:.1%} (last 10); "
        f"mean sampler_train_kl {res['sampler_train_kl_mean']:.2e}.\n{dtype_line}\n"
    )
    print(md)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    out.with_suffix(".md").write_text(md)
    return 0


def results_path(dtype: str) -> Path:
    return HERE / "results" / (f"quickstart_{dtype}" if dtype else "quickstart")


if __name__ == "__main__":
    sys.exit(main())
