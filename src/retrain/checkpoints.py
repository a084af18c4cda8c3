"""Which checkpoint a resumed run may trust, and the records that let it tell.

A run dir's checkpoints (written by `retrain.run.save_checkpoint`)::

    trainer_state.json              # the current checkpoint's state; written last, atomically
    adapter/checkpoint_step_<N>/    # the backend's files (adapter, optimizer.pt) and
        trainer_state.json          #   the same state plus the size of every file beside it
    adapter/final/                  # the last step's checkpoint, same layout

A state says which step it follows, which checkpoint dir holds the weights, and everything else
that decides the next step (data cursor, SEPA, back-pressure, counters, RNG). `choose_checkpoint`
trusts a state only when the files prove it, because files get damaged or edited by hand:

- it is a JSON object with every key, of the right type;
- its checkpoint dir lies under `<run>/adapter/` (a state must not point a run at other files);
- the dir holds every file its record lists, at the recorded size (a truncated adapter or
  optimizer, or a dir overwritten half-way, fails here) and the record agrees on the step;
- metrics.jsonl holds the row of that step: rows are logged before the checkpoint is saved, so a
  state claiming step 500 after 11 logged rows was edited or belongs elsewhere.

The newest state that passes wins; each one skipped is reported with its reason. When states exist
and none passes, resuming stops with every reason and the ways out (nothing is guessed).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from retrain.errors import RetrainError
from retrain.jsonio import read_json

TRAINER_STATE = "trainer_state.json"
ADAPTER_DIR = "adapter"
_CHECKPOINT_NAME = re.compile(r"checkpoint_step_(\d+)|final")


@dataclass
class Choice:
    """What resume continues from: `state` (None: start at step 0) and what was skipped on the way."""

    state: dict | None
    source: str | None = None  # the file the state came from, relative to the run dir
    skipped: list[str] = field(default_factory=list)  # "<file>: <why it cannot be used>"

    @property
    def step(self) -> int:
        """The last step the checkpoint includes; -1 when starting from scratch."""
        return self.state["step"] if self.state else -1


def checkpoint_dir_name(step: int, final: bool) -> str:
    return "final" if final else f"checkpoint_step_{step + 1}"


def file_sizes(folder: Path) -> dict[str, int]:
    """{relative path: size} of every file under `folder` except its own record."""
    return {
        p.relative_to(folder).as_posix(): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).as_posix() != TRAINER_STATE
    }


def state_problems(state: object) -> list[str]:
    """What is wrong with the shape of a state document (empty when nothing is)."""
    if not isinstance(state, dict):
        return [f"not a JSON object (got {type(state).__name__})"]
    expected = {
        "step": int,
        "checkpoint": str,
        "cursor": dict,
        "sepa": dict,
        "backpressure": dict,
        "counters": dict,
        "rng": dict,
    }
    problems = []
    for key, kind in expected.items():
        if key not in state:
            problems.append(f"missing key {key!r}")
        elif not isinstance(state[key], kind) or isinstance(state[key], bool):
            problems.append(f"{key!r} should be {kind.__name__}, got {type(state[key]).__name__}")
    if problems:
        return problems
    if state["step"] < -1:
        problems.append(f"'step' is {state['step']}")
    for key in ("total_correct", "total_completions", "num_updates"):
        if not isinstance(state["counters"].get(key), int):
            problems.append(f"counters.{key} should be an integer")
    rng = state["rng"]
    if not (
        isinstance(rng.get("python"), str) and isinstance(rng.get("numpy"), list) and isinstance(rng.get("torch"), str)
    ):
        problems.append("'rng' should hold python (text), numpy (list) and torch (text) states")
    return problems


def confined_checkpoint(run_dir: Path, rel: str) -> Path | None:
    """`run_dir/rel` when `rel` is a plain relative path under adapter/, else None.

    Checked on the text, not by resolving links: a user may have made adapter/ a link to other
    storage, but a state naming "/etc/x" or "adapter/../../x" is refused either way."""
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or len(p.parts) != 2 or p.parts[0] != ADAPTER_DIR or "\\" in rel:
        return None
    return run_dir / p


def logged_steps(run_dir: Path) -> set[int]:
    """Steps with a row in metrics.jsonl (damaged lines skipped)."""
    steps: set[int] = set()
    try:
        with open(run_dir / "metrics.jsonl", encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and isinstance(row.get("step"), int):
                    steps.add(row["step"])
    except OSError:
        pass
    return steps


def checkpoint_problems(run_dir: Path, state: dict, steps: set[int]) -> list[str]:
    """Why `state` (already well-formed) cannot be resumed from, checked against the files."""
    folder = confined_checkpoint(run_dir, state["checkpoint"])
    if folder is None:
        return [f"its checkpoint path {state['checkpoint']!r} is not a directory under {ADAPTER_DIR}/ of this run"]
    if not folder.is_dir():
        return [f"its checkpoint {state['checkpoint']} is missing"]
    problems = []
    record = read_json(folder / TRAINER_STATE)
    if record:
        if record.get("step") != state["step"]:
            problems.append(
                f"it says step {state['step']} but {state['checkpoint']}/{TRAINER_STATE} says step {record.get('step')}"
            )
        listed = record.get("files")
        if isinstance(listed, dict):
            for name, size in listed.items():
                path = folder / name
                if not path.is_file():
                    problems.append(f"{state['checkpoint']}/{name} is missing")
                elif path.stat().st_size != size:
                    problems.append(
                        f"{state['checkpoint']}/{name} has {path.stat().st_size} bytes, "
                        f"{size} were written (truncated or overwritten)"
                    )
    elif not any(folder.iterdir()):
        problems.append(f"its checkpoint {state['checkpoint']} is empty")
    if state["step"] >= 0 and state["step"] not in steps:
        last = max(steps) if steps else None
        problems.append(
            f"it says step {state['step']} but metrics.jsonl "
            + (f"ends at step {last}" if last is not None else "has no rows")
        )
    return problems


def _read_state(path: Path) -> tuple[dict | None, str | None]:
    """(state, None) or (None, why it cannot be read)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except OSError as e:
        return None, f"cannot be read ({e.strerror or e})"
    if not text.strip():
        return None, "is empty"
    try:
        doc = json.loads(text)
    except ValueError as e:
        return None, f"is not valid JSON ({e})"
    problems = state_problems(doc)
    return (doc, None) if not problems else (None, "; ".join(problems))


