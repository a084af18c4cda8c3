"""A single run: set up, loop over `rl_step`, checkpoint, resume.

    train(cfg)        → a new run dir (never overwrites one), steps 0..max_steps-1
    resume(log_dir)   → continue the run whose config.toml is in log_dir, from its last checkpoint

Exact resume (CPU): everything that decides the next step is in the checkpoint — adapter and
optimizer (backend.save), data cursor, SEPA and back-pressure state, counters, RNG states — and
sampling seeds are derived from (run seed, step), not from a running RNG. So a run killed after a
checkpoint and resumed writes the same metrics as an uninterrupted one (tests/test_run.py).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import math
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

import retrain
from retrain.backends import make_backend
from retrain.backends import preflight as backend_preflight
from retrain.backends.base import Backend, SamplingParams
from retrain.backends.openai_engine import EngineUnavailable
from retrain.backpressure import USLController
from retrain.checkpoints import (
    ADAPTER_DIR,
    TRAINER_STATE,
    checkpoint_dir_name,
    choose_checkpoint,
    file_sizes,
)
from retrain.config import (
    Config,
    config_to_dict,
    config_to_toml,
    flatten_dict,
    load_config,
)
from retrain.data import Dataset, Example, load_dataset
from retrain.data.cursor import Cursor
from retrain.errors import RetrainError
from retrain.jsonio import (
    apply_default_modes,
    now_iso,
    overwrite_json_in_place,
    read_json,
    write_json_atomic,
)
from retrain.locks import LOCK_NAME, DirLock
from retrain.logfiles import TIMING_KEYS, read_rows  # noqa: F401  (TIMING_KEYS: imported from here too)
from retrain.logs import ConsoleSink, JsonlFile, JsonlSink, MetricsSink, WandbSink
from retrain.preflight import preflight
from retrain.rewards import make_scorer
from retrain.rl.advantages import ADVANTAGES
from retrain.rl.planning import DEFAULT_STRATEGIC_GRAMS
from retrain.rl.sepa import SEPAController
from retrain.rl.step import CORRECT_THRESHOLD, Scorer, StepContext, rl_step
from retrain.rl.transforms import TRANSFORMS
from retrain.secrets import expand_secrets

DATA_SEED = 0  # see build_components: the data do not depend on the run seed


def train(cfg: Config, log_dir: str | Path | None = None) -> int:
    """Start a new run. Returns 0 when it completed, 1 when it failed.

    Everything the user can get wrong (plugins, model, lengths and sizes, data, the log dir, a
    backend service that cannot start) is checked before the run dir is created
    (retrain/preflight.py), so a failed start leaves nothing behind and the corrected rerun goes
    to the same dir."""
    checked = preflight(expand_secrets(cfg), DATA_SEED)
    run_dir, lock = claim_run_dir(cfg, log_dir)
    try:
        cfg = cfg.with_overrides({"logging.log_dir": str(run_dir)})
        (run_dir / "config.toml").write_text(config_to_toml(cfg), encoding="utf-8")
        write_json_atomic(run_dir / "config.json", config_to_dict(cfg))
        return _execute(cfg, run_dir, state=None, data=checked.data)
    finally:
        lock.release()


def resume(log_dir: str | Path) -> int:
    """Start or continue the run in `log_dir` (its config.toml decides everything).

    A completed run returns 0 at once; a partial run continues after its newest checkpoint that
    the files prove (retrain/checkpoints.py: a damaged or edited one is skipped, and said so); a
    run that never checkpointed starts again from step 0 (its earlier rows are moved aside, not
    lost). The run dir is locked for the whole time: a second `resume` of it stops at once.
    """
    run_dir = Path(log_dir)
    if not (run_dir / "config.toml").exists():
        raise RetrainError(f"{run_dir} is not a run directory (no config.toml); pass a run or campaign dir")
    with _locked(run_dir):
        return _resume_locked(run_dir)


def _resume_locked(run_dir: Path) -> int:
    cfg = load_config(run_dir / "config.toml")
    backend_preflight(expand_secrets(cfg))  # a service that cannot start (tinker: no key): before anything moves
    info = read_json(run_dir / "run.json")
    choice = choose_checkpoint(run_dir)
    for why in choice.skipped:
        warn(f"{run_dir}: cannot resume from {why}")
    if choice.skipped and choice.state:
        warn(f"{run_dir}: resuming from {choice.state['checkpoint']} (after step {choice.step}) instead")
    max_steps = cfg.training.max_steps
    if choice.state and choice.step >= max_steps - 1 and choice.state["checkpoint"] == f"{ADAPTER_DIR}/final":
        if info.get("status") != "completed":  # killed after the final checkpoint, before run.json said so
            RunInfo(run_dir, cfg).finish("completed", step=choice.step)
        print(f"{run_dir}: already completed ({choice.step + 1} steps); nothing to do")
        return 0
    if info.get("status") == "completed":
        warn(
            f"{run_dir}: run.json says completed, but the newest checkpoint its files prove is after step "
            f"{choice.step} of {max_steps}; continuing from there"
        )
    moved = _set_aside_rows_after(run_dir, choice.step)
    if choice.state is None and moved:
        warn(
            f"{run_dir}: no checkpoint to continue from; starting again at step 0 "
            f"({moved} metrics row(s) moved to metrics.discarded.jsonl)"
        )
    if not (run_dir / "config.json").exists():
        write_json_atomic(run_dir / "config.json", config_to_dict(cfg))
    return _execute(cfg, run_dir, state=choice.state)


def warn(message: str) -> None:
    print(f"retrain: warning: {message}", file=sys.stderr, flush=True)


def _locked(run_dir: Path) -> DirLock:
    """The run dir's lock (retrain/locks.py), taken; a dir we cannot write to is a clear error."""
    try:
        return DirLock(run_dir, "run").acquire()
    except OSError as e:
        raise RetrainError(
            f"{run_dir}: cannot write to the run dir ({e.strerror or e}); "
            "check its permissions or choose another [logging].log_dir"
        ) from None


