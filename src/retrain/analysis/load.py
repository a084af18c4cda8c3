"""Reading run and campaign directories (docs/metrics.md) into columns, rows and tidy frames.

A run dir holds `metrics.jsonl` (one row per step), `eval.jsonl` (held-out evals) and
`emergence/{steps,generations}.jsonl`; a campaign dir holds `manifest.json` and
`runs/<condition>_s<seed>/`. The `runs/` folder is the truth about which runs exist; the manifest is
only read for labels and the squeeze table.

The verbs read only the metrics they use, as arrays (`load_run(dir, columns)`, `Run.column`): a
campaign of a million rows loads in seconds. The guide's row-wise API (`load_metrics`,
`load_emergence`, `load_campaign`) parses every row. Both skip and count damage the same way
(`retrain.logfiles`): one warning per damaged file.

Example::

    from retrain.analysis import load_metrics, load_campaign, load_run
    rows = load_metrics("logs/campaign_20260101_120000/runs/maxrl+gtpo_sepa_s42")
    df = load_campaign("logs/campaign_20260101_120000")   # condition, seed, step, every metric
    df.groupby(["condition", "step"]).correct_rate.mean()
    run = load_run("logs/campaign_20260101_120000/runs/maxrl+gtpo_sepa_s42", ["correct_rate"])
    run.step_S, run.column("correct_rate"), run.series("eval_correct_rate")
"""

from __future__ import annotations

import functools
import glob
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrain.errors import RetrainError
from retrain.logfiles import (
    LogProblems,
    LogProblemsWarning,
    clean_text,
    first_row,
    read_columns,
    read_json_object,
    read_rows,
)

RUN_NAME_RE = re.compile(r"^(?P<condition>.+)_s(?P<seed>-?\d+)$")
GLOB_CHARS = set("*?[")
EVAL_METRIC = "eval_correct_rate"
# Held-out metrics, from eval.jsonl (which also holds the base model's after_step = -1 point); pass@k
# and mean@k only with [eval] k > 1.
EVAL_METRICS = (EVAL_METRIC, "eval_pass_at_k", "eval_mean_at_k")
# What compare, litmus and the run table read from metrics.jsonl (only these keys are parsed; any
# other metric is read when first asked for, see `Run.column`).
DEFAULT_COLUMNS = ("correct_rate", "mean_reward", "correct_count", "total_count")
MalformedLineWarning = LogProblemsWarning  # the name earlier versions warned with


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every JSON-object line of `path`, cleaned (see `retrain.logfiles.read_rows`); blank lines are
    ignored, bad lines and values skipped with one warning for the file that counts them.

    A missing file raises RetrainError naming the path. A half-written last line (a run killed
    mid-write) is the common bad line, so it is a warning, not an error.
    """
    path = Path(path)
    try:
        return read_rows(path)
    except FileNotFoundError:
        raise RetrainError(
            f"{path}: file not found. Check the run directory (it should contain "
            f"metrics.jsonl and emergence/), or pass the right path."
        ) from None


def load_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Per-step rows of `<run_dir>/metrics.jsonl`, in file order (the guide's `load_metrics`)."""
    return read_jsonl(Path(run_dir) / "metrics.jsonl")


def load_emergence(run_dir: str | Path) -> dict[str, list[dict[str, Any]]]:
    """`{"steps": [...], "generations": [...]}` from `<run_dir>/emergence/` (the guide's `load_emergence`)."""
    root = Path(run_dir) / "emergence"
    return {"steps": read_jsonl(root / "steps.jsonl"), "generations": read_jsonl(root / "generations.jsonl")}


