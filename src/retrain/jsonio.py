"""JSON files every part of retrain writes and reads: run.json, trainer_state.json, manifest.json.

One writer (atomic, NaN-free), one tolerant reader and one timestamp format, so a run dir, a
campaign manifest and `retrain status` agree on what they see.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import datetime
from pathlib import Path


def finite(x):
    """NaN/inf → None, recursively: JSON has neither, and pandas reads null as missing."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x


def write_json_atomic(path: Path | str, obj: object) -> None:
    """Write `obj` as JSON so a reader never sees a half-written file: a temp file in the same
    directory (same filesystem), fsync, then os.replace, which is atomic on POSIX."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(finite(obj), f, indent=2, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file 0600; give it the mode a plain open() would (umask applied), so
        # `retrain status` or a report run by another user on a shared cluster can read it.
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def default_mode(directory: bool = False) -> int:
    """The mode a plain open() / mkdir() gives under the current umask (0644 / 0755 with umask 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def apply_default_modes(root: Path | str) -> None:
    """Give `root` and everything under it the umask-based default mode. Writers that go through a
    temporary file or dir (mkstemp, mkdtemp, safetensors) leave 0600 / 0700, which locks a shared
    cluster's other users (and their `retrain status`, reports, squeeze) out of a run's adapters."""
    root = Path(root)
    for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
        if not path.is_symlink():
            os.chmod(path, default_mode(path.is_dir()))


def read_json(path: Path | str) -> dict:
    """The JSON object in `path`, or {} when it is missing, unreadable, not a regular file (a link to
    /dev/zero is never read), over 64 MiB, malformed, nested too deeply or not an object."""
    from retrain.logfiles import LogProblems, read_json_object

    try:
        return read_json_object(path, LogProblems(path)) or {}
    except FileNotFoundError:
        return {}


def now_iso() -> str:
    """Local time with its UTC offset, to the second: unambiguous across hosts and time zones."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


def overwrite_json_in_place(path: Path | str, obj: object) -> None:
    """Rewrite an existing JSON file where it lies, compactly (no indent, so it rarely needs more
    bytes than the indented file it replaces). For when `write_json_atomic` cannot create its
    temporary file (a full disk): not atomic, so only a last resort."""
    data = (json.dumps(finite(obj), separators=(",", ":"), ensure_ascii=False) + "\n").encode()
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate()
        f.flush()
        os.fsync(f.fileno())