def claim_run_dir(cfg: Config, log_dir: str | Path | None = None) -> tuple[Path, DirLock]:
    """Create and lock the dir a new run writes to: `log_dir`, else `[logging].log_dir`, else
    logs/<condition>_s<seed>; suffixed _2, _3, … when it already holds a run.

    Locking before looking inside makes the check and the claim one step: two runs started at
    once on one log_dir cannot both find it empty. A dir in use by a live run is an error naming
    that run (never a silent `_2`). `log_dir` given explicitly is never suffixed.
    """
    base = Path(log_dir or cfg.logging.log_dir or f"logs/{cfg.condition}_s{cfg.training.seed}")
    too_long = [part for part in base.parts if len(part.encode("utf-8")) > 250]  # room for a _2 suffix
    if too_long:
        raise RetrainError(
            f"[logging].log_dir: the name {too_long[0][:60]!r}... is {len(too_long[0].encode())} bytes; "
            "a directory name holds at most 255: shorten [logging].condition or log_dir"
        )
    candidate, n = base, 1
    while True:
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RetrainError(
                f"[logging].log_dir: cannot create {candidate} ({_why(e)}); choose a directory you can write to"
            ) from None
        lock = _locked(candidate)
        if not _holds_a_run(candidate):
            break
        lock.release()
        if log_dir is not None:
            raise RetrainError(
                f"{candidate} already holds a run; continue it with `retrain resume {candidate}` "
                "or choose another [logging].log_dir"
            )
        n += 1
        candidate = base.with_name(f"{base.name}_{n}")
    if candidate != base:
        print(f"{base} already holds a run; writing this one to {candidate}")
    return candidate, lock


def _holds_a_run(path: Path) -> bool:
    return any(p.name != LOCK_NAME for p in path.iterdir())


def _why(e: OSError) -> str:
    if isinstance(e, FileExistsError | NotADirectoryError):
        return "a file is in the way: a directory is needed"
    if e.errno == errno.ENAMETOOLONG:
        return "a path component is longer than the filesystem allows (255 bytes); shorten the condition or dir name"
    return e.strerror or str(e)


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass
class Counters:
    """Running totals that survive resume."""

    total_correct: int = 0
    total_completions: int = 0
    num_updates: int = 0


@dataclass
class Components:
    """What a run carries from step to step; everything but the data and the step's fixed
    inputs is checkpointed (the SEPA controller sits in `ctx.sepa`)."""

    ctx: StepContext
    data: Dataset
    cursor: Cursor
    bp: USLController
    counters: Counters


def build_components(cfg: Config, data: Dataset | None = None) -> Components:
    # The components get the config with its ${NAME} secrets filled in; files and sinks keep `cfg`.
    cfg = expand_secrets(cfg)
    # One dataset (and one held-out eval set) for every seed: seeds vary the shuffle, the LoRA
    # init and the samples, so eval_correct_rate is comparable across a campaign's runs. Loaded
    # first: a data file that fails costs no model load and leaves no server or workers running.
    if data is None:  # a new run hands over what preflight loaded
        data = load_dataset(cfg.data, cfg.eval, DATA_SEED)
    seed_everything(cfg.training.seed)  # before the backend: the LoRA init draws from torch's RNG
    ctx = build_context(cfg)
    return Components(
        ctx=ctx,
        data=data,
        cursor=Cursor(len(data.train), cfg.training.seed, shuffle=cfg.data.shuffle),
        bp=USLController.from_config(
            cfg.backpressure, group_size=cfg.training.group_size, initial_batch_size=cfg.training.batch_size
        ),
        counters=Counters(),
    )


