"""Same config + seed → the same run on one machine, loaded or not: the thread settings that decide it.

    settings = configure_threads(cfg.backend.num_threads)   # once per process, before any tensor work
    settings.torch_threads, settings.as_dict()              # what run.json records

On a CPU the floats a run computes depend on more than the config and the seed:

- **The intra-op thread count.** MKL's sgemm splits some shapes differently with 1 and 2 threads and sums
  in another order (measured with torch 2.13 / MKL 2024.2 on this project's 2-core VM: every product
  with 5-7 or 9-11 rows, e.g. a decode batch once some of its 16 rows have finished). One ulp in a logit
  eventually flips a sampled token, and the runs part ways a few steps later. The count comes from
  `[backend] num_threads`; 0 means what torch chose at start-up (OMP_NUM_THREADS, else the CPUs this
  process may use), and `run.py` writes the number it got into the run's config.toml, so a resumed run
  uses it whatever OMP_NUM_THREADS the resuming shell or campaign executor has.
- **Run-time thread adaptation.** With OMP_DYNAMIC=true, GNU OpenMP gives each parallel region
  (CPUs − 15-minute load average) threads, so the same run computes different floats on a busy machine
  (measured: OMP_DYNAMIC=TRUE at load average 17 changed every one of those products); MKL_DYNAMIC lets
  MKL pick fewer threads than asked. Both are switched off here, in the OpenMP runtimes already loaded
  and in the environment for child processes, as MKL's reproducibility conditions ask.

What is *not* made reproducible (docs/reproducibility.md): other thread counts, other CPUs (MKL picks
kernels by instruction set: AVX2 and AVX-512 machines differ), other torch/MKL/transformers versions,
CUDA (cuBLAS and attention kernels are not bitwise deterministic, and this does not force
`torch.use_deterministic_algorithms`), back-pressure (it sizes batches from measured step time) and
rewards that time out (the limit is wall-clock time).
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import asdict, dataclass

from retrain.errors import RetrainError

# OpenMP runtimes torch wheels or conda builds ship: GNU (libgomp), LLVM (libomp), Intel (libiomp5).
_OPENMP_LIBS = ("libgomp", "libomp", "libiomp5")


@dataclass(frozen=True)
class ThreadSettings:
    """What `configure_threads` set, for run.json and for comparing a resume with its run."""

    torch_threads: int
    omp_dynamic_off: list[str]  # OpenMP runtimes whose dynamic adjustment was switched off
    mkl_dynamic_off: bool  # mkl_set_dynamic(0) was called
    cpu_capability: str  # the instruction set torch's kernels (and MKL's) were chosen for

    def as_dict(self) -> dict:
        return asdict(self)


def configure_threads(num_threads: int = 0) -> ThreadSettings:
    """Pin torch's intra-op thread count and switch off run-time thread adaptation (OpenMP, MKL).

    `num_threads` 0 keeps the count torch chose at start-up. Call it before the model is built; calling
    it again with the same count changes nothing.
    """
    import torch

    if num_threads < 0:
        raise RetrainError(f"[backend].num_threads = {num_threads}: must be >= 0 (0 = torch's choice at start-up)")
    _startup_threads()  # remember torch's choice before the first change
    # For child processes (and any runtime that reads them later): never adapt the team size.
    os.environ["OMP_DYNAMIC"] = "FALSE"
    os.environ["MKL_DYNAMIC"] = "FALSE"
    omp_off = [
        os.path.basename(path)
        for path in _loaded_libraries(_OPENMP_LIBS)
        if _call_if_present(path, "omp_set_dynamic", 0)
    ]
    # MKL_Set_Dynamic is the C entry point (int by value); mkl_set_dynamic is the Fortran one (int by pointer).
    mkl_off = any(
        _call_if_present(path, "MKL_Set_Dynamic", 0)
        for path in _loaded_libraries(("libtorch_cpu", "libmkl_rt", "libmkl_core"))
    )
    threads = num_threads or _startup_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return ThreadSettings(
        torch_threads=torch.get_num_threads(),
        omp_dynamic_off=sorted(set(omp_off)),
        mkl_dynamic_off=mkl_off,
        cpu_capability=_cpu_capability(),
    )


_STARTUP: list[int] = []


def _startup_threads() -> int:
    """torch's own thread count in this process, read before any run changed it: a campaign running runs
    one after the other in one process gives an auto (0) run the same count whatever ran before it."""
    import torch

    if not _STARTUP:
        _STARTUP.append(torch.get_num_threads())
    return _STARTUP[0]


def _cpu_capability() -> str:
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "unknown"


def _loaded_libraries(prefixes: tuple[str, ...]) -> list[str]:
    """Paths of the shared libraries this process has mapped whose file name starts with a prefix."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            paths = {line.split()[-1] for line in f if "/" in line}
    except OSError:  # not Linux: nothing to inspect (the environment variables still apply)
        return []
    return sorted(p for p in paths if os.path.basename(p).startswith(prefixes) and ".so" in os.path.basename(p))


def _call_if_present(path: str, symbol: str, arg: int) -> bool:
    """Call `symbol(arg)` from the already-loaded library at `path`; False when it has no such symbol."""
    try:
        fn = getattr(ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY), symbol)
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int]
    fn.restype = None
    fn(arg)
    return True
