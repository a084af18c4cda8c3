"""Wall time and per-condition results of examples/ablation_cpu.toml (docs/cpu_task.md).

    python benchmarks/bench_ablation_cpu.py                       # runs the campaign, then summarises
    python benchmarks/bench_ablation_cpu.py --summarize logs/campaign_X   # an existing campaign only

Runs the example under `logs/bench_ablation_cpu/`, times it, runs `retrain plot` and `retrain report`
on it and prints: the load average before and after (the numbers mean little on a shared machine),
the wall time, a per-condition table (training correct rate, held-out accuracy before and after,
planning-token fraction, planning/execution entropy, SEPA's last λ) and, for every pair of conditions
with the same seed, how many steps logged identical non-timing metrics: only the first steps before
any group had a correct completion may be (same seed, same samples, nothing to train on); after the
first update the conditions must differ. Append the output to benchmarks/results/ablation_cpu.txt with the machine's name.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ablation_cpu.toml"
TIMING_KEYS = ("time", "_s", "timestamp", "throughput", "per_second")  # wall-clock values differ between any two runs


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def load_campaign(campaign: Path) -> dict[str, list[dict]]:
    """condition → its runs: seed, wall seconds, metrics rows, eval rows."""
    runs: dict[str, list[dict]] = {}
    for run_dir in sorted((campaign / "runs").iterdir()):
        if not (run_dir / "run.json").exists():  # not started yet
            continue
        info = json.loads((run_dir / "run.json").read_text())
        start, end = info.get("started_at"), info.get("finished_at")
        wall = (
            (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()
            if start and end
            else None
        )
        runs.setdefault(info["condition"], []).append(
            {
                "seed": info["seed"],
                "wall": wall,
                "metrics": _rows(run_dir / "metrics.jsonl"),
                "eval": _rows(run_dir / "eval.jsonl"),
            }
        )
    return runs


def summary_table(runs: dict[str, list[dict]]) -> str:
    lines = [
        (
            "| condition | wall s/run | train correct_rate, first → last step | held-out before → after "
            "| planning_token_fraction | plan_entropy_mean | exec_entropy_mean | sepa_lambda (last step) |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for condition, rs in runs.items():

        def over_steps(key: str, rs=rs) -> float | None:
            return _mean(_mean(m.get(key) for m in r["metrics"]) for r in rs)

        first = _mean(r["metrics"][0]["correct_rate"] for r in rs if r["metrics"])
        last = _mean(r["metrics"][-1]["correct_rate"] for r in rs if r["metrics"])
        before = _mean(r["eval"][0]["eval_correct_rate"] for r in rs if r["eval"])
        after = _mean(r["eval"][-1]["eval_correct_rate"] for r in rs if len(r["eval"]) > 1)
        lam = _mean(r["metrics"][-1].get("sepa_lambda") for r in rs if r["metrics"])
        lines.append(
            f"| {condition} | {_fmt(_mean(r['wall'] for r in rs), 0)} | {_fmt(first, 2)} → {_fmt(last, 2)} "
            f"| {_fmt(before, 2)} → {_fmt(after, 2)} | {_fmt(over_steps('planning_token_fraction'))} "
            f"| {_fmt(over_steps('plan_entropy_mean'))} | {_fmt(over_steps('exec_entropy_mean'))} | {_fmt(lam, 2)} |"
        )
    return "\n".join(lines)


def identical_steps(runs: dict[str, list[dict]]) -> str:
    """Per pair of conditions and seed: steps whose non-timing metrics are all equal."""

    def strip(row: dict) -> dict:
        return {k: v for k, v in row.items() if k != "condition" and not any(t in k for t in TIMING_KEYS)}

    out = []
    for (a, ra), (b, rb) in itertools.combinations(runs.items(), 2):
        for x in ra:
            for y in rb:
                if x["seed"] != y["seed"]:
                    continue
                pairs = list(zip(x["metrics"], y["metrics"], strict=False))  # a run may have stopped early
                same = sum(strip(p) == strip(q) for p, q in pairs)
                out.append(
                    f"{a} vs {b} (seed {x['seed']}): {same}/{len(pairs)} steps with identical non-timing metrics"
                )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summarize", metavar="CAMPAIGN", help="summarise an existing campaign; run nothing")
    args = ap.parse_args()
    retrain = [sys.executable, "-m", "retrain"]
    if args.summarize:
        campaign = Path(args.summarize)
    else:
        log_root = ROOT / "logs" / "bench_ablation_cpu"
        before = set(log_root.glob("campaign_*")) if log_root.exists() else set()
        print("load before:", os.getloadavg(), flush=True)
        t0 = time.perf_counter()
        subprocess.run([*retrain, str(EXAMPLE), "--campaign.log_root", str(log_root)], check=True)
        wall = time.perf_counter() - t0
        print("load after:", os.getloadavg())
        print(f"campaign wall time: {wall:.0f} s ({wall / 60:.1f} min)")
        (campaign,) = set(log_root.glob("campaign_*")) - before
        t1 = time.perf_counter()
        subprocess.run([*retrain, "plot", str(campaign)], check=True)
        subprocess.run([*retrain, "report", str(campaign)], check=True)
        print(f"plot + report: {time.perf_counter() - t1:.1f} s")
    runs = load_campaign(campaign)
    print(f"campaign: {campaign}")
    print(summary_table(runs))
    print(identical_steps(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