def restore_components(parts: Components, run_dir: Path, state: dict[str, Any]) -> None:
    """Load a state `choose_checkpoint` trusted. Its files passed their checks, so what fails here
    is content (same size, different bytes) or a config edited since: say which, and the way out."""
    try:
        # A backend whose weights live elsewhere (tinker) gave save() a reference; load() takes it back.
        parts.ctx.backend.load(state.get("backend_checkpoint") or str(run_dir / state["checkpoint"]))
        parts.cursor.load_state_dict(state["cursor"])
        parts.ctx.sepa.load_state_dict(state["sepa"])
        parts.bp.load_state_dict(state["backpressure"])
        parts.counters = Counters(**state["counters"])
        _restore_rng(state["rng"])
    except RetrainError as e:  # the checkpoint disagrees with config.toml (rank, [sepa]): its own fix
        raise RetrainError(f"{run_dir}: the checkpoint {state['checkpoint']} does not fit this run: {e}") from None
    except Exception as e:  # noqa: BLE001 - any other failure here is a damaged checkpoint, reported as one
        raise RetrainError(
            f"{run_dir}: the checkpoint {state['checkpoint']} (after step {state['step']}) could not be restored: "
            f"{type(e).__name__}: {e}\nTo continue from the checkpoint before it, move "
            f"{run_dir / state['checkpoint']} out of the run dir and resume again."
        ) from None


def _execute(cfg: Config, run_dir: Path, state: dict[str, Any] | None, data: Dataset | None = None) -> int:
    info = RunInfo(run_dir, cfg)
    sinks: list[MetricsSink] = []
    start_step = state["step"] + 1 if state else 0
    backend, outcome = None, "errored"
    parts: Components | None = None
    try:
        pin_numerics(cfg, info)
        parts = build_components(cfg, data)
        backend = parts.ctx.backend
        info.record_dtype(getattr(backend, "dtype_choice", None))
        if state:
            restore_components(parts, run_dir, state)
        info.start(start_step - 1)
        console = ConsoleSink(f"{cfg.condition} s{cfg.training.seed}", cfg.training.max_steps, start_step)
        sinks = [JsonlSink(run_dir, cfg.logging.log_generations), console]
        if cfg.logging.wandb_project and cfg.logging.wandb_mode != "disabled":
            sinks.append(make_wandb_sink(cfg, run_dir, info))
        evaluator = Evaluator(
            cfg,
            parts.ctx.backend,
            parts.ctx.scorer,
            parts.data.eval,
            JsonlFile(run_dir / "eval.jsonl"),
            say=console.note,
        )
        if start_step == 0:
            evaluator.run(after_step=-1, num_updates=0)  # the base model's accuracy: where the curve starts

        for step in range(start_step, cfg.training.max_steps):
            cursor_before = parts.cursor.state_dict()
            try:
                row, generations = run_one_step(cfg, parts, step)
            except EngineUnavailable as e:  # failed at its first sample: only the cursor had moved
                parts.cursor.load_state_dict(cursor_before)
                return _stop_resumably(run_dir, step - 1, parts, info, e)
            stop = None
            if evaluator.due(step):
                try:
                    # eval_time_s goes in the row too, so `retrain status` counts it in its ETA
                    row.update(evaluator.run(after_step=step, num_updates=parts.counters.num_updates))
                except EngineUnavailable as e:  # the step itself finished: log it, checkpoint it
                    stop = e
            for sink in sinks:
                sink.log_step(row, generations)
            if stop is not None:
                return _stop_resumably(run_dir, step, parts, info, stop)
            last = step == cfg.training.max_steps - 1
            if last or (cfg.training.save_every > 0 and (step + 1) % cfg.training.save_every == 0):
                save_checkpoint(run_dir, step, parts, final=last)
            info.progress(step)
        if cfg.training.max_steps <= start_step and not (run_dir / "adapter" / "final").exists():
            save_checkpoint(run_dir, start_step - 1, parts, final=True)
        info.finish("completed")
        running = parts.counters.total_correct / max(parts.counters.total_completions, 1)
        print(
            f"Training complete. {cfg.condition} s{cfg.training.seed}: {cfg.training.max_steps} steps, "
            f"running correct rate {running:.1%}; logs in {run_dir}"
        )
        outcome = "success"
        for warning in void_warnings(cfg, run_dir):
            print(f"warning: {warning}")
        if not (run_dir.parent.parent / "manifest.json").is_file():  # a campaign says it once, for all its runs
            print(next_steps_text(run_dir), flush=True)
        return 0
    except EngineUnavailable as e:  # before step start_step (the base model's eval): nothing to checkpoint
        info.finish("failed", error=str(e))
        print(
            f"retrain: {e}\nretrain: stopped; continue with `retrain resume {run_dir}` once the server is back",
            flush=True,
        )
        return 1
    except RetrainError as e:
        info.finish_quietly("failed", error=str(e))
        raise
    except KeyboardInterrupt:
        info.finish_quietly("interrupted")
        outcome = "interrupted"
        raise
    except Exception as e:  # a crash inside training: recorded, reported, exit 1 (campaigns go on)
        if not _out_of_space(e, run_dir):
            return _crashed(info, e)
        # Disk full: a condition of the machine, not a bug; the last checkpoint is intact (it is
        # switched to only once complete), so say what happened and how to go on, without a traceback.
        info.finish_quietly("failed", error=f"{type(e).__name__}: {e}")
        print(
            f"retrain: error: no space left on the device of {run_dir} ({type(e).__name__}: {e}); the run "
            f"stopped after step {info.data['step']}. Free some space, then continue with "
            f"`retrain resume {run_dir}`",
            file=sys.stderr,
            flush=True,
        )
        return 1
    finally:
        for sink in sinks:
            try:
                sink.close()
            except Exception as e:  # noqa: BLE001 - a sink failing to close must not hide why the run ended
                warn(f"could not close {type(sink).__name__}: {type(e).__name__}: {e}")
        if hasattr(backend, "close"):  # a remote backend ends its session; the openai engine unloads, stops its server
            backend.close(outcome)
        close_scorer = getattr(parts.ctx.scorer, "close", None) if parts is not None else None
        if close_scorer is not None:
            close_scorer()  # stop the reward workers now (a campaign runs many runs in one process)


