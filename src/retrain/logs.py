"""Metrics sinks. JSONL is the source of truth; wandb and the console are fed the same row.

A sink receives, once per step, the full metrics row and the step's sampled generations::

    class PrintCorrect:                      # a MetricsSink
        def log_step(self, row: dict, generations: list[dict]) -> None:
            print(row["step"], row["correct_rate"])
        def close(self) -> None:
            pass

Rows are appended and flushed at once, never rewritten, so a killed run loses at most the step
in flight (`retrain resume` moves rows past the last checkpoint aside; see `run.py`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Protocol

from retrain.errors import RetrainError
from retrain.jsonio import finite

# Keys of emergence/steps.jsonl (docs/metrics.md): a compact per-step view for the analysis tools.
EMERGENCE_STEP_KEYS = (
    "step",
    "condition",
    "mean_reward",
    "correct_count",
    "total_count",
    "exec_entropy_mean",
    "exec_entropy_var",
    "plan_entropy_mean",
    "plan_entropy_var",
    "post_exec_entropy_var",
    "sepa_lambda",
    "planning_token_fraction",
)

# metrics.jsonl key → wandb key (docs/research-guide.md: "train/rewards/correct_rate", ...).
WANDB_KEYS = {
    "correct_rate": "train/rewards/correct_rate",
    "running_correct_rate": "train/rewards/running_correct_rate",
    "mean_reward": "train/rewards/mean_reward",
    "eval_correct_rate": "eval/correct_rate",
    "eval_pass_at_k": "eval/pass_at_k",
    "eval_mean_at_k": "eval/mean_at_k",
    "sepa_lambda": "train/sepa_lambda",
    "sepa_gate_open": "train/sepa_gate_open",
    "exec_entropy_mean": "train/entropy/exec_mean",
    "exec_entropy_var": "train/entropy/exec_var",
    "plan_entropy_mean": "train/entropy/plan_mean",
    "plan_entropy_var": "train/entropy/plan_var",
    "post_exec_entropy_var": "train/entropy/post_exec_var",
    "planning_token_fraction": "train/entropy/planning_token_fraction",
    "loss": "train/loss",
    "num_datums": "train/num_datums",
    "max_token_hit_rate": "train/max_token_hit_rate",
    "sampler_train_kl": "train/sampler_train_kl",
    "clip_fraction": "train/clip_fraction",
    "grad_norm": "train/grad_norm",
    "reward_tie_group_rate": "train/ties/group_rate",
    "reward_uniform_group_rate": "train/ties/uniform_group_rate",
    "reward_tie_pair_rate": "train/ties/pair_rate",
    "reward_unique_fraction_mean": "train/ties/unique_fraction_mean",
    "batch_size": "train/batch_size",
    "step_time_s": "perf/step_time_s",
    "sample_time_s": "perf/sample_time_s",
    "train_time_s": "perf/train_time_s",
    "tokens_per_second": "perf/tokens_per_second",
}


class MetricsSink(Protocol):
    def log_step(self, row: dict, generations: list[dict]) -> None: ...

    def close(self) -> None: ...


def json_line(obj: dict) -> str:
    """One JSON line; NaN/inf become null because JSON has neither and pandas reads null fine."""
    return json.dumps(finite(obj), separators=(",", ":"), ensure_ascii=False) + "\n"


class JsonlFile:
    """An append-only JSONL file, flushed after every row."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "a", encoding="utf-8")

    def append(self, row: dict) -> None:
        self._f.write(json_line(row))
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class JsonlSink:
    """metrics.jsonl, emergence/steps.jsonl and emergence/generations.jsonl (docs/metrics.md)."""

    def __init__(self, log_dir: Path, log_generations: bool = True):
        self.metrics = JsonlFile(log_dir / "metrics.jsonl")
        self.steps = JsonlFile(log_dir / "emergence" / "steps.jsonl")
        self.generations = JsonlFile(log_dir / "emergence" / "generations.jsonl") if log_generations else None

    def log_step(self, row: dict, generations: list[dict]) -> None:
        self.metrics.append(row)
        self.steps.append({k: row.get(k) for k in EMERGENCE_STEP_KEYS})
        if self.generations is not None:
            for g in generations:
                self.generations.append({"step": row["step"], **g})

    def close(self) -> None:
        for f in (self.metrics, self.steps, self.generations):
            if f is not None:
                f.close()


