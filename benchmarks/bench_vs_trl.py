"""retrain vs TRL's GRPOTrainer on one machine, one after the other, against the machine's own floor.

    python benchmarks/bench_vs_trl.py                                 # about 6 min on a quiet 2-core box
    python benchmarks/bench_vs_trl.py --trl-python /work/venvs/trl/bin/python --steps 6 --threads 2
    BENCH_NOWAIT=1 python benchmarks/bench_vs_trl.py --steps 2 --skip-trl   # smoke test, no waiting

The workload (side_workload.py): 4 prompts × 8 completions of ≤ 32 tokens per step, SmolLM2-135M
fp32, LoRA r16 α32 dropout 0.05 on the 7 projections, temperature 1, lr 1e-5, a continuous reward
so that every completion trains. Each part runs in its own process (so each has its own peak RSS),
in this order:

1. floor: fp32 and bf16 matmul GFLOP/s at `--threads` (4096² and the model's shapes), memory
   copy bandwidth, and what retrain's `dtype = "auto"` probe decides on this host;
2. retrain, fp32 (`[backend] dtype = "float32"`), through `retrain.run.run_one_step`: the real step;
3. retrain, `dtype = "auto"`, when the probe picks bf16 on this host;
4. TRL 1.16 GRPOTrainer with its defaults (trl_side.py, in TRL's own venv; skipped without one).

Every timed step first waits for a quiet machine (quiet.py: other processes below 0.15 cores, at
most BENCH_QUIET_TIMEOUT s, then it runs anyway, flagged); step 0 is a warm-up. Reported per run:
the median of the timed steps (wall, sample, train), peak RSS, and the step's FLOPs over the fp32
matmul peak, i.e. how far above the machine's floor it runs:

    FLOPs(step) = 2·(N−E)·P·Lp + 2·E·P + 2·N·C                  sampling: each prompt prefilled once
                + 4·(N−E)·P·G·(Lp + C/(P·G)) + 4·E·C             training: every row with its prompt,
                                                                  lm_head only where a logprob is needed
    N = model parameters (tied embedding once), E = vocab × hidden (the lm_head), P prompts, G per
    group, Lp prompt tokens, C completion tokens in the step (each run's own mean).

That is the "tight floor" of a conventional trainer (frozen base, LoRA: forward + input gradients
= 4 FLOPs per parameter and token). retrain runs the shared prompt once in training too; the FLOPs
it actually executes (`flops_executed`) are printed beside it.

Results: benchmarks/results/vs_trl.json (everything) and vs_trl.md (the table). Timings on a
shared machine are noisy; the `contended` columns count the steps that other processes disturbed,
and `host speed` says how fast the host ran each row's steps compared with when the floor was
measured (quiet.host_gflops: a VM slowed by other guests shows no busy CPU). A row outside 90-110%
is flagged: its times and its × floor do not compare with the others.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import quiet
import side_workload as W

RESULTS = HERE / "results"
DEFAULT_TRL_PYTHON = "/work/venvs/trl/bin/python"


# ------------------------------------------------------------------------------------ FLOPs


def step_flops(
    n_params: int,
    head_params: int,
    prompts: int,
    group: int,
    prompt_tokens: float,
    completion_tokens: float,
    shared_prefix_training: bool = False,
) -> dict:
    """FLOPs of one step (formula in the module docstring); `completion_tokens` is the step's total."""
    body = n_params - head_params
    sampling = 2 * body * prompts * prompt_tokens + 2 * head_params * prompts + 2 * n_params * completion_tokens
    prompt_rows = prompts if shared_prefix_training else prompts * group
    training = 4 * body * (prompt_rows * prompt_tokens + completion_tokens) + 4 * head_params * completion_tokens
    return {"sampling": sampling, "training": training, "step": sampling + training}


# ------------------------------------------------------------------------------------ children