def _stop_resumably(run_dir: Path, last_step: int, parts: Components, info: RunInfo, error: Exception) -> int:
    """The sampling server went away mid-run (after retries): checkpoint the last finished step,
    record the failure, exit 1; `retrain resume` continues from there."""
    if last_step >= 0:
        save_checkpoint(run_dir, last_step, parts, final=False)
    info.finish("failed", error=f"{type(error).__name__}: {error}")
    print(
        f"retrain: {error}\nretrain: stopped after step {last_step} (checkpointed); continue with "
        f"`retrain resume {run_dir}` once the sampling server is back",
        flush=True,
    )
    return 1


def next_steps_text(run_dir: Path) -> str:
    """What to do with a finished run: the commands a new user would otherwise have to look up."""
    return (
        f"Next: retrain plot {run_dir}   (learning curve, PNG + SVG)\n"
        f"      retrain compare --baseline {run_dir} --candidate OTHER_RUN   (is another run better?)\n"
        f"      retrain squeeze {run_dir / ADAPTER_DIR / 'final'}   (how much LoRA rank it used)"
    )


def _out_of_space(e: BaseException, run_dir: Path) -> bool:
    """ENOSPC / EDQUOT, or any error while the run's disk is full (torch.save reports a full disk
    as a RuntimeError)."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return shutil.disk_usage(run_dir).free < 1 << 20
    except OSError:
        return False


def _crashed(info: RunInfo, e: BaseException) -> int:
    traceback.print_exc()
    info.finish_quietly("failed", error=f"{type(e).__name__}: {e}")
    return 1


def pin_numerics(cfg: Config, info: RunInfo) -> dict:
    """Fix what decides this run's CPU floats besides config and seed (retrain.backends.determinism).

    The thread count is `[backend] num_threads`, else the one this run recorded when it started (so a
    resume in a shell or campaign executor with another OMP_NUM_THREADS computes the same floats), else
    torch's choice now. A resume on another CPU or library versions cannot match: it says so.
    """
    from retrain.backends.determinism import configure_threads

    before = info.previous.get("numerics") or {}
    recorded = before.get("torch_threads") if isinstance(before.get("torch_threads"), int) else 0
    libraries = {k: v for k, v in info.data["versions"].items() if k != "git"}  # git: `--dirty` flips on any edit
    numerics = {**configure_threads(cfg.backend.num_threads or recorded).as_dict(), "versions": libraries}
    changed = [k for k in ("torch_threads", "cpu_capability", "versions") if k in before and before[k] != numerics[k]]
    if changed:
        print(
            f"warning: {info.path.parent}: this resume runs with other {', '.join(changed)} than the run's start "
            f"({', '.join(f'{k}: {before[k]} -> {numerics[k]}' for k in changed)}); its metrics will not match an "
            "uninterrupted run (docs/reproducibility.md)",
            file=sys.stderr,
        )
    info.data["numerics"] = numerics
    return numerics


def void_warnings(cfg: Config, run_dir: Path) -> list[str]:
    """What makes this run useless for the comparison it was meant for (e.g. a planning transform that
    saw no planning token), from the whole metrics.jsonl, so a resumed run is judged on all its steps."""
    from retrain.void import run_void_warnings

    return run_void_warnings(cfg.condition, read_rows(run_dir / "metrics.jsonl"))


def run_one_step(cfg: Config, parts: Components, step: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One RL step (`rl_step`, which also updates SEPA) with back-pressure around it; returns the
    metrics row and the generations.

    Back-pressure stays here, not in the step: it decides how many prompts the run draws from the
    cursor before the step, and it measures the wall time of everything in between."""
    t0 = time.perf_counter()
    batch_size = parts.bp.batch_size_for_step(step)
    examples_P = [parts.data.train[i] for i in parts.cursor.next_batch(batch_size)]
    out = rl_step(parts.ctx, examples_P, step=step, seed=step_seed(cfg.training.seed, step))
    parts.counters.total_correct += out.correct_count
    parts.counters.total_completions += out.total_count
    parts.counters.num_updates += out.metrics["loss"] is not None
    step_time = time.perf_counter() - t0
    parts.bp.observe(batch_size, cfg.training.group_size, out.num_tokens, step_time)
    row = {
        "step": step,
        "condition": cfg.condition,
        "seed": cfg.training.seed,
        **out.metrics,
        "running_correct_rate": parts.counters.total_correct / max(parts.counters.total_completions, 1),
        "batch_size": batch_size,
        "group_size": cfg.training.group_size,
        **parts.bp.metrics(),
        **_engine_metrics(parts.ctx.backend),
        "step_time_s": step_time,
        "tokens_per_second": out.num_tokens / step_time if step_time > 0 else None,
        **dict.fromkeys(eval_keys(cfg)),  # set on eval steps (Evaluator.run)
    }
    return row, out.generations


