"""Wait for a quiet machine and flag contended timing windows (stdlib only, torch imported lazily:
also imported by the TRL child, which runs in its own virtual environment).

On a 2-core box, another CPU-bound process does not just halve a 2-thread torch process: OpenMP
threads that wait for each other at every barrier can slow it 10× or more. So each timed step
first waits until other processes use little CPU, and each window records how much CPU *other*
processes used while it ran (`/proc/stat` busy time minus this process's own CPU time).

What `/proc/stat` cannot see is the host: on a VM, other guests can slow this one by 20-40% for
minutes while its steal time stays 0 (measured on this project's VM: the same retrain step went from
10.4 s to 14.4 s between two steps of one run, no other process running). So every wait ends with
`host_gflops()`, a 0.2 s fp32 matmul probe; the benchmark compares it with the same probe taken
when the floor was measured.
"""

from __future__ import annotations

import os
import sys
import time

HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
QUIET_CORES = float(os.environ.get("BENCH_QUIET_CORES", "0.15"))  # others' CPU use counted as quiet
QUIET_TIMEOUT_S = float(os.environ.get("BENCH_QUIET_TIMEOUT", "600"))  # per wait; then go on, flagged
CONTENDED_SHARE = 0.10  # a window is contended when others used > 10% of one core during it


def _busy_jiffies() -> tuple[int, int]:
    """(busy, steal) jiffies of the whole machine since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal
    return sum(v[:3]) + v[5] + v[6], v[7]


def _own_cpu_s() -> float:
    """CPU seconds of this process and of its waited-for children (a benchmark that runs the trainer
    as a child process must not count the trainer as "other processes")."""
    t = os.times()
    return time.process_time() + t.children_user + t.children_system


def others_cores(interval: float = 2.0) -> float:
    """Cores' worth of CPU that other processes used over `interval` seconds."""
    b0, _ = _busy_jiffies()
    p0 = _own_cpu_s()
    time.sleep(interval)
    b1, _ = _busy_jiffies()
    return max(0.0, (b1 - b0) / HZ - (_own_cpu_s() - p0)) / interval


def wait_quiet(label: str = "", timeout: float = QUIET_TIMEOUT_S, cores: float = QUIET_CORES) -> dict:
    """Block until other processes use < `cores` cores for 2 s (or `timeout` passes: a warning).

    Returns {"waited_s", "quiet", "others_cores", "host_gflops"} for the record. BENCH_NOWAIT=1 skips
    waiting and the host probe."""
    if os.environ.get("BENCH_NOWAIT"):
        return {"waited_s": 0.0, "quiet": None, "others_cores": None, "host_gflops": None}
    t0 = time.time()
    seen = others_cores()
    while seen >= cores and time.time() - t0 < timeout:
        seen = others_cores()
    quiet = seen < cores
    host = host_gflops()
    if not quiet:
        print(
            f"WARNING {label}: machine not quiet after {timeout:.0f} s (other processes use {seen:.2f} "
            "cores); timing anyway, flagged as contended",
            file=sys.stderr,
            flush=True,
        )
    return {"waited_s": round(time.time() - t0, 1), "quiet": quiet, "others_cores": round(seen, 3), "host_gflops": host}


def host_gflops(n: int = 1024, reps: int = 9) -> float | None:
    """fp32 GFLOP/s of an n³ matmul now, the median of `reps` (~0.2 s): how fast the host lets this
    VM run at this moment. None without torch."""
    try:
        import torch
    except ImportError:
        return None
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return round(2 * n**3 / sorted(times)[reps // 2] / 1e9, 1)


class Window:
    """`with Window() as w: ...` → w.wall (s), w.others_cpu_s, w.steal_s, w.contended."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        self.b0, self.s0 = _busy_jiffies()
        self.p0 = _own_cpu_s()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        b1, s1 = _busy_jiffies()
        self.others_cpu_s = max(0.0, (b1 - self.b0) / HZ - (_own_cpu_s() - self.p0))
        self.steal_s = (s1 - self.s0) / HZ
        self.contended = self.others_cpu_s > CONTENDED_SHARE * self.wall + 0.05
        return False

    def record(self) -> dict:
        return {
            "wall_s": round(self.wall, 3),
            "others_cpu_s": round(self.others_cpu_s, 2),
            "steal_s": round(self.steal_s, 2),
            "contended": self.contended,
        }


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