def dedupe_by_step(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per step, the last one written, sorted by step; rows without an integer step are dropped.

    `retrain resume` moves rows logged after the last checkpoint to metrics.discarded.jsonl, so a
    run dir written by retrain has one row per step; this is a safety net for logs copied together
    by hand or written by other tools, where the last row for a step is the one that counts.
    """
    by_step: dict[int, dict[str, Any]] = {}
    for row in rows:
        step = row.get("step")
        if isinstance(step, bool) or not isinstance(step, int | float) or not math.isfinite(step):
            continue
        if step == int(step):
            by_step[int(step)] = row
    return [by_step[s] for s in sorted(by_step)]


def _align(index_S: np.ndarray, other_index: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`values` (keyed by `other_index`) at the steps of `index_S`; NaN where absent."""
    out = np.full(len(index_S), np.nan)
    if len(other_index):
        pos = np.clip(np.searchsorted(other_index, index_S), 0, len(other_index) - 1)
        hit = other_index[pos] == index_S
        out[hit] = values[pos[hit]]
    return out


@dataclass(eq=False)
class Run:
    """One run dir, loaded as columns: `step_S` (sorted, one entry per logged step) and, for each
    metric read, a float64 array aligned with it (NaN: not logged that step, or a skipped value).

    Only the columns asked for at load time are parsed; `column(name)` reads any other one when
    first needed. `metrics` (every row as a dict) and `steps` (emergence/steps.jsonl) are the
    row-wise views, read only if used.
    """

    run_dir: Path
    condition: str
    seed: int | None
    step_S: np.ndarray
    columns: dict[str, np.ndarray]
    header: dict[str, Any] = field(default_factory=dict)  # the first row: batch_size, group_size, ...
    problems: list[str] = field(default_factory=list)  # one summary per damaged file that was read
    eval_k: int | None = None  # [eval] k of the sampled evals in eval.jsonl (set by `evals`)

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def num_steps(self) -> int:
        return len(self.step_S)

    @property
    def last_step(self) -> int | None:
        return int(self.step_S[-1]) if len(self.step_S) else None

    @property
    def first_step(self) -> int | None:
        return int(self.step_S[0]) if len(self.step_S) else None

    def _note(self, problems: LogProblems) -> None:
        if problems:
            self.problems.append(problems.summary())
            problems.warn(stacklevel=3)

    def column(self, metric: str) -> np.ndarray:
        """`metric` at every step of `step_S` (NaN where not logged or skipped); read when first asked for."""
        if metric not in self.columns:
            path = self.run_dir / "metrics.jsonl"
            problems = LogProblems(path)
            try:
                cols = read_columns(path, [metric], problems=problems)
                self.columns[metric] = _align(self.step_S, cols.index, cols.values[metric])
            except FileNotFoundError:
                self.columns[metric] = np.full(self.num_steps, np.nan)
            self._note(problems.values_only())  # its bad lines were reported when the run was loaded
        return self.columns[metric]

    @functools.cached_property
    def evals(self) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
        """{metric: (after_step_E, value_E)} from eval.jsonl for each of `EVAL_METRICS` with a value there,
        including the base model's after_step = -1; None when the run has no eval.jsonl."""
        path = self.run_dir / "eval.jsonl"
        if not path.exists():
            return None
        problems = LogProblems(path)
        cols = read_columns(path, [*EVAL_METRICS, "eval_k"], index="after_step", min_index=-1, problems=problems)
        self._note(problems)
        out = {}
        for metric in EVAL_METRICS:
            ok = np.isfinite(cols.values[metric])
            if ok.any():
                out[metric] = (cols.index[ok], cols.values[metric][ok])
        k = cols.values["eval_k"][np.isfinite(cols.values["eval_k"])]
        self.eval_k = int(k[-1]) if len(k) else None
        return out

    def series(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) where `metric` has a usable value, ascending by step.

        The held-out metrics (`EVAL_METRICS`) come from eval.jsonl when it has them (it holds the
        before-training point, after_step = -1, which no metrics row has), else from the metrics rows
        of the eval steps.
        """
        if metric in EVAL_METRICS and self.evals and metric in self.evals:
            return self.evals[metric]
        col = self.column(metric)
        ok = np.isfinite(col)
        return self.step_S[ok], col[ok]

    def window_values(self, metric: str, start: int, end: int) -> np.ndarray:
        """Usable values of `metric` over steps in [start, end)."""
        steps, values = self.series(metric)
        return values[(steps >= start) & (steps < end)]

    def window_steps(self, metric: str, start: int, end: int) -> list[int]:
        """The steps in [start, end) that have a usable value of `metric` (which points a mean used)."""
        steps, _ = self.series(metric)
        return steps[(steps >= start) & (steps < end)].tolist()

    def steps_in_window(self, start: int, end: int) -> int:
        """How many logged steps (metric rows) fall in [start, end)."""
        return int(np.searchsorted(self.step_S, end) - np.searchsorted(self.step_S, start))

    def metric_by_step(self, metric: str) -> dict[int, float]:
        """{step: value} where `metric` has a usable value."""
        steps, values = self.series(metric)
        return dict(zip(steps.tolist(), values.tolist(), strict=True))

    @functools.cached_property
    def _counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(steps, correct, total): per step, from the row's correct_count / total_count; else
        correct_rate × batch_size × group_size (exact: correct_rate = correct / completions and
        completions = batch_size × group_size); else emergence/steps.jsonl's counts."""
        c, t = self.column("correct_count").copy(), self.column("total_count").copy()
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(c) & np.isfinite(t) & (t > 0) & (c >= 0) & (c <= t)
            if not ok.all():
                total = self.column("batch_size") * self.column("group_size")
                rate = self.column("correct_rate")
                fill = ~ok & np.isfinite(rate) & np.isfinite(total) & (total > 0)
                c[fill], t[fill] = np.round(rate[fill] * total[fill]), total[fill]
                ok |= fill
        if not ok.all() and (self.run_dir / "emergence" / "steps.jsonl").is_file():
            path = self.run_dir / "emergence" / "steps.jsonl"
            problems = LogProblems(path)
            em = read_columns(path, ["correct_count", "total_count"], problems=problems)
            self._note(problems)
            ec, et = (_align(self.step_S, em.index, em.values[k]) for k in ("correct_count", "total_count"))
            with np.errstate(invalid="ignore"):
                fill = ~ok & np.isfinite(ec) & np.isfinite(et) & (et > 0) & (ec >= 0) & (ec <= et)
            c[fill], t[fill] = ec[fill], et[fill]
            ok |= fill
        return self.step_S[ok], c[ok].astype(np.int64), t[ok].astype(np.int64)

    def episode_counts_by_step(self) -> dict[int, tuple[int, int]]:
        """{step: (correct, total)} completions per step (see `_counts` for the sources)."""
        steps, c, t = self._counts
        return {s: (ci, ti) for s, ci, ti in zip(steps.tolist(), c.tolist(), t.tolist(), strict=True)}

    def window_counts(self, start: int, end: int) -> tuple[int, int]:
        """(correct, total) completions over steps in [start, end)."""
        steps, c, t = self._counts
        lo, hi = np.searchsorted(steps, start), np.searchsorted(steps, end)
        return int(c[lo:hi].sum()), int(t[lo:hi].sum())

    def completions(self) -> int:
        """Total completions the run sampled (over every logged step)."""
        return int(self._counts[2].sum())

    @functools.cached_property
    def metrics(self) -> list[dict[str, Any]]:
        """Every metrics row as a dict, deduplicated by step (reads and parses the whole file)."""
        return dedupe_by_step(read_jsonl(self.run_dir / "metrics.jsonl"))

    @functools.cached_property
    def steps(self) -> list[dict[str, Any]]:
        """emergence/steps.jsonl rows, deduplicated by step ([] when the file is absent)."""
        path = self.run_dir / "emergence" / "steps.jsonl"
        return dedupe_by_step(read_jsonl(path)) if path.is_file() else []


def _seed_from(header: dict[str, Any], name_seed: int | None) -> int | None:
    s = header.get("seed")
    return s if isinstance(s, int) and not isinstance(s, bool) else name_seed


def load_run(run_dir: str | Path, columns: tuple[str, ...] | list[str] = DEFAULT_COLUMNS) -> Run:
    """Load one run dir: `columns` of metrics.jsonl (required), parsed as arrays (see `Run`).

    condition and seed come from the first metrics row (the trainer writes both on every row); the
    dir name `<condition>_s<seed>` is the fallback. Damage in the file (bad lines or values) is
    skipped and reported as one warning (`retrain.logfiles`); a metrics.jsonl that is not a regular
    file (e.g. a link to /dev/zero) gives a run with no steps.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RetrainError(
            f"{run_dir}: run directory not found. Pass an existing run dir, a glob such "
            f"as 'logs/campaign_X/runs/maxrl+gtpo_sepa_s*', or a campaign dir with condition labels."
        )
    path = run_dir / "metrics.jsonl"
    problems = LogProblems(path)
    try:
        cols = read_columns(path, list(columns), problems=problems)
    except FileNotFoundError:
        raise RetrainError(
            f"{path}: file not found. Check the run directory (it should contain "
            f"metrics.jsonl and emergence/), or pass the right path."
        ) from None
    head_problems = LogProblems(path)  # its skipped lines are counted by read_columns already
    header = first_row(path, head_problems)
    problems.repaired.update(head_problems.repaired)
    condition, name_seed = _condition(run_dir, header)
    run = Run(
        run_dir=run_dir,
        condition=condition,
        seed=_seed_from(header, name_seed),
        step_S=cols.index,
        columns=dict(cols.values),
        header=header,
    )
    run._note(problems)
    return run


# Parsing is CPU-bound (a regex per key over every byte), so large campaigns load their runs in
# worker processes, one per core. Below this many bytes of metrics the workers' start-up costs more
# than it saves.
PARALLEL_MIN_BYTES = 64 << 20


def _load_quietly(run_dir: Path, columns: tuple[str, ...]) -> Run:
    """load_run in a worker: its warnings are re-issued by the parent from `Run.problems`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LogProblemsWarning)
        return load_run(run_dir, columns)