def _engine_metrics(backend: Backend) -> dict[str, Any]:
    """A sampling engine's per-step numbers (weight-sync time, adapter version); {} for the others."""
    step_metrics = getattr(backend, "step_metrics", None)
    return step_metrics() if callable(step_metrics) else {}


def build_context(cfg: Config) -> StepContext:
    """Everything `rl_step` needs, chosen once from the config (through the registries).

    What holds outside resources comes last, and is given back if a later part fails: the reward
    workers, then the backend (a model, a launched vLLM server, a Tinker session)."""
    t, s = cfg.training, cfg.sepa
    advantage_fn = ADVANTAGES.resolve(cfg.algorithm.advantage_mode)
    transform = TRANSFORMS.entry(cfg.algorithm.transform_mode)
    sepa = SEPAController(
        s.steps,
        s.schedule,
        s.delay_steps,
        s.correct_rate_gate,
        ema_decay=s.ema_decay,
        var_threshold=s.var_threshold,
        warmup=s.warmup,
    )
    with contextlib.ExitStack() as undo:
        scorer = make_scorer(cfg.reward)
        undo.callback(scorer.close)
        backend = make_backend(cfg)
        undo.pop_all()  # built: from here the run owns both and closes them (`_execute`'s finally)
    return StepContext(
        backend=backend,
        scorer=scorer,
        advantage_fn=advantage_fn,
        transform=transform,
        sepa=sepa,
        uncertainty_kind=cfg.algorithm.uncertainty_kind,
        strategic_grams=list(cfg.planning.strategic_grams or DEFAULT_STRATEGIC_GRAMS),
        gtpo_beta=cfg.gtpo.beta,
        hicra_alpha=cfg.hicra.alpha,
        group_size=t.group_size,
        sampling=SamplingParams(max_tokens=t.max_tokens, temperature=t.temperature, top_p=t.top_p),
        lr=t.lr,
        generations_per_prompt=cfg.logging.generations_per_prompt,
        generation_max_chars=cfg.logging.generation_max_chars,
    )


EVAL_SEED_SALT = 0x5EED_E7A1  # the eval's sampling stream differs from every training step's