def child_floor(out: Path, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    from retrain.backends.precision import auto_dtype, cpu_flags, cpu_model_name

    def gflops(m: int, k: int, n: int, dtype, reps: int) -> dict:
        a = torch.randn(m, k).to(dtype)
        b = torch.randn(n, k).to(dtype)
        torch.nn.functional.linear(a, b)
        wait = quiet.wait_quiet(f"floor {m}x{k}x{n} {dtype}")
        best, contended = float("inf"), 0
        for _ in range(3):  # best of 3 windows
            with quiet.Window() as w:
                for _ in range(reps):
                    torch.nn.functional.linear(a, b)
            best, contended = min(best, w.wall), contended + w.contended
        return {
            "shape": [m, k, n],
            "dtype": str(dtype).removeprefix("torch."),
            "gflops": round(2 * m * k * n * reps / best / 1e9, 1),
            "contended_windows": contended,
            "quiet_before": wait["quiet"],
        }

    res: dict = {
        "host_gflops": quiet.wait_quiet("floor host probe")["host_gflops"],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": cpu_model_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_flags": sorted(cpu_flags() & {"avx512_bf16", "amx_bf16"}),
        "matmul": [],
    }
    for m, k, n, reps in [(4096, 4096, 4096, 4), (2048, 2048, 2048, 20)]:
        res["matmul"].append(gflops(m, k, n, torch.float32, reps))
    res["fp32_peak_gflops"] = max(r["gflops"] for r in res["matmul"])
    probe = gflops(512, 512, 512, torch.bfloat16, 4)
    res["matmul"].append(probe)
    if probe["gflops"] > 20:  # no native bf16: a 4096³ bf16 matmul would take minutes
        res["matmul"].append(gflops(4096, 4096, 4096, torch.bfloat16, 8))
        res["bf16_peak_gflops"] = res["matmul"][-1]["gflops"]
    else:
        res["bf16_peak_gflops"] = probe["gflops"]
    for m, k, n in [(1200, 576, 1536), (1200, 1536, 576), (32, 576, 1536), (32, 576, 49152)]:
        for dtype in (torch.float32, torch.bfloat16) if probe["gflops"] > 20 else (torch.float32,):
            res["matmul"].append(gflops(m, k, n, dtype, 20 if m > 100 else 100))
    x = torch.ones(256 * 1024 * 1024 // 4)
    y = torch.empty_like(x)
    y.copy_(x)
    quiet.wait_quiet("floor copy")
    with quiet.Window() as w:
        for _ in range(10):
            y.copy_(x)
    res["copy_gbps"] = round(10 * 2 * x.numel() * 4 / w.wall / 1e9, 1)  # read + write
    with tempfile.TemporaryDirectory() as tmp:  # probe afresh, not the host's stored decision
        dtype, why = auto_dtype(torch.device("cpu"), 576, 1536, cache_dir=Path(tmp))
    res["auto_dtype"] = why
    out.write_text(json.dumps(res, indent=1))


RETRAIN_TOML = """
[model]
name = "smollm2-135m"
lora_rank = {rank}
lora_alpha = {alpha}
lora_dropout = {dropout}

[algorithm]
advantage_mode = "grpo"
transform_mode = "none"

[training]
max_steps = {steps}
batch_size = {prompts}
group_size = {group}
max_tokens = {max_tokens}
temperature = {temperature}
lr = {lr}
save_every = 0

[data]
source = "jsonl"
path = "{data}"

[reward]
type = "custom"
custom = "side_workload:digit_frac"

[eval]
every = 0

[backend]
dtype = "{dtype}"

[logging]
log_dir = "{log_dir}"
"""


def side_config(tmp: Path, steps: int, dtype: str):
    """The side-by-side workload as a retrain Config (its TOML and problems written into `tmp`)."""
    from retrain.config import load_config

    toml = tmp / "side.toml"
    toml.write_text(
        RETRAIN_TOML.format(
            rank=W.LORA_RANK,
            alpha=W.LORA_ALPHA,
            dropout=W.LORA_DROPOUT,
            steps=steps,
            prompts=W.N_PROMPTS,
            group=W.GROUP,
            max_tokens=W.MAX_TOKENS,
            temperature=W.TEMPERATURE,
            lr=W.LR,
            data=W.write_problems(tmp / "problems.jsonl"),
            dtype=dtype,
            log_dir=tmp / "run",
        )
    )
    return load_config(toml)


def child_retrain(out: Path, threads: int, steps: int, dtype: str) -> None:
    import torch

    torch.set_num_threads(threads)
    from retrain.run import build_components, run_one_step, versions

    with tempfile.TemporaryDirectory() as tmp:
        cfg = side_config(Path(tmp), steps, dtype)
        t0 = time.time()
        c = build_components(cfg)
        load_s = time.time() - t0
        backend = c.ctx.backend
        model = backend.model
        n_params = sum(p.numel() for name, p in model.named_parameters() if "lora_" not in name)
        mcfg = model.get_base_model().config
        prompt_tokens = statistics.mean(len(backend.prompt_ids(r["prompt"])) for r in W.problems())
        rows = []
        for step in range(steps):
            wait = quiet.wait_quiet(f"retrain step {step}")
            with quiet.Window() as w:
                row, _ = run_one_step(cfg, c, step)
            rows.append(
                {
                    "step": step,
                    **w.record(),
                    "wait": wait,
                    "sample_s": round(row["sample_time_s"], 3),
                    "train_s": round(row["train_time_s"], 3),
                    "mean_completion_tokens": row["mean_completion_tokens"],
                    "num_datums": row["num_datums"],
                    "sampler_train_kl": row["sampler_train_kl"],
                    "loss": row["loss"],
                }
            )
            print("retrain", json.dumps(rows[-1]), flush=True)
    res = {
        "who": f"retrain ({dtype})",
        "versions": versions(),
        "threads": torch.get_num_threads(),
        "dtype": str(backend.dtype).removeprefix("torch."),
        "dtype_choice": backend.dtype_choice,
        "n_params": n_params,
        "head_params": mcfg.vocab_size * mcfg.hidden_size,
        "mean_prompt_tokens": prompt_tokens,
        "load_s": round(load_s, 1),
        "steps": rows,
        "peak_rss_mb": round(quiet.peak_rss_mb(), 1),
    }
    out.write_text(json.dumps(res, indent=1))


# ------------------------------------------------------------------------------------ orchestration


def run_child(cmd: list[str], label: str, env: dict) -> bool:
    print(f"== {label} ({time.strftime('%H:%M:%S')})", flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, check=False)
    print(f"   {label}: exit {proc.returncode}, {time.time() - t0:.0f} s", flush=True)
    return proc.returncode == 0


def summarize(run: dict, floor: dict, n_params: int, head_params: int) -> dict:
    timed = run["steps"][1:] or run["steps"]
    med = {k: statistics.median(s[k] for s in timed) for k in ("wall_s", "sample_s", "train_s")}
    comp = statistics.mean(s["mean_completion_tokens"] for s in timed if s.get("mean_completion_tokens"))
    c_total = comp * W.N_PROMPTS * W.GROUP
    flops = step_flops(n_params, head_params, W.N_PROMPTS, W.GROUP, run["mean_prompt_tokens"], c_total)
    executed = step_flops(
        n_params,
        head_params,
        W.N_PROMPTS,
        W.GROUP,
        run["mean_prompt_tokens"],
        c_total,
        shared_prefix_training=run["who"].startswith("retrain"),
    )
    peak = floor["fp32_peak_gflops"] * 1e9
    probes = [s["wait"].get("host_gflops") for s in timed if s.get("wait")]
    probes = [g for g in probes if g]
    host_speed = (
        round(statistics.median(probes) / floor["host_gflops"], 2) if probes and floor.get("host_gflops") else None
    )
    return {
        "who": run["who"],
        "dtype": run["dtype"],
        "steps_timed": len(timed),
        "contended_steps": sum(bool(s["contended"]) for s in timed),
        "host_speed": host_speed,  # the host probe before its steps ÷ the probe when the floor was measured
        **{k: round(v, 2) for k, v in med.items()},
        "step_s_all": [s["wall_s"] for s in timed],
        "completion_tokens": round(comp, 1),
        "peak_rss_mb": run["peak_rss_mb"],
        "flops_step": flops["step"],
        "flops_executed": executed["step"],
        "floor_s": round(flops["step"] / peak, 2),
        "x_floor": round(med["wall_s"] / (flops["step"] / peak), 2),
        "sampling_x_floor": round(med["sample_s"] / (flops["sampling"] / peak), 2),
        "training_x_floor": round(med["train_s"] / (flops["training"] / peak), 2),
    }


def table(rows: list[dict], floor: dict) -> str:
    lines = [
        "| | s/step | sample | train | × floor | peak RSS | tokens/completion | contended steps | host speed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['who']} | {r['wall_s']:.2f} | {r['sample_s']:.2f} | {r['train_s']:.2f} | "
            f"{r['x_floor']:.2f} | {r['peak_rss_mb'] / 1024:.2f} GB | {r['completion_tokens']:.1f} | "
            f"{r['contended_steps']}/{r['steps_timed']} | "
            + (f"{r['host_speed']:.0%} |" if r.get("host_speed") else "– |")
        )
    lines.append("")
    lines.append(
        f"Floor: fp32 matmul {floor['fp32_peak_gflops']} GFLOP/s, bf16 {floor['bf16_peak_gflops']} GFLOP/s "
        f"at {floor['threads']} threads ({floor['cpu']}, {floor['cpu_capability']}); copy "
        f'{floor["copy_gbps"]} GB/s. `dtype = "auto"` here: {floor["auto_dtype"]["dtype"]} '
        f"({floor['auto_dtype']['reason']})."
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6, help="steps per run; the first is a warm-up (default 6)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--trl-python", default=os.environ.get("RETRAIN_TRL_PYTHON", DEFAULT_TRL_PYTHON))
    ap.add_argument("--skip-trl", action="store_true")
    ap.add_argument("--skip-bf16", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "vs_trl"), help="writes OUT.json and OUT.md")
    ap.add_argument("--child", choices=["floor", "retrain"], help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child == "floor":
        child_floor(Path(args.child_out), args.threads)
        return 0
    if args.child == "retrain":
        child_retrain(Path(args.child_out), args.threads, args.steps, args.dtype)
        return 0

    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    me = [sys.executable, str(Path(__file__).resolve())]
    common = ["--threads", str(args.threads), "--steps", str(args.steps)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        parts = Path(tmp)
        if not run_child(me + ["--child", "floor", "--child-out", str(parts / "floor.json")] + common, "floor", env):
            return 1
        floor = json.loads((parts / "floor.json").read_text())
        runs = []
        dtypes = ["float32"] + (["auto"] if floor["auto_dtype"]["dtype"] == "bfloat16" and not args.skip_bf16 else [])
        for dtype in dtypes:
            f = parts / f"retrain_{dtype}.json"
            if run_child(
                me + ["--child", "retrain", "--child-out", str(f), "--dtype", dtype] + common,
                f"retrain dtype={dtype}",
                env,
            ):
                runs.append(json.loads(f.read_text()))
        trl_python = Path(args.trl_python)
        if not args.skip_trl and trl_python.exists():
            from retrain.backends.models import resolve_model

            f = parts / "trl.json"
            cmd = [str(trl_python), str(HERE / "trl_side.py"), resolve_model("smollm2-135m"), str(f)] + common
            trl_env = {**env, "PYTHONPATH": str(HERE)}
            if run_child(cmd, "trl GRPOTrainer (defaults)", trl_env):
                runs.append(json.loads(f.read_text()))
        elif not args.skip_trl:
            print(f"TRL skipped: no python at {trl_python} (see trl_side.py for the venv)", flush=True)
    if not runs or not runs[0]["who"].startswith("retrain"):
        print("no retrain result", file=sys.stderr)
        return 1
    n_params, head_params = runs[0]["n_params"], runs[0]["head_params"]
    rows = [summarize(r, floor, n_params, head_params) for r in runs]
    ours = rows[0]
    trl = next((r for r in rows if r["who"] == "trl"), None)
    ratio = round(trl["wall_s"] / ours["wall_s"], 2) if trl else None
    text = table(rows, floor)
    text += (
        f"\n\nretrain fp32 step: {ours['x_floor']}× the floor ({ours['floor_s']} s = "
        f"{ours['flops_step'] / 1e9:.0f} GFLOP at the fp32 peak; retrain executes "
        f"{ours['flops_executed'] / 1e9:.0f} GFLOP since it runs each prompt once in training too)."
    )
    if ratio:
        text += f"\nTRL / retrain (fp32) step time: **{ratio}×**."
    auto = next((r for r in rows if r["who"] == "retrain (auto)"), None)
    ratio_auto = round(trl["wall_s"] / auto["wall_s"], 2) if trl and auto else None
    if ratio_auto:
        text += (
            f'\nTRL / retrain (`dtype = "auto"`: {auto["dtype"]}, what retrain runs by default on this host) '
            f"step time: **{ratio_auto}×**."
        )
    if any(m["contended_windows"] for m in floor["matmul"]):
        text += (
            "\n\n**The floor's matmuls ran while other processes used the CPU: the GFLOP/s above are too low "
            "and every `× floor` too small; re-run on a quiet machine.**"
        )
    slow = [r["who"] for r in rows if r.get("host_speed") and not 0.9 <= r["host_speed"] <= 1.1]
    if slow:
        text += (
            f"\n\n**The host ran at another speed during {', '.join(slow)} than when the floor was measured "
            "(`host speed`: a 0.2 s fp32 matmul probe before each step, median, ÷ the same probe before the "
            "floor; other VMs on the host do this, invisibly to /proc/stat): these rows do not compare; "
            "re-run.**"
        )
    contended = sum(r["contended_steps"] for r in rows)
    if contended:
        text += (
            f"\n\n**{contended} of {sum(r['steps_timed'] for r in rows)} timed steps ran while other processes "
            "used the CPU (see `contended steps`): these times are not the machine's; re-run on a quiet machine.**"
        )
    header = (
        f"# retrain vs TRL, {time.strftime('%Y-%m-%d %H:%M')} on {platform.node()} "
        f"({floor['threads']} threads, {args.steps} steps each, the first a warm-up; "
        f"total {time.time() - t_start:.0f} s)\n\n"
    )
    print("\n" + header + text)
    out.with_suffix(".md").write_text(header + text + "\n")
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "floor": floor,
                "summary": rows,
                "trl_over_retrain": ratio,
                "trl_over_retrain_auto": ratio_auto,
                "runs": runs,
            },
            indent=1,
        )
    )
    print(f"\nwrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
