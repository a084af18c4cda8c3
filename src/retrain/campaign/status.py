"""`retrain status [ROOT]`: what is running, done, failed or stale under a logs directory.

    retrain status                 # everything under ./logs
    retrain status logs --json     # the same as one JSON document
    retrain status --watch 10      # refresh every 10 s until Ctrl-C

Campaigns (dirs with manifest.json) show a condition × seed matrix (steps done / max, latest
correct_rate, state), elapsed time and an ETA; standalone runs (dirs with run.json or metrics.jsonl
outside a campaign) one row each. Read-only: it never writes under ROOT.

States: done, running, failed, interrupted (stopped by Ctrl-C; `retrain resume` continues it),
stale (run.json says running but nobody holds the run's lock, or, for runs from before the lock,
its process is gone on this host; or nothing was written for a long time: the runner was killed;
`retrain resume` continues it), pending (not started).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from retrain.errors import RetrainError
from retrain.jsonio import read_json
from retrain.locks import is_locked
from retrain.logfiles import Columns, LogProblems, clean_text, first_row, read_columns, read_rows

MANIFEST_NAME = "manifest.json"
# Without a step time to go by, a run silent for this long is stale (covers a big model's first step).
STALE_DEFAULT_S = 1800.0
STALE_MIN_S = 600.0
STALE_STEP_FACTOR = 5.0
# Subdirs of a run that never hold runs: skip them while searching.
_SKIP_DIRS = {"adapter", "emergence", "wandb", "__pycache__"}


@dataclass
class RunStatus:
    name: str
    path: str
    condition: str | None
    seed: int | None
    steps_done: int  # completed steps (last step index + 1)
    max_steps: int | None
    correct_rate: float | None  # the latest metrics row's
    state: str  # done | running | failed | interrupted | stale | pending
    elapsed_s: float  # Σ step_time_s + eval_time_s over logged steps (training time, across resumes)
    eta_s: float | None  # (median step time + eval time per step) × steps left; 0 when done, None when unknown
    median_step_s: float | None
    updated_at: str | None
    error: str | None = None
    log_problems: str | None = None  # what was skipped reading metrics.jsonl (damaged lines or values)


@dataclass
class CampaignStatus:
    name: str
    path: str
    state: str  # running | done | failed | stopped | pending
    created_at: str | None
    conditions: list[str]
    seeds: list[int]
    max_steps: int | None
    executor: str | None
    counts: dict[str, int]
    elapsed_s: float | None  # wall time since creation (until the last update when nothing runs)
    eta_s: float | None  # None when nothing is running
    squeeze_rank: int | None
    runs: list[RunStatus] = field(default_factory=list)
    # matrix[condition][str(seed)] = {"steps_done", "max_steps", "correct_rate", "state"} or None
    matrix: dict[str, dict[str, dict | None]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Pure rules


def stale_after_s(median_step_s: float | None) -> float:
    """Silence (seconds since run.json's updated_at) after which a "running" run counts as stale:
    max(600, 5 × median step time), or 1800 before the first step time is known."""
    if median_step_s is None:
        return STALE_DEFAULT_S
    return max(STALE_MIN_S, STALE_STEP_FACTOR * median_step_s)


def derive_state(
    run_status: str | None,
    pid_alive: bool | None,
    age_s: float | None,
    median_step_s: float | None,
    *,
    has_metrics: bool,
    manifest_state: str | None = None,
) -> str:
    """A run's display state from its run.json status, its process and how long it has been silent.

    `pid_alive` is None when the run's host is not this one (the pid says nothing there).
    """
    if run_status == "completed":
        return "done"
    if run_status in ("failed", "interrupted"):
        return run_status
    silent_too_long = age_s is not None and age_s > stale_after_s(median_step_s)
    if run_status == "running":
        return "stale" if pid_alive is False or silent_too_long else "running"
    if has_metrics:  # a run without run.json (older layout): only its file times speak
        return "stale" if silent_too_long or age_s is None else "running"
    if manifest_state == "failed":  # never got as far as writing run.json (e.g. could not start)
        return "failed"
    return "pending"


def eta_seconds(steps_left: int, median_step_s: float | None, parallel: int = 1) -> float | None:
    """median step time × steps left / runs in parallel; None when no step time is known yet."""
    if steps_left <= 0:
        return 0.0
    if median_step_s is None:
        return None
    return steps_left * median_step_s / max(parallel, 1)


def campaign_state(states: list[str]) -> str:
    """running if any run runs; done if all are done; failed if all finished and some failed;
    pending if none started; otherwise stopped (resumable with `retrain resume`)."""
    if any(s == "running" for s in states):
        return "running"
    if states and all(s == "done" for s in states):
        return "done"
    if states and all(s in ("done", "failed") for s in states):
        return "failed"
    if all(s == "pending" for s in states):
        return "pending"
    return "stopped"


def format_duration(seconds: float | None) -> str:
    """12s, 5m03s, 3h02m, 2d04h; '—' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    s = round(max(seconds, 0.0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


# ---------------------------------------------------------------------------------------------
# Reading run dirs


def read_metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl rows, bounded and cleaned (`retrain.logfiles.read_rows`): a half-written or corrupt
    line (a run killed mid-write) or a bad value is skipped; [] when there is no such file."""
    try:
        return read_rows(run_dir / "metrics.jsonl", problems=LogProblems(run_dir / "metrics.jsonl"))
    except FileNotFoundError:
        return []


def read_progress(run_dir: Path) -> tuple[dict, Columns | None, LogProblems]:
    """(first metrics row, the step_time_s, correct_rate and eval_time_s columns, what was skipped) of a run.

    Only three keys of each row are parsed (`retrain.logfiles.read_columns`), so a million-row
    run refreshes in about a second, and a damaged file (a link to /dev/zero, NaN steps, a label
    with a lone surrogate) is skipped and counted, never read without bound.
    """
    path = run_dir / "metrics.jsonl"
    problems = LogProblems(path)
    try:
        cols = read_columns(path, ["step_time_s", "correct_rate", "eval_time_s"], problems=problems)
    except FileNotFoundError:
        return {}, None, problems
    head = LogProblems(path)
    header = first_row(path, head)
    problems.repaired.update(head.repaired)
    return header, cols, problems


def _text(value: object) -> str | None:
    """A string fit to print (lone surrogates and control characters replaced), or None."""
    return clean_text(value)[0] if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def to_epoch(value: object) -> float | None:
    """Seconds since the epoch from a number or an ISO-8601 string (naive = local time)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


def pid_alive(pid: object, hostname: object) -> bool | None:
    """Whether process `pid` exists, when `hostname` is this machine; None when it cannot be known."""
    if not isinstance(pid, int) or pid <= 0 or hostname != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return None
    return True


def run_status(
    run_dir: Path,
    *,
    name: str | None = None,
    manifest_entry: dict | None = None,
    default_max_steps: int | None = None,
    now: float | None = None,
) -> RunStatus:
    """The status of one run dir, from its run.json and metrics.jsonl (and its manifest entry)."""
    now = time.time() if now is None else now
    entry = manifest_entry or {}
    info = read_json(run_dir / "run.json")
    header, cols, problems = read_progress(run_dir)
    has_rows = cols is not None and len(cols.index) > 0
    times_S = cols.values["step_time_s"] if has_rows else None
    times = [float(t) for t in times_S[np.isfinite(times_S) & (times_S >= 0)]] if has_rows else []
    median = statistics.median(times) if times else None
    # Held-out evals run between steps and are not in step_time_s; spread their time over the steps.
    eval_S = cols.values["eval_time_s"] if has_rows else None
    eval_total = float(eval_S[np.isfinite(eval_S) & (eval_S >= 0)].sum()) if has_rows else 0.0
    eval_per_step = eval_total / len(cols.index) if has_rows else 0.0
    step = int(cols.index[-1]) if has_rows else _int(info.get("step"))
    max_steps = _int(info.get("max_steps")) or _int(default_max_steps)
    if max_steps is None:
        training = read_json(run_dir / "config.json").get("training")
        max_steps = _int(training.get("max_steps")) if isinstance(training, dict) else None
    updated = to_epoch(info.get("updated_at"))
    if updated is None and has_rows:
        updated = (run_dir / "metrics.jsonl").stat().st_mtime
    # The run's lock (retrain/locks.py) answers for any host sharing the filesystem, and a recycled
    # pid cannot fool it; runs older than the lock fall back to the pid on this host.
    held = is_locked(run_dir)
    state = derive_state(
        _text(info.get("status")),
        pid_alive(info.get("pid"), info.get("hostname")) if held is None else held,
        None if updated is None else now - updated,
        median,
        has_metrics=has_rows,
        manifest_state=_text(entry.get("state")),
    )
    steps_done = (step if step is not None else -1) + 1
    steps_left = (max_steps - steps_done) if max_steps is not None else None
    if state == "done":
        eta = 0.0
    elif state == "failed" or steps_left is None:
        eta = None
    else:
        eta = eta_seconds(steps_left, None if median is None else median + eval_per_step)
    rate = float(cols.values["correct_rate"][-1]) if has_rows else float("nan")
    seed = next(
        (v for v in (_int(header.get("seed")), _int(info.get("seed")), _int(entry.get("seed"))) if v is not None), None
    )
    return RunStatus(
        name=name or run_dir.name,
        path=str(run_dir),
        condition=_text(header.get("condition")) or _text(info.get("condition")) or _text(entry.get("condition")),
        seed=seed,
        steps_done=steps_done,
        max_steps=max_steps,
        correct_rate=rate if math.isfinite(rate) else None,
        state=state,
        elapsed_s=float(sum(times)) + eval_total,
        eta_s=eta,
        median_step_s=median,
        updated_at=_text(info.get("updated_at")),
        error=_text(info.get("error")) or _text(entry.get("error")),
        log_problems=problems.summary(),
    )


def campaign_status(campaign_dir: Path, now: float | None = None) -> CampaignStatus:
    """Status of a campaign: every run of its manifest, the matrix, counts, elapsed and ETA."""
    now = time.time() if now is None else now
    manifest = read_json(campaign_dir / MANIFEST_NAME)
    entries = [e for e in manifest.get("runs", []) if isinstance(e, dict) and e.get("name")]
    max_steps = manifest.get("max_steps")
    runs = [
        run_status(
            campaign_dir / e.get("log_dir", f"runs/{e['name']}"),
            name=e["name"],
            manifest_entry=e,
            default_max_steps=max_steps,
            now=now,
        )
        for e in entries
    ]
    for run, entry in zip(runs, entries, strict=True):  # the grid's labels, not whatever a row says
        run.condition, run.seed = entry.get("condition", run.condition), entry.get("seed", run.seed)
    states = [r.state for r in runs]
    counts = {s: states.count(s) for s in dict.fromkeys(states)}
    state = campaign_state(states)
    medians = [r.median_step_s for r in runs if r.median_step_s is not None]
    pooled = statistics.median(medians) if medians else None
    eta = None
    if state == "running":
        left = sum(max((r.max_steps or 0) - r.steps_done, 0) for r in runs if r.state not in ("done", "failed"))
        eta = eta_seconds(left, pooled, parallel=counts.get("running", 1))
    created = to_epoch(manifest.get("created_at"))
    last_update = max((t for r in runs if (t := to_epoch(r.updated_at)) is not None), default=None)
    end = now if state == "running" else last_update
    conditions = list(manifest.get("conditions") or dict.fromkeys(r.condition for r in runs))
    seeds = list(manifest.get("seeds") or dict.fromkeys(r.seed for r in runs))
    matrix: dict[str, dict[str, dict | None]] = {c: {str(s): None for s in seeds} for c in conditions}
    for r in runs:
        matrix.setdefault(str(r.condition), {})[str(r.seed)] = {
            "steps_done": r.steps_done, "max_steps": r.max_steps, "correct_rate": r.correct_rate, "state": r.state,
        }  # fmt: skip
    squeeze = manifest.get("squeeze") or {}
    return CampaignStatus(
        name=campaign_dir.name,
        path=str(campaign_dir),
        state=state,
        created_at=manifest.get("created_at"),
        conditions=conditions,
        seeds=seeds,
        max_steps=max_steps,
        executor=manifest.get("executor"),
        counts=counts,
        elapsed_s=None if created is None or end is None else max(end - created, 0.0),
        eta_s=eta,
        squeeze_rank=squeeze.get("recommended_rank"),
        runs=runs,
        matrix=matrix,
    )


def discover(root: Path) -> tuple[list[Path], list[Path]]:
    """(campaign dirs, standalone run dirs) under `root`, root included; never descends into either."""
    campaigns, runs = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if MANIFEST_NAME in filenames:
            campaigns.append(here)
            dirnames[:] = []
        elif "run.json" in filenames or "metrics.jsonl" in filenames:
            runs.append(here)
            dirnames[:] = []
        else:
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
    return campaigns, runs


def collect(root: str | os.PathLike, now: float | None = None) -> dict:
    """The whole status of ROOT as a JSON-ready dict: {root, generated_at, campaigns, runs}."""
    root = Path(root)
    if not root.is_dir():
        raise RetrainError(
            f"status: {root} does not exist or is not a directory; pass the logs directory, e.g. `retrain status logs`"
        )
    now = time.time() if now is None else now
    campaign_dirs, run_dirs = discover(root)
    campaigns = [campaign_status(d, now) for d in campaign_dirs]
    campaigns.sort(key=lambda c: (to_epoch(c.created_at) or 0.0, c.name), reverse=True)  # newest first
    runs = [run_status(d, name=str(d.relative_to(root)) if d != root else d.name, now=now) for d in run_dirs]
    return {
        "root": str(root),
        "generated_at": datetime.fromtimestamp(now).astimezone().isoformat(timespec="seconds"),
        "campaigns": [asdict(c) for c in campaigns],
        "runs": [asdict(r) for r in runs],
    }


# ---------------------------------------------------------------------------------------------
# Rendering

_STYLE = {
    "done": "green",
    "running": "cyan",
    "failed": "red",
    "stale": "yellow",
    "interrupted": "magenta",
    "pending": "dim",
    "stopped": "yellow",
}


def _steps(done: int, max_steps: int | None) -> str:
    return f"{done}/{max_steps if max_steps is not None else '?'}"


def _rate(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def render(report: dict):
    """A rich renderable of `collect()`'s report: banner, one matrix per campaign, a runs table."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts = []
    camps, runs = report["campaigns"], report["runs"]
    cstates = [c["state"] for c in camps]
    rstates = [r["state"] for c in camps for r in c["runs"]] + [r["state"] for r in runs]
    banner = "  |  ".join([
        f"Campaigns: {_tally(cstates) or 'none'}",
        f"Runs: {_tally(rstates) or 'none'}",
    ])  # fmt: skip
    parts.append(Text(f"{report['root']}", style="dim"))
    parts.append(Text(banner, style="bold"))
    for c in camps:
        parts.append(Text(""))
        head = Text(f"Campaign {c['name']} ", style="bold")
        head.append(c["state"], style=_STYLE.get(c["state"], ""))
        head.append(f"  {c['path']}", style="dim")
        parts.append(head)
        squeeze = f"  squeeze rank {c['squeeze_rank']}" if c["squeeze_rank"] is not None else ""
        parts.append(Text(
            f"  {len(c['conditions'])} conditions x {len(c['seeds'])} seeds = {len(c['runs'])} runs"
            f"  max_steps={c['max_steps']}  executor={c['executor']}\n"
            f"  {_tally([r['state'] for r in c['runs']])}  elapsed {format_duration(c['elapsed_s'])}"
            + (f"  ETA {format_duration(c['eta_s'])}" if c["state"] == "running" else "") + squeeze
        ))  # fmt: skip
        table = Table(show_edge=False, pad_edge=False)
        table.add_column("condition", no_wrap=True)
        for seed in c["seeds"]:
            table.add_column(f"s{seed}", justify="right", no_wrap=True)
        for cond in c["conditions"]:
            cells = []
            for seed in c["seeds"]:
                cell = c["matrix"].get(cond, {}).get(str(seed))
                if cell is None:
                    cells.append(Text("—", style="dim"))
                    continue
                t = Text(f"{_steps(cell['steps_done'], cell['max_steps'])} {_rate(cell['correct_rate'])} ")
                t.append(cell["state"], style=_STYLE.get(cell["state"], ""))
                cells.append(t)
            table.add_row(cond, *cells)
        parts.append(table)
    if runs:
        parts.append(Text(""))
        table = Table(title="Runs", title_justify="left", show_edge=False, pad_edge=False)
        for col in ("run", "condition", "seed", "steps", "correct", "state", "elapsed", "ETA"):
            table.add_column(col, no_wrap=True)
        for r in runs:
            table.add_row(
                r["name"],
                str(r["condition"] or "—"),
                str(r["seed"] if r["seed"] is not None else "—"),
                _steps(r["steps_done"], r["max_steps"]),
                _rate(r["correct_rate"]),
                Text(r["state"], style=_STYLE.get(r["state"], "")),
                format_duration(r["elapsed_s"]),
                format_duration(r["eta_s"]),
            )
        parts.append(table)
    if not camps and not runs:
        parts.append(Text("No campaigns or runs here yet.", style="dim"))
    damaged = [r["log_problems"] for c in camps for r in c["runs"] if r.get("log_problems")]
    damaged += [r["log_problems"] for r in runs if r.get("log_problems")]
    if damaged:
        parts.append(Text(""))
        parts += [Text(f"warning: {text}", style="yellow") for text in damaged]
    return Group(*parts)


def _tally(states: list[str]) -> str:
    """'2 running, 3 done' in a fixed order."""
    order = ["running", "done", "failed", "stale", "interrupted", "stopped", "pending"]
    counts = {s: states.count(s) for s in dict.fromkeys(states)}
    return ", ".join(f"{counts[s]} {s}" for s in sorted(counts, key=lambda s: (order + [s]).index(s)))


# ---------------------------------------------------------------------------------------------
# CLI


def run_command(args: argparse.Namespace) -> int:
    """`retrain status`: print once, or refresh every `--watch` seconds until Ctrl-C."""
    from rich.console import Console

    console = Console()
    if args.watch is None:
        report = collect(args.root)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            console.print(render(report))
        return 0
    if args.watch <= 0:
        raise RetrainError(f"--watch: the refresh interval must be > 0 seconds, got {args.watch}")
    try:
        if args.json:  # one compact JSON document per line, for tools that tail it
            while True:
                print(json.dumps(collect(args.root)), flush=True)
                time.sleep(args.watch)
        from rich.live import Live

        with Live(render(collect(args.root)), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(args.watch)
                live.update(render(collect(args.root)), refresh=True)
    except KeyboardInterrupt:
        return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `status` verb; the parsed namespace's `func(args)` runs it and returns the exit code."""
    parser = subparsers.add_parser(
        "status",
        help="campaigns and runs under a logs dir: condition x seed matrix, state, ETA",
        description="Campaigns (dirs with manifest.json) and standalone runs under ROOT: steps done/max, "
        "latest correct_rate and state (done/running/failed/interrupted/stale/pending), elapsed time and ETA.",
    )
    parser.add_argument("root", nargs="?", default="logs", help="directory to search (default: logs)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    parser.add_argument(
        "--watch",
        nargs="?",
        type=float,
        const=5.0,
        default=None,
        metavar="SECONDS",
        help="refresh every SECONDS (default 5) until Ctrl-C",
    )
    parser.set_defaults(func=run_command)
    return parser