def _candidates(run_dir: Path) -> list[Path]:
    """trainer_state.json, then each checkpoint's own record, newest step first."""
    records = []
    adapter = run_dir / ADAPTER_DIR
    if adapter.is_dir():
        for folder in adapter.iterdir():
            if folder.is_dir() and _CHECKPOINT_NAME.fullmatch(folder.name) and (folder / TRAINER_STATE).is_file():
                step = read_json(folder / TRAINER_STATE).get("step")
                records.append((step if isinstance(step, int) else -2, folder.name == "final", folder / TRAINER_STATE))
    records.sort(key=lambda r: (r[0], r[1]), reverse=True)
    top = run_dir / TRAINER_STATE
    return ([top] if top.exists() else []) + [r[2] for r in records]


def choose_checkpoint(run_dir: Path | str) -> Choice:
    """The newest state the files prove (see the module docstring); raises RetrainError when
    states exist but none can be trusted. No state anywhere: `Choice(None)` (step 0)."""
    run_dir = Path(run_dir)
    steps = logged_steps(run_dir)
    skipped: list[str] = []
    seen: set[str] = set()
    candidates = _candidates(run_dir)
    for path in candidates:
        rel = path.relative_to(run_dir).as_posix()
        state, why = _read_state(path)
        if state is None:
            skipped.append(f"{rel} {why}")
            continue
        problems = checkpoint_problems(run_dir, state, steps)
        if problems:
            if state["checkpoint"] not in seen:
                skipped.append(f"{rel}: " + "; ".join(problems))
            seen.add(state["checkpoint"])
            continue
        return Choice(state, rel, skipped)
    if candidates:
        reasons = "\n".join(f"  - {s}" for s in skipped)
        raise RetrainError(
            f"{run_dir}: no checkpoint can be trusted, so the run cannot continue exactly:\n{reasons}\n"
            f"To start this run again from step 0, move {TRAINER_STATE} and {ADAPTER_DIR}/ out of the run dir "
            "and resume (rows logged so far are moved to metrics.discarded.jsonl, not deleted); "
            "or start a new run."
        )
    return Choice(None)


def is_complete(run_dir: Path | str, max_steps: int) -> bool:
    """Whether the files prove the run finished: a trusted state at step max_steps - 1 whose
    checkpoint is adapter/final (run.json's word alone is not enough: it can be edited)."""
    try:
        choice = choose_checkpoint(run_dir)
    except RetrainError:
        return False
    return (
        choice.state is not None
        and choice.step >= max_steps - 1
        and choice.state["checkpoint"] == f"{ADAPTER_DIR}/final"
    )