def eval_keys(cfg: Config) -> tuple[str, ...]:
    """The eval metrics every metrics row carries (null except on eval steps): pass@k and mean@k only
    with k > 1; eval_time_s always."""
    keys = ("eval_correct_rate", "eval_pass_at_k", "eval_mean_at_k") if cfg.eval.k > 1 else ("eval_correct_rate",)
    return (*keys, "eval_time_s")  # time spent outside step_time_s: `retrain status` adds it to the ETA


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, "Evaluating Large
    Language Models Trained on Code"): 1 − C(n − c, k) / C(n, k), the chance that k of the n drawn
    without replacement hold at least one correct one. With n = k it is 1 if c ≥ 1 else 0.

    >>> pass_at_k(4, 0, 4), pass_at_k(4, 1, 4), pass_at_k(4, 1, 2)
    (0.0, 1.0, 0.5)
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mean_at_k(correct_P: list[int], k: int) -> float:
    """mean@k: correct completions / all completions, k per prompt (the expected accuracy of one
    sample at the eval temperature): Σ_p c_p / (k · P)."""
    return sum(correct_P) / (k * len(correct_P))


class Evaluator:
    """Held-out accuracy on prompts the run never trains on (`[eval]`): greedy, and with `k` > 1
    also pass@k and mean@k over k completions sampled at `[eval].temperature`."""

    def __init__(
        self,
        cfg: Config,
        backend: Backend,
        scorer: Scorer,
        examples: list[Example],
        out: JsonlFile,
        say: Callable[[str], None] | None = None,
    ):
        self.every = cfg.eval.every
        self.last_step = cfg.training.max_steps - 1
        self.examples = examples[: cfg.eval.num_examples]
        self.backend, self.scorer, self.out = backend, scorer, out
        max_tokens = cfg.eval.max_tokens or cfg.training.max_tokens
        self.params = SamplingParams(max_tokens=max_tokens, temperature=cfg.training.temperature, greedy=True)
        self.k = cfg.eval.k
        self.sampled = SamplingParams(
            max_tokens=max_tokens,
            top_p=cfg.training.top_p,
            temperature=cfg.eval.temperature or cfg.training.temperature,
        )
        self.seed = cfg.training.seed
        self.keys = eval_keys(cfg)
        self.say = say or (lambda text: None)
        self.enabled = self.every > 0 and bool(self.examples)

    def due(self, step: int) -> bool:
        return self.enabled and ((step + 1) % self.every == 0 or step == self.last_step)

    def _correct(self, groups: list[list[Any]], counts: dict[str, int]) -> list[int]:
        """Correct completions per prompt (all of them scored in one batch by the reward workers);
        the reward failures and timeouts of the batch are added to `counts`."""
        rewards = self.scorer.score_batch(
            [c.text for group in groups for c in group],
            [ex for group, ex in zip(groups, self.examples, strict=True) for _ in group],
        )
        # Popped here, so they land in eval.jsonl and not in the next training step's row (which
        # would then differ from an uninterrupted run's after a resume re-runs no eval).
        for key, n in self.scorer.pop_counts().items():
            counts[key] = counts.get(key, 0) + n
        correct, start = [], 0
        for group in groups:
            correct.append(sum(r > CORRECT_THRESHOLD for r in rewards[start : start + len(group)]))
            start += len(group)
        return correct

    def run(self, after_step: int, num_updates: int) -> dict[str, float | None]:
        """The eval metrics after `after_step` (-1: the base model), also appended to eval.jsonl."""
        if not self.enabled:
            return dict.fromkeys(self.keys)
        # Held-out evals take as long as several steps: say so, or the run looks stuck.
        when = "the base model" if after_step < 0 else f"after step {after_step}"
        self.say(f"eval ({when}): greedy answers to {len(self.examples)} held-out prompts ...")
        t0 = time.perf_counter()
        prompts = [ex.prompt for ex in self.examples]
        out: dict[str, float | None] = dict.fromkeys(self.keys)
        counts: dict[str, int] = {}
        greedy_P = self._correct(self.backend.sample(prompts, 1, self.params), counts)
        out["eval_correct_rate"] = sum(greedy_P) / len(prompts)
        row = {"after_step": after_step, "num_updates": num_updates, "eval_correct_rate": out["eval_correct_rate"]}
        if self.k > 1:
            # its own seed per eval point: resume re-draws the same completions, training's draws are untouched
            params = replace(self.sampled, seed=step_seed(self.seed ^ EVAL_SEED_SALT, after_step + 1))
            with warnings.catch_warnings():
                # these samples only measure accuracy; their logprobs never reach the loss, so the
                # backend's off-policy warning about a temperature other than the loss's does not apply
                warnings.filterwarnings("ignore", message="sampling at T=", category=UserWarning)
                correct_P = self._correct(self.backend.sample(prompts, self.k, params), counts)
            out["eval_pass_at_k"] = sum(pass_at_k(self.k, c, self.k) for c in correct_P) / len(prompts)
            out["eval_mean_at_k"] = mean_at_k(correct_P, self.k)
            row.update(
                {
                    "eval_pass_at_k": out["eval_pass_at_k"],
                    "eval_mean_at_k": out["eval_mean_at_k"],
                    "eval_k": self.k,
                    "eval_temperature": params.temperature,
                }
            )
        out["eval_time_s"] = time.perf_counter() - t0
        self.out.append({**row, **counts, "num_examples": len(prompts), "eval_time_s": out["eval_time_s"]})
        correct = round(out["eval_correct_rate"] * len(prompts))
        self.say(
            f"eval ({when}): {out['eval_correct_rate']:.1%} correct ({correct}/{len(prompts)}) "
            f"in {out['eval_time_s']:.1f}s"
        )
        return out