class ConsoleSink:
    """A progress bar with ETA (rich, on a terminal) and one line per step."""

    def __init__(self, label: str, max_steps: int, start_step: int = 0, stream=None):
        self.label = label
        self.max_steps = max_steps
        self.stream = stream or sys.stdout
        self._progress = None
        if self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn(f"[bold]{label}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
            )
            self._task = self._progress.add_task("train", total=max_steps, completed=start_step)
            self._progress.start()

    def log_step(self, row: dict, generations: list[dict]) -> None:
        line = format_step_line(row, self.label)
        if self._progress is not None:
            self._progress.console.print(line, markup=False, highlight=False)
            self._progress.update(self._task, completed=row["step"] + 1)
        else:
            print(line, file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """A line that is not a step (held-out eval, the next command), above the bar on a terminal."""
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def format_step_line(row: dict, label: str) -> str:
    """`step 12 [maxrl+gtpo_sepa s42] reward=0.31 correct=28.1% datums=96 λ=0.12 loss=-0.0031 3.2s`"""
    loss = row.get("loss")
    parts = [
        f"step {row['step']} [{label}]",
        f"reward={row['mean_reward']:.2f}",
        f"correct={100 * row['correct_rate']:.1f}%",
        f"datums={row['num_datums']}",
        f"λ={row['sepa_lambda']:.2f}",
        f"loss={loss:.4f}" if loss is not None else "loss=-",
        f"{row['step_time_s']:.1f}s",
    ]
    if row.get("eval_correct_rate") is not None:
        parts.insert(3, f"eval={100 * row['eval_correct_rate']:.1f}%")
        if row.get("eval_pass_at_k") is not None:
            parts.insert(4, f"pass@k={100 * row['eval_pass_at_k']:.1f}% mean@k={100 * row['eval_mean_at_k']:.1f}%")
    return " ".join(parts)


class WandbSink:
    """Logs each row under the `train/...` keys of docs/metrics.md at `step`."""

    def __init__(
        self,
        *,
        project: str,
        entity: str | None,
        name: str,
        group: str,
        tags: list[str],
        config: dict,
        mode: str,
        log_dir: Path,
        run_id: str,
    ):
        try:
            import wandb
        except ImportError as e:
            raise RetrainError(
                "[logging].wandb_project is set but wandb is not installed; "
                "install it with `pip install wandb` (or `pip install 'retrain[wandb]'`), "
                "or remove wandb_project"
            ) from e
        self._wandb = wandb
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(
            project=project,
            entity=entity or None,
            name=name,
            group=group,
            tags=tags,
            config=config,
            mode=mode,
            dir=str(log_dir),
            id=run_id,
            resume="allow",
            reinit="finish_previous",
        )
        self.run.define_metric("*", step_metric="step")

    def log_step(self, row: dict, generations: list[dict]) -> None:
        data = {"step": row["step"]}
        for key, value in row.items():
            if key in WANDB_KEYS:
                # None (e.g. no planning tokens this step) is logged as NaN: a gap in the chart,
                # and the key still exists for panels and "group by condition".
                data[WANDB_KEYS[key]] = (
                    float("nan") if value is None else float(value) if isinstance(value, bool) else value
                )
            elif key.startswith("bp_") and value is not None:
                data[f"train/backpressure/{key[3:]}"] = value
        self.run.log(data, step=row["step"])

    def close(self) -> None:
        self.run.finish()
