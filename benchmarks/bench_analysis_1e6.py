"""Benchmark: `retrain report`, `plot` and `compare` (and `litmus`, `status`) on a campaign of 1e6 metric rows.

Writes a synthetic campaign (5 guide conditions x 4 seeds x 50,000 steps = 1,000,000 metrics rows,
every metrics field, held-out evals every 1,000 steps; about 0.9 GB), then runs each verb as
`python -m retrain VERB ...` in a fresh process and records its wall time and peak resident
memory (os.wait4's ru_maxrss of that one child). Targets (issue #11): < 10 s and < 1 GB each.

    python benchmarks/bench_analysis_1e6.py                       # writes benchmarks/results/analysis_1e6.txt
    python benchmarks/bench_analysis_1e6.py --campaign /tmp/c1e6  # keep (or reuse) the generated campaign
    python benchmarks/bench_analysis_1e6.py --src /path/to/other/checkout/src --out other.txt   # another version

Timings on a shared 2-core machine swing by 2-3x with load: the load average is recorded beside
the numbers; compare only numbers taken in one session.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the analysis fixtures write run dirs in the trainer's layout

CONDITIONS = ("grpo+none", "maxrl+none", "maxrl+gtpo", "maxrl+gtpo_hicra", "maxrl+gtpo_sepa")


def make_campaign(root: Path, rows: int, seeds: int) -> Path:
    from fixtures_analysis import write_campaign

    steps = rows // (len(CONDITIONS) * seeds)
    return write_campaign(
        root,
        conditions=CONDITIONS,
        seeds=tuple(range(1, seeds + 1)),
        num_steps=steps,
        gate_open_step=steps // 10,
        eval_every=1000,
    )


def run_verb(argv: list[str], src: Path, timeout: float) -> tuple[float, float, float, int, str]:
    """(wall seconds, CPU seconds, peak RSS in MiB, exit code, stderr tail) of `python -m retrain *argv`
    in a fresh process. CPU time (user + system) moves less with machine load than wall time."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")])),
        "MPLBACKEND": "Agg",
    }
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "retrain", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    deadline = t0 + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode, err[-500:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="metrics rows in the whole campaign")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--campaign", default=None, help="where to write (or reuse) the campaign; default a temp dir")
    ap.add_argument("--src", default=str(HERE.parent / "src"), help="the retrain source tree to run")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--out", default=str(HERE / "results" / "analysis_1e6.txt"))
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_analysis_"))
    try:
        camp = Path(a.campaign) if a.campaign else tmp / "campaign_1e6"
        t0 = time.perf_counter()
        if not (camp / "manifest.json").is_file():
            make_campaign(camp, a.rows, a.seeds)
        made = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in camp.rglob("*.jsonl"))
        runs = sorted(p.name for p in (camp / "runs").iterdir())
        lines = [
            f"bench_analysis_1e6: {time.strftime('%Y-%m-%d %H:%M:%S')}, python {platform.python_version()}, "
            f"{platform.machine()}, {os.cpu_count()} CPUs, src {a.src}",
            f"campaign: {len(runs)} runs, {a.rows} metrics rows, {size / 2**20:.0f} MiB of JSONL "
            f"(written in {made:.0f} s)",
            "",
            f"{'verb':<8}{'wall s':>8}{'CPU s':>8}{'peak RSS MiB':>14}{'exit':>6}  load avg before",
        ]
        verbs = {
            "report": ["report", str(camp), "--out", str(tmp / "report")],
            "plot": ["plot", str(camp), "--out", str(tmp / "plot" / "correct_rate.png")],
            "compare": [
                "compare",
                str(camp),
                "--baseline",
                "maxrl+gtpo_hicra",
                "--candidate",
                "maxrl+gtpo_sepa",
                "--output",
                str(tmp / "compare.json"),
            ],
            "litmus": ["litmus", str(camp), "--baseline", "maxrl+gtpo_hicra", "--candidate", "maxrl+gtpo_sepa"],
            "status": ["status", str(camp), "--json"],
        }
        for verb, argv in verbs.items():
            shutil.rmtree(tmp / "report", ignore_errors=True)
            load = os.getloadavg()[0]
            wall, cpu, rss, code, err = run_verb(argv, Path(a.src), a.timeout)
            lines.append(f"{verb:<8}{wall:>8.1f}{cpu:>8.1f}{rss:>14.0f}{code:>6}  {load:.1f}")
            if code not in (0, 1, 2) or (verb != "litmus" and code != 0):
                lines.append(f"    stderr: {err.strip()[-300:]}")
        lines += [
            "",
            "Noisy: measured on a shared 2-core machine (see the load averages; above 2 every process waits"
            " for a core, so wall time exceeds CPU time); re-run on a quiet one.",
        ]
        text = "\n".join(lines) + "\n"
        print(text, end="")
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