# ---------------------------------------------------------------------------------------------
# Seeds, checkpoints, run.json


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_seed(seed: int, step: int) -> int:
    """The sampling seed of one step: a pure function of (run seed, step), so resume is exact."""
    return (seed * 1_000_003 + step * 7_919 + 17) % 2**63


def _rng_state() -> dict:
    import torch

    np_state = np.random.get_state()
    return {
        "python": repr(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
    }


def _restore_rng(state: dict) -> None:
    import ast

    import torch

    random.setstate(ast.literal_eval(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch"])), dtype=torch.uint8))


def save_checkpoint(run_dir: Path, step: int, parts: Components, final: bool) -> None:
    """Adapter + optimizer (backend.save) and this state, in a new dir; then trainer_state.json.

    The dir is filled under a temporary parent (adapter/.partial/<name>: the backend sees the
    final name, which tinker gives its service checkpoint) and renamed into place once it holds
    everything, with its own record of the state and of every file's size (retrain/checkpoints.py
    checks them on resume); trainer_state.json is written last. So a kill or a full disk at any
    point leaves the previous checkpoint in force, never a half-written one."""
    name = checkpoint_dir_name(step, final)
    rel = f"{ADAPTER_DIR}/{name}"
    partial = run_dir / ADAPTER_DIR / ".partial" / name
    shutil.rmtree(partial, ignore_errors=True)
    reference = parts.ctx.backend.save(str(partial))
    apply_default_modes(partial)  # safetensors writes 0600; the JSON beside it is 0644 (with umask 022)
    state = {
        "step": step,
        "checkpoint": rel,
        "backend_checkpoint": reference,  # e.g. the tinker:// path of the weights + optimizer state
        "optimizer": reference or f"{rel}/optimizer.pt",
        "cursor": parts.cursor.state_dict(),
        "sepa": parts.ctx.sepa.state_dict(),
        "backpressure": parts.bp.state_dict(),
        "counters": parts.counters.__dict__,
        "rng": _rng_state(),
        "saved_at": now_iso(),
    }
    write_json_atomic(partial / TRAINER_STATE, {**state, "files": file_sizes(partial)})
    _replace_dir(partial, run_dir / rel)
    with contextlib.suppress(OSError):
        partial.parent.rmdir()  # adapter/.partial, empty again
    write_json_atomic(run_dir / TRAINER_STATE, state)


def _replace_dir(new: Path, dest: Path) -> None:
    """Put `new` at `dest`. A dir cannot be swapped atomically, so an old `dest` (adapter/final of
    a run extended past its first max_steps) is renamed aside first and removed after."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
        new.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(dest)


def _set_aside_rows_after(run_dir: Path, last_step: int) -> int:
    """Rows logged after the last checkpoint will be logged again by the resumed run. Move them to
    `<file>.discarded.jsonl` (appended, never deleted) so metrics.jsonl reads like one clean run.
    Returns how many metrics.jsonl rows were moved."""
    files = [
        run_dir / "metrics.jsonl",
        run_dir / "emergence" / "steps.jsonl",
        run_dir / "emergence" / "generations.jsonl",
        run_dir / "eval.jsonl",
    ]
    moved = 0
    for path in files:
        if not path.exists():
            continue
        keep, drop = [], []
        for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                step = row.get("step", row.get("after_step", -1))
            except json.JSONDecodeError:
                step = None  # a half-written last line from a kill: set it aside too
            (keep if last_step >= 0 and step is not None and step <= last_step else drop).append(line)
        if not drop:
            continue
        if path.name == "metrics.jsonl":
            moved = len(drop)
        with open(path.with_suffix(".discarded.jsonl"), "a", encoding="utf-8") as f:
            f.writelines(line if line.endswith("\n") else line + "\n" for line in drop)
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(keep), encoding="utf-8")
        os.replace(tmp, path)
    return moved


class RunInfo:
    """run.json: status, progress, versions and code state; rewritten atomically after every step."""

    def __init__(self, run_dir: Path, cfg: Config):
        self.path = run_dir / "run.json"
        old = read_json(self.path)
        self.previous = old  # what the run recorded before this (re)start
        self.data = {
            "status": "pending",
            "condition": cfg.condition,
            "seed": cfg.training.seed,
            "max_steps": cfg.training.max_steps,
            "step": -1,
            "created_at": old.get("created_at", now_iso()),
            "wandb_id": old.get("wandb_id")
            or f"{cfg.condition}_s{cfg.training.seed}_{os.urandom(3).hex()}".replace("+", "-")
            .replace("~", "-")
            .replace("=", "-"),
            "resumes": old.get("resumes", -1) + 1,
            "versions": versions(),
        }

    def record_dtype(self, choice: dict | None) -> None:
        """What `[backend] dtype` resolved to and why (`dtype = "auto"` probes the CPU:
        retrain.backends.precision). A resumed run that resolves differently is warned about: its
        later steps then run at another precision than the earlier ones."""
        if not choice:
            return
        before = self.previous.get("dtype")
        if isinstance(before, dict) and before.get("dtype") != choice.get("dtype"):
            print(
                f"retrain: warning: this run started in {before.get('dtype')} and continues in "
                f"{choice.get('dtype')} ({choice.get('reason')}); set [backend] dtype explicitly to keep one",
                file=sys.stderr,
                flush=True,
            )
        self.data["dtype"] = dict(choice)

    def start(self, step: int) -> None:
        self.data.update(
            status="running",
            step=step,
            pid=os.getpid(),
            hostname=socket.gethostname(),
            started_at=now_iso(),
            finished_at=None,
            error=None,
        )
        self._write()

    def progress(self, step: int) -> None:
        self.data["step"] = step
        self._write()

    def finish(self, status: str, error: str | None = None, step: int | None = None) -> None:
        self.data.update(status=status, finished_at=now_iso(), error=error)
        if step is not None:
            self.data["step"] = step
        self._write()

    def finish_quietly(self, status: str, error: str | None = None) -> None:
        """`finish` for error paths: a failure to record (the disk that filled up) is reported
        on stderr and never replaces the error being handled."""
        try:
            self.finish(status, error=error)
        except OSError as e:
            warn(f"could not record status {status!r} in {self.path}: {e}")

    def _write(self) -> None:
        self.data["updated_at"] = now_iso()
        if not self.path.parent.exists():
            return
        try:
            write_json_atomic(self.path, self.data)
        except OSError as first:
            # On a full disk the atomic write cannot create its temporary file, but run.json can
            # still be overwritten where it lies (no new blocks): a truthful status beats "running".
            try:
                overwrite_json_in_place(self.path, self.data)
            except OSError:
                raise first from None


def make_wandb_sink(cfg: Config, run_dir: Path, info: RunInfo) -> WandbSink:
    """wandb run `<condition>_s<seed>`, group `<condition>`, tags `[<condition>, seed<seed>]` (docs/metrics.md),
    so "group by condition" in the wandb UI gives one line per condition."""
    lg = cfg.logging
    name = f"{cfg.condition}_s{cfg.training.seed}"
    config = {
        "condition": cfg.condition,
        "advantage_mode": cfg.algorithm.advantage_mode,
        "transform_mode": cfg.algorithm.transform_mode,
        "seed": cfg.training.seed,
        **flatten_dict(config_to_dict(cfg)),
    }
    return WandbSink(
        project=lg.wandb_project,
        entity=lg.wandb_entity,
        name=name,
        group=lg.wandb_group or cfg.condition,
        tags=[cfg.condition, f"seed{cfg.training.seed}", *lg.wandb_tags],
        config=config,
        mode=lg.wandb_mode,
        log_dir=run_dir,
        run_id=info.data["wandb_id"],
    )


def versions() -> dict:
    import importlib.metadata as md

    out = {"retrain": retrain.__version__, "python": platform.python_version()}
    for pkg in ("torch", "transformers", "peft"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    out["git"] = _git_describe()
    return out


def _git_describe() -> str | None:
    try:
        r = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            capture_output=True,
            text=True,
            cwd=Path(retrain.__file__).parent,
            timeout=5,
        )
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
