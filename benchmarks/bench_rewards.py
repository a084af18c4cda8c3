"""Reward scoring throughput on realistic steps (8 prompts x 16 completions), `match` and `math`.

Each step has fresh references (so the per-reference parse cache is cold once per prompt, as in a run)
and completions of ~600 characters of reasoning ending in a `\\boxed{}` answer: a third the reference
as written, a third an equivalent form (`0.75` for `\\frac{3}{4}`), a third wrong. Reports
completions/s per reward, through `score_batch` when the scorer has it (one call per step) and through
`score` (one call per completion), with 1 and 2 worker processes, plus a worker's start cost (also what
a respawn after a kill costs) and resting memory. Run by hand (it also runs on the code before the
reward worker existed, for a before/after):

    python benchmarks/bench_rewards.py                         # prints
    python benchmarks/bench_rewards.py --out benchmarks/results/rewards_cpu.txt

Timings on a shared 2-core VM swing 3x under load: compare numbers taken in the same session only.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from retrain.data.base import Example

PROMPTS, GROUP = 8, 16

# (reference, an equivalent form) pairs for `math`; `k` makes each step's references new.
_MATH_FORMS = [
    (lambda k: rf"\frac{{{k}}}{{{k + 1}}}", lambda k: f"{k}/{k + 1}"),
    (lambda k: rf"{k}\sqrt{{2}}", lambda k: rf"\sqrt{{{2 * k * k}}}"),
    (lambda k: f"{k}x+{k + 2}", lambda k: f"{k + 2}+{k}x"),
    (lambda k: f"({k}, {-k})", lambda k: f"\\left({k},{-k}\\right)"),
    (lambda k: f"{k}", lambda k: f"{k}.0"),
    (lambda k: rf"\frac{{\pi}}{{{k}}}", lambda k: rf"\pi/{k}"),
    (lambda k: f"[{k}, {k + 3})", lambda k: f"[{k},{k + 3})"),
    (lambda k: f"{k}\\%", lambda k: f"{k / 100:g}"),
]

_FILLER = (
    "First, let us restate the problem and list what we know. Then we simplify step by step, "
    "checking each intermediate result against the constraints. "
)


def make_step(kind: str, step: int, rng: random.Random) -> tuple[list[str], list[Example]]:
    """One step's completions and their examples (PROMPTS x GROUP, grouped by prompt)."""
    texts, examples = [], []
    for p in range(PROMPTS):
        k = 3 + step * PROMPTS + p
        if kind == "math":
            ref_fn, equiv_fn = _MATH_FORMS[p % len(_MATH_FORMS)]
            reference, equivalent, wrong = ref_fn(k), equiv_fn(k), ref_fn(k + 1)
        else:
            reference = str(k * 37 + 11)
            equivalent, wrong = reference, str(k * 37 + 12)
        example = Example(prompt=f"problem {k}", answer=reference, id=f"p{k}", answer_format="boxed")
        for g in range(GROUP):
            answer = (reference, equivalent, wrong)[g % 3]
            body = _FILLER * rng.randint(3, 6)
            texts.append(f"{body}So the answer is \\boxed{{{answer}}}.")
            examples.append(example)
    return texts, examples


def run(kind: str, steps: int, mode: str, workers: int) -> dict:
    from retrain.rewards import make_scorer

    t0 = time.perf_counter()
    scorer = make_scorer(SimpleNamespace(type=kind, custom="", timeout_s=5.0, workers=workers))
    made = time.perf_counter() - t0
    pool = getattr(scorer, "pool", None)
    if pool is not None:  # a worker's start cost (spawn → imports → ready); a respawn costs the same
        pool.wait_ready()
    rng = random.Random(0)
    batches = [make_step(kind, s, rng) for s in range(steps + 1)]
    # The first step pays the worker's start and the lazy imports; time the rest.
    first_t = time.perf_counter()
    _score(scorer, *batches[0], mode)
    first = time.perf_counter() - first_t
    per_step = []
    for texts, examples in batches[1:]:
        t = time.perf_counter()
        values = _score(scorer, texts, examples, mode)
        per_step.append(time.perf_counter() - t)
        assert sum(v > 0.5 for v in values) >= len(values) // 2, (kind, values)  # sanity: right answers score
    close = getattr(scorer, "close", None)
    if close:
        close()
    med = statistics.median(per_step)
    return {
        "kind": kind,
        "mode": mode,
        "workers": workers,
        "make_s": made,
        "first_step_s": first,
        "step_s": med,
        "per_s": PROMPTS * GROUP / med,
        "start_s": pool.start_s if pool is not None else None,
        "base_mb": pool.base_mb if pool is not None else None,
    }


def _score(scorer, texts, examples, mode):
    if mode == "batch":
        return scorer.score_batch(texts, examples)
    return [scorer.score(t, e) for t, e in zip(texts, examples, strict=True)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)

    from retrain.rewards import Scorer

    worker = hasattr(Scorer, "score_batch")  # the worker-process scorer; before it, rewards ran in-process
    runs = [("batch", 1), ("single", 1), ("batch", 2)] if worker else [("single", 1)]
    lines = [
        (
            f"bench_rewards: {PROMPTS} prompts x {GROUP} completions per step, {args.steps} timed steps "
            f"(median), python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
        )
    ]
    for kind in ("match", "math"):
        for mode, workers in runs:
            r = run(kind, args.steps, mode, workers)
            extra = (
                f"   worker start {r['start_s']:5.2f} s, rests at {r['base_mb']:4.0f} MB"
                if r["start_s"] is not None
                else ""
            )
            lines.append(
                f"  {kind:<5} {mode:<6} workers={workers} {r['per_s']:8.0f} completions/s   "
                f"step {r['step_s'] * 1e3:7.1f} ms   first step {r['first_step_s']:5.2f} s{extra}"
            )
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
