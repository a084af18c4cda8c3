"""What `[backend] dtype = "auto"` means for the local backend: bf16 where it pays, fp32 elsewhere.

    auto → bfloat16 on CUDA;
           bfloat16 on a CPU with native bf16 instructions (avx512_bf16 or amx_bf16 in its flags)
             whose bf16 matmuls also measure ≥ 1.5× faster than fp32 at the model's shapes;
           float32 otherwise (and always for models narrower than 256: too small to gain).

Why both checks: a bf16 matmul runs ~130× *slower* than fp32 on an AVX2-only CPU (1.3 vs 175
GFLOP/s measured on a Zen 3), and ~4.5× *faster* on a CPU with AVX512-BF16 (benchmarks/results/).
The flags say whether the instructions exist; the probe (~50 ms) says whether this torch build
uses them for the shapes that matter.

The decision is kept per host in `<model cache>/cpu_dtype.json` (keyed by CPU model, flags, torch
version and the probed shape), so every run on a machine makes the same choice, and a run resumed
on a busy machine does not flip dtype on a noisy probe. Delete the file to probe again.

bf16 here means bf16 base weights with fp32 LoRA weights and fp32 AdamW state (peft keeps adapter
weights in fp32), and fp32 logits and losses: the same recipe as on CUDA.

Example::

    dtype, why = auto_dtype(torch.device("cpu"), hidden_size=576, intermediate_size=1536)
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
MIN_SPEEDUP = 1.5  # bf16 must beat fp32 by this factor at the model's shapes
MIN_HIDDEN = 256  # narrower models are overhead-bound: fp32 (this also keeps tiny test models fp32)
PROBE_ROWS = 256  # a training micro-batch's worth of token rows
CACHE_FILE = "cpu_dtype.json"


def cpu_flags() -> set[str]:
    """The CPU feature flags from /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def decide_cpu_dtype(
    flags: set[str], hidden_size: int | None, fp32_s: float | None, bf16_s: float | None
) -> tuple[str, str]:
    """(dtype name, reason): the rule in the module docstring, on already measured numbers.

    `fp32_s` / `bf16_s`: seconds per probe matmul (None when not measured)."""
    native = [f for f in NATIVE_BF16_FLAGS if f in flags]
    if not native:
        return "float32", "no native bf16 on this CPU (no avx512_bf16/amx_bf16 flag)"
    if hidden_size is not None and hidden_size < MIN_HIDDEN:
        return "float32", f"hidden size {hidden_size} < {MIN_HIDDEN}: too small to gain from bf16"
    if not fp32_s or not bf16_s:
        return "float32", "bf16 probe not run"
    speedup = fp32_s / bf16_s
    if speedup < MIN_SPEEDUP:
        return "float32", f"{'/'.join(native)} present but bf16 matmul only {speedup:.2f}× fp32 (< {MIN_SPEEDUP})"
    return "bfloat16", f"{'/'.join(native)} and bf16 matmul {speedup:.1f}× faster than fp32"


def probe_matmul_seconds(k: int, n: int, rows: int = PROBE_ROWS, repeats: int = 5) -> tuple[float, float]:
    """Best-of-`repeats` seconds of one [rows, k] @ [k, n] matmul in fp32 and in bf16 (interleaved,
    so a burst of load hits both alike)."""
    gen = torch.Generator().manual_seed(0)
    a32, b32 = torch.randn(rows, k, generator=gen), torch.randn(n, k, generator=gen)
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    best = {torch.float32: float("inf"), torch.bfloat16: float("inf")}
    for _ in range(repeats + 1):  # the first round warms up the kernels
        for dtype, (a, b) in ((torch.float32, (a32, b32)), (torch.bfloat16, (a16, b16))):
            t0 = time.perf_counter()
            torch.nn.functional.linear(a, b)
            best[dtype] = min(best[dtype], time.perf_counter() - t0)
    return best[torch.float32], best[torch.bfloat16]


def auto_dtype(
    device: torch.device,
    hidden_size: int | None = None,
    intermediate_size: int | None = None,
    cache_dir: Path | None = None,
) -> tuple[torch.dtype, dict]:
    """The dtype `auto` resolves to on `device`, and a record of why ({"dtype", "reason", ...})."""
    if device.type == "cuda":
        return torch.bfloat16, {"dtype": "bfloat16", "reason": "CUDA"}
    if device.type != "cpu":
        return torch.float32, {"dtype": "float32", "reason": f"{device.type}: float32"}
    flags = cpu_flags()
    native = [f for f in NATIVE_BF16_FLAGS if f in flags]
    if not native or (hidden_size is not None and hidden_size < MIN_HIDDEN):
        name, reason = decide_cpu_dtype(flags, hidden_size, None, None)
        return getattr(torch, name), {"dtype": name, "reason": reason, "flags": native}
    k = hidden_size or 1024
    n = intermediate_size or 4 * k
    key = f"{cpu_model_name()}|{','.join(native)}|torch {torch.__version__}|{PROBE_ROWS}x{k}x{n}"
    stored = _read_cache(cache_dir).get(key)
    if stored and stored.get("dtype") in ("float32", "bfloat16"):
        return getattr(torch, stored["dtype"]), {**stored, "cached": True}
    fp32_s, bf16_s = probe_matmul_seconds(k, n)
    name, reason = decide_cpu_dtype(flags, hidden_size, fp32_s, bf16_s)
    record = {
        "dtype": name,
        "reason": reason,
        "flags": native,
        "probe_shape": [PROBE_ROWS, k, n],
        "fp32_gflops": round(2 * PROBE_ROWS * k * n / fp32_s / 1e9, 1),
        "bf16_gflops": round(2 * PROBE_ROWS * k * n / bf16_s / 1e9, 1),
        "threads": torch.get_num_threads(),
    }
    _write_cache(cache_dir, key, record)
    return getattr(torch, name), {**record, "cached": False}


def _cache_path(cache_dir: Path | None) -> Path:
    if cache_dir is None:
        from retrain.backends.models import cache_root

        cache_dir = cache_root()
    return Path(cache_dir) / CACHE_FILE


def _read_cache(cache_dir: Path | None) -> dict:
    from retrain.jsonio import read_json

    return read_json(_cache_path(cache_dir)) or {}


def _write_cache(cache_dir: Path | None, key: str, record: dict) -> None:
    from retrain.jsonio import write_json_atomic

    path = _cache_path(cache_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {**_read_cache(cache_dir), key: record})
    except OSError:
        pass  # a read-only cache only costs a probe per run
