"""Benchmark: `retrain compare` on 80 runs × 500 steps with 20000 resamples (target < 2 s).

Writes a synthetic campaign (40 seeds × 2 conditions, every metrics field, emergence/steps.jsonl)
to a temp dir, then times, separately and end to end:
  load     reading + parsing the 80 run dirs (metrics.jsonl and emergence/steps.jsonl)
  stats    compare_arms: both metrics, paired sign-flip + permutation + bootstrap (Monte Carlo, 20000 each),
           Fisher with design effect, sample sizes
  cli      the `compare` verb in-process (load + stats + console table + JSON + markdown)
for a paired campaign (same 40 seeds in both arms) and an unpaired one (different seeds).

    python benchmarks/bench_compare.py            # writes benchmarks/results/compare.txt
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the analysis test fixtures write run dirs in the trainer's layout

from fixtures_analysis import write_run  # noqa: E402

from retrain.analysis.cli import add_compare_arguments, run_compare  # noqa: E402
from retrain.analysis.load import resolve_arm  # noqa: E402
from retrain.analysis.significance import compare_arms  # noqa: E402


def make_campaign(root: Path, seeds_per_arm: int, steps: int, paired: bool) -> tuple[str, str]:
    for i in range(seeds_per_arm):
        write_run(root / f"maxrl+gtpo_hicra_s{i}", condition="maxrl+gtpo_hicra", seed=i, num_steps=steps, rng_seed=i)
        cand_seed = i if paired else 1000 + i
        write_run(
            root / f"maxrl+gtpo_sepa_s{cand_seed}",
            condition="maxrl+gtpo_sepa",
            seed=cand_seed,
            num_steps=steps,
            lift=0.01,
            rng_seed=10_000 + i,
        )
    return str(root / "maxrl+gtpo_hicra_s*"), str(root / "maxrl+gtpo_sepa_s*")


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench(paired: bool, tmp: Path, repeats: int, resamples: int) -> list[str]:
    base_glob, cand_glob = make_campaign(tmp / ("paired" if paired else "unpaired"), 40, 500, paired)
    t_load, (base, cand) = timed(lambda: (resolve_arm([base_glob]), resolve_arm([cand_glob])), repeats)
    t_stats, res = timed(lambda: compare_arms(base, cand, resamples=resamples, seed=0), repeats)
    parser = argparse.ArgumentParser()
    add_compare_arguments(parser)
    args = parser.parse_args(
        [
            "--baseline",
            base_glob,
            "--candidate",
            cand_glob,
            "--resamples",
            str(resamples),
            "--output",
            str(tmp / "out.json"),
            "--markdown",
            str(tmp / "out.md"),
        ]
    )
    devnull = open(os.devnull, "w")  # noqa: SIM115
    stdout, sys.stdout = sys.stdout, devnull
    try:
        t_cli, _ = timed(lambda: run_compare(args), repeats)
    finally:
        sys.stdout = stdout
        devnull.close()
    cr = res["seed_level"]["correct_rate"]
    label = "paired (40 shared seeds)" if paired else "unpaired (40 + 40 seeds)"
    return [
        f"{label}: {len(base) + len(cand)} runs x {base[0].num_steps} steps, resamples {resamples}",
        f"  load  {t_load:6.3f} s   stats {t_stats:6.3f} s   cli end-to-end {t_cli:6.3f} s   (median of {repeats})",
        f"  correct_rate: {cr['test']} ({cr['method']}), p={cr['p_value']:.4g}, "
        f"CI [{cr['ci_low']:+.4f}, {cr['ci_high']:+.4f}], verdict {cr['recommendation']}",
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--resamples", type=int, default=20000)
    ap.add_argument("--out", default=str(HERE / "results" / "compare.txt"))
    a = ap.parse_args()
    lines = [
        f"bench_compare: {time.strftime('%Y-%m-%d %H:%M:%S')}, python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f})"
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for paired in (True, False):
            lines += bench(paired, Path(tmp), a.repeats, a.resamples)
    text = "\n".join(lines) + "\n"
    print(text, end="")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
