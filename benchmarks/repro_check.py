"""What changes a CPU run's floats: thread count, run-time thread adaptation, load. Evidence, not a test.

Part 1 (a minute): products of the shapes SmolLM2-135M multiplies (rows × 576 × {192, 576, 1536, 49152},
rows 1-16 as a decode batch shrinks), each in a fresh process: 2 threads repeated (does load alone
change anything?), 1 vs 2 threads, and with
OMP_DYNAMIC=TRUE (GNU OpenMP then uses CPUs − 15-minute load average threads) without and with
`retrain.backends.determinism.configure_threads`. The load average is printed: OMP_DYNAMIC only bites
on a machine whose 15-minute load is ≥ 1.

Part 2 (minutes, `--steps N` > 0): the quickstart for N steps, eval off, three times: as is; with two
CPU-burning processes beside it and OMP_DYNAMIC=TRUE, MKL_DYNAMIC=TRUE; and with one thread. Prints the
first step (and metric) where each differs from the first run.

    python benchmarks/repro_check.py                       # part 1 only
    python benchmarks/repro_check.py --steps 6 --out benchmarks/results/repro.txt
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GEMMS = """
import hashlib, json, sys, torch
if sys.argv[1] == "configured":
    from retrain.backends.determinism import configure_threads
    configure_threads(2)
elif sys.argv[1] != "default":
    torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
out, varied = {}, 0
for rows in range(1, 17):
    for n in (192, 576, 1536, 49152):
        a, b = torch.randn(rows, 576), torch.randn(576, n)
        seen = {hashlib.sha256((a @ b).numpy().tobytes()).hexdigest()[:12] for _ in range(int(sys.argv[2]))}
        varied += len(seen) > 1
        out[f"{rows}x576x{n}"] = min(seen)
out["varied"] = varied
print(json.dumps(out))
"""
BURN = "import time\nend = time.time() + 3600\nwhile time.time() < end:\n    pass\n"


def gemm_hashes(mode: str, env: dict, repeats: int = 1) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", GEMMS, mode, str(repeats)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def part1(lines: list[str], repeats: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("OMP_DYNAMIC", None)
    env.pop("OMP_NUM_THREADS", None)
    load = os.getloadavg()
    one, two = gemm_hashes("1", env), gemm_hashes("2", env, repeats)
    lines.append(
        f"2 threads, each product {repeats} times in one process: {two.pop('varied')} shapes gave more "
        f"than one result (load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} for 1/5/15 min, "
        f"{os.cpu_count()} CPUs)"
    )
    one.pop("varied")
    differ = sorted({k.split("x")[0] for k in one if one[k] != two[k]}, key=int)
    lines.append(
        f"1 vs 2 threads: products with these row counts differ: {', '.join(differ) or 'none'} "
        f"({sum(one[k] != two[k] for k in one)} of {len(one)} shapes)"
    )
    dyn = {**env, "OMP_DYNAMIC": "TRUE"}
    load = os.getloadavg()
    plain_dyn, fixed_dyn = gemm_hashes("default", dyn), gemm_hashes("configured", dyn)
    plain_dyn.pop("varied"), fixed_dyn.pop("varied")
    lines.append(f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min), {os.cpu_count()} CPUs")
    lines.append(
        f"OMP_DYNAMIC=TRUE, as is: {sum(plain_dyn[k] != two[k] for k in two)} shapes differ from 2 threads, "
        f"{sum(plain_dyn[k] != one[k] for k in one)} from 1 thread"
    )
    lines.append(
        f"OMP_DYNAMIC=TRUE, configure_threads(2): {sum(fixed_dyn[k] != two[k] for k in two)} shapes differ "
        "from 2 threads"
    )


def quickstart(log_dir: Path, steps: int, env: dict, extra: list[str]) -> list[dict]:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "retrain",
            "--max-steps",
            str(steps),
            "--eval.every",
            "0",
            "--logging.log_dir",
            str(log_dir),
            *extra,
        ],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]


def first_difference(a: list[dict], b: list[dict]) -> str:
    sys.path.insert(0, str(ROOT / "src"))
    from retrain.run import TIMING_KEYS

    for ra, rb in zip(a, b, strict=True):
        diff = sorted(k for k in ra if k not in TIMING_KEYS and not k.startswith("bp_") and ra.get(k) != rb.get(k))
        if diff:
            return f"first differs at step {ra['step']} ({', '.join(diff[:4])})"
    return f"identical on every non-timing metric for {len(a)} steps"


def part2(lines: list[str], steps: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        base = quickstart(Path(tmp) / "a", steps, env, ["--backend.num_threads", "2"])
        lines.append(f"quickstart x {steps} steps, 2 threads: {time.time() - t0:.0f} s")
        burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(2)]
        try:
            t0 = time.time()
            loaded = quickstart(
                Path(tmp) / "b",
                steps,
                {**env, "OMP_DYNAMIC": "TRUE", "MKL_DYNAMIC": "TRUE"},
                ["--backend.num_threads", "2"],
            )
            lines.append(
                f"  + 2 CPU burners, OMP_DYNAMIC=TRUE, MKL_DYNAMIC=TRUE ({time.time() - t0:.0f} s): "
                + first_difference(base, loaded)
            )
        finally:
            for b in burners:
                b.kill()
        one = quickstart(Path(tmp) / "c", steps, env, ["--backend.num_threads", "1"])
        lines.append("  1 thread instead of 2: " + first_difference(base, one))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=0, help="also run the quickstart this many steps, 3 ways (0 = skip)")
    ap.add_argument("--repeats", type=int, default=20, help="repetitions of each 2-thread product (20)")
    ap.add_argument("--out", default="", help="also write the lines to this file")
    args = ap.parse_args(argv)
    import torch

    lines = [f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}"]
    part1(lines, args.repeats)
    if args.steps:
        part2(lines, args.steps)
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