def _workers(run_dirs: list[Path]) -> int:
    """How many processes to load these runs with: 1 (here) unless there is enough to parse and cores to do it."""
    import os
    import sys

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores < 2 or len(run_dirs) < 2 or not sys.platform.startswith("linux"):  # fork is only safe to rely on there
        return 1
    size = 0
    for d in run_dirs:
        try:
            size += (d / "metrics.jsonl").stat().st_size
        except OSError:
            pass
    return min(cores, len(run_dirs)) if size >= PARALLEL_MIN_BYTES else 1


def load_runs(run_dirs: list[Path], columns: tuple[str, ...] | list[str] = DEFAULT_COLUMNS) -> list[Run]:
    """`load_run` of each dir, in order; in worker processes (one per core) when there is a lot to parse.

    Each damaged file still gives exactly one warning (issued here, from the run's `problems`).
    """
    columns = tuple(columns)
    workers = _workers(run_dirs)
    if workers == 1:
        return [load_run(d, columns) for d in run_dirs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        runs = list(pool.map(_load_quietly, run_dirs, [columns] * len(run_dirs)))
    for run in runs:
        for text in run.problems:
            warnings.warn(text, LogProblemsWarning, stacklevel=2)
    return runs


def campaign_run_dirs(campaign_dir: str | Path) -> list[Path]:
    """Every run dir under `<campaign_dir>/runs/` that has a metrics.jsonl, sorted by name (one that is
    not a regular file, e.g. a link to /dev/zero, is listed so that loading it says so)."""
    campaign_dir = Path(campaign_dir)
    runs_root = campaign_dir / "runs"
    if not runs_root.is_dir():
        raise RetrainError(
            f"{campaign_dir}: not a campaign directory (no runs/ folder). Pass a "
            f"campaign dir such as logs/campaign_YYYYmmdd_HHMMSS."
        )
    return sorted(
        p
        for p in runs_root.iterdir()
        if p.is_dir() and ((p / "metrics.jsonl").exists() or (p / "metrics.jsonl").is_symlink())
    )


def _condition(run_dir: Path, header: dict[str, Any]) -> tuple[str, int | None]:
    """(condition, seed from the dir name): the first row's condition, else the dir name's `<condition>_s<seed>`."""
    name = clean_text(run_dir.name)[0]  # a name with undecodable bytes arrives with lone surrogates
    m = RUN_NAME_RE.match(name)
    name_condition, name_seed = (m["condition"], int(m["seed"])) if m else (name, None)
    condition = header.get("condition")
    return (condition if isinstance(condition, str) else name_condition), name_seed


def campaign_labels(campaign_dir: str | Path) -> dict[Path, str]:
    """{run dir: condition label} of a campaign's runs, from each run's first metrics row only (cheap)."""
    out = {}
    for d in campaign_run_dirs(campaign_dir):
        header = first_row(d / "metrics.jsonl", LogProblems(d / "metrics.jsonl"))
        out[d] = _condition(d, header)[0]
    return out


def load_campaign_runs(campaign_dir: str | Path, columns: tuple[str, ...] | list[str] = DEFAULT_COLUMNS) -> list[Run]:
    """Every run of a campaign (runs with no usable metrics row are skipped: they never logged a step)."""
    runs = load_runs(campaign_run_dirs(campaign_dir), columns)
    return [r for r in runs if r.num_steps]


def load_manifest(campaign_dir: str | Path) -> dict[str, Any] | None:
    """The campaign's manifest.json, or None when absent or unreadable (it is advisory, runs/ is the truth)."""
    path = Path(campaign_dir) / "manifest.json"
    if not path.exists():
        return None
    problems = LogProblems(path)
    data = read_json_object(path, problems)
    if data is None:
        warnings.warn(f"{problems.summary()}; using runs/ only", LogProblemsWarning, stacklevel=2)
    return data


def runs_to_frame(runs: list[Run], columns: list[str] | tuple[str, ...] | None = None):
    """A tidy DataFrame: one row per (run, step) with condition, seed, step, run, then every metric
    (`columns=None`: every row parsed in full) or only `columns` (from the parsed arrays: fast).

    With held-out metrics (`EVAL_METRICS`) among `columns`, their points come from `Run.series`
    (eval.jsonl), so the before-training point is a row at step -1 with only those metrics set.
    """
    import pandas as pd

    front = ["condition", "seed", "step", "run"]
    if columns is not None:
        frames = []
        for run in runs:
            df = pd.DataFrame({"step": run.step_S, **{c: run.column(c) for c in columns if c not in EVAL_METRICS}})
            for metric in (c for c in columns if c in EVAL_METRICS):
                steps, values = run.series(metric)
                df = df.merge(pd.DataFrame({"step": steps, metric: values}), on="step", how="outer")
            df.insert(0, "condition", run.condition)
            df.insert(1, "seed", run.seed)
            df.insert(3, "run", run.name)
            frames.append(df)
        if not frames:
            return pd.DataFrame(columns=front + list(columns))
        df = pd.concat(frames, ignore_index=True)
        # grouping a million rows by a string column took seconds; by a categorical, milliseconds
        df["condition"] = pd.Categorical(df["condition"], categories=sorted({r.condition for r in runs}))
        df["run"] = pd.Categorical(df["run"], categories=sorted({r.name for r in runs}))
        return df
    records = []
    for run in runs:
        for row in run.metrics:
            rec = dict(row)
            rec["condition"], rec["seed"], rec["run"] = run.condition, run.seed, run.name
            records.append(rec)
    if not records:
        return pd.DataFrame(columns=front)
    df = pd.DataFrame.from_records(records)
    return df[front + [c for c in df.columns if c not in front]]


def load_campaign(campaign_dir: str | Path):
    """The campaign as one tidy pandas DataFrame (condition, seed, step, run, every metric).

    Rows are deduplicated per (run, step) keeping the last one written (see `dedupe_by_step`).
    """
    return runs_to_frame(load_campaign_runs(campaign_dir))


def _has_glob(text: str) -> bool:
    return any(ch in GLOB_CHARS for ch in text)


def resolve_arm(
    specs: list[str],
    campaign_dir: str | Path | None = None,
    arm: str = "arm",
    campaign_runs: list[Run] | None = None,
    columns: tuple[str, ...] | list[str] = DEFAULT_COLUMNS,
    labels: dict[Path, str] | None = None,
) -> list[Run]:
    """Runs for one side of a comparison.

    Each spec is a run dir, a glob of run dirs (`logs/c/runs/maxrl+gtpo_sepa_s*`), or, when
    `campaign_dir` is given, a condition label (every run of that condition in the campaign).
    `campaign_runs` (the campaign already loaded) or `labels` (`campaign_labels`, which reads only
    each run's first row) saves reading the campaign again for the second arm; with `labels`, only
    the runs of the chosen conditions are loaded.
    """
    # Name what the user typed: the --baseline/--candidate flags of compare and litmus, or plot's
    # positional inputs (which have no flag to name).
    flags = arm in ("baseline", "candidate")
    where = (lambda spec: f"--{arm} {spec!r}") if flags else repr
    usage = (
        "retrain compare CAMPAIGN --baseline COND --candidate COND"
        if flags
        else "retrain plot CAMPAIGN, or retrain plot RUN_DIR ... (globs work too)"
    )
    runs: list[Run] = []
    for spec in specs:
        if _has_glob(spec):
            matches = sorted(Path(p) for p in glob.glob(spec) if Path(p).is_dir())
            if not matches and campaign_dir is not None:
                matches = sorted(
                    Path(p) for p in glob.glob(str(Path(campaign_dir) / "runs" / spec)) if Path(p).is_dir()
                )
            if not matches:
                raise RetrainError(
                    f"{where(spec)}: no run directory matches this glob. Check the path "
                    f"(e.g. 'logs/campaign_X/runs/maxrl+gtpo_sepa_s*')."
                )
            runs.extend(load_runs(matches, columns))
        elif Path(spec).is_dir() and (Path(spec) / "metrics.jsonl").exists():
            runs.append(load_run(spec, columns))
        elif campaign_dir is not None:
            if campaign_runs is not None:
                chosen, known = [r for r in campaign_runs if r.condition == spec], {r.condition for r in campaign_runs}
            else:
                labels = campaign_labels(campaign_dir) if labels is None else labels
                chosen = load_runs([d for d, label in labels.items() if label == spec], columns)
                known = set(labels.values())
            if not chosen:
                known = sorted(known)
                raise RetrainError(
                    f"{where(spec)}: no run of this condition in {campaign_dir}. "
                    f"Conditions there: {', '.join(known) or 'none'}."
                )
            runs.extend(chosen)
        elif Path(spec).is_dir():
            raise RetrainError(
                f"{where(spec)}: this directory has no metrics.jsonl, so it is not a run dir. "
                + (
                    "To compare conditions of a campaign, pass the campaign dir first: "
                    if flags
                    else "Pass a campaign dir (with runs/) or run dirs: "
                )
                + f"{usage}."
            )
        else:
            raise RetrainError(
                f"{where(spec)}: no such run directory. Pass run dirs or globs"
                + (", or a campaign dir first and condition labels: " if flags else " or a campaign dir: ")
                + f"{usage}."
            )
    seen: dict[Path, Run] = {}
    for r in runs:
        seen.setdefault(r.run_dir.resolve(), r)
    runs = list(seen.values())
    empty = [r.name for r in runs if not r.num_steps]
    if empty:
        warnings.warn(
            f"{f'--{arm}: ' if flags else ''}runs with no metric rows were left out: {', '.join(empty)}", stacklevel=2
        )
        runs = [r for r in runs if r.num_steps]
    if not runs:
        raise RetrainError(
            f"{f'--{arm}: ' if flags else ''}no runs with logged steps. "
            "Check that the runs have started (metrics.jsonl is not empty)."
        )
    return runs


def arm_label(runs: list[Run]) -> str:
    """The arm's condition label, or the labels joined with ' | ' when runs of several conditions were given."""
    return " | ".join(sorted({r.condition for r in runs}))
