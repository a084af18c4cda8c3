"""`manifest.json`: the campaign's own record of what it runs and how each run ended.

The manifest is the campaign's index, not the source of truth for a run: each run's `run.json` and
`metrics.jsonl` are. `retrain resume` and `retrain status` trust a run's own files over the manifest,
so a manifest left behind by a killed runner (states still "running") is harmless.

Layout of the document (version 1)::

    {"version": 1, "created_at": "2025-02-15T14:30:22+00:00", "config_path": "/abs/campaign.toml",
     "conditions": ["grpo+none", ...], "seeds": [42, 101], "max_steps": 100, "executor": "sequential",
     "runs": [{"name": "grpo+none_s42", "condition": "grpo+none", "seed": 42, "state": "pending",
               "returncode": null, "log_dir": "runs/grpo+none_s42", "adapter_dir": "runs/grpo+none_s42/adapter",
               "started_at": null, "finished_at": null, "elapsed_s": null, "stdout": null, "stderr": null, "error": null}],
     "squeeze": null}

Paths inside are relative to the campaign dir, so a campaign dir can be moved or copied whole.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from retrain.errors import RetrainError
from retrain.jsonio import now_iso, write_json_atomic

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
RUN_STATES = ("pending", "running", "completed", "failed", "interrupted")
# Fields a caller may set on a run entry; anything else is a programming error caught early.
RUN_FIELDS = (
    "name", "condition", "seed", "state", "returncode", "log_dir", "adapter_dir",
    "started_at", "finished_at", "elapsed_s", "stdout", "stderr", "error",
)  # fmt: skip


def run_entry(name: str, condition: str, seed: int, log_dir: str) -> dict:
    """A fresh (pending) manifest entry for one run; `log_dir` relative to the campaign dir."""
    return {
        "name": name,
        "condition": condition,
        "seed": seed,
        "state": "pending",
        "returncode": None,
        "log_dir": log_dir,
        "adapter_dir": f"{log_dir}/adapter",
        "started_at": None,
        "finished_at": None,
        "elapsed_s": None,
        "stdout": None,
        "stderr": None,
        "error": None,
    }


def new_manifest(
    *,
    config_path: str | None,
    conditions: list[str],
    seeds: list[int],
    max_steps: int,
    executor: str,
    runs: list[dict],
) -> dict:
    """The manifest document of a campaign that has not started any run yet."""
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise RetrainError(f"campaign: two runs share a name {dupes}; make conditions or seeds unique")
    return {
        "version": MANIFEST_VERSION,
        "created_at": now_iso(),
        "config_path": config_path,
        "conditions": list(conditions),
        "seeds": list(seeds),
        "max_steps": max_steps,
        "executor": executor,
        "runs": runs,
        "squeeze": None,
    }


def is_campaign_dir(path: str | os.PathLike) -> bool:
    """True when `path` is a campaign directory (holds a manifest.json)."""
    return (Path(path) / MANIFEST_NAME).is_file()


def read_manifest(campaign_dir: str | os.PathLike) -> dict:
    """Parse `<campaign_dir>/manifest.json`; a missing or corrupt file is a RetrainError."""
    path = Path(campaign_dir) / MANIFEST_NAME
    if not path.is_file():
        raise RetrainError(
            f"{campaign_dir}: no {MANIFEST_NAME} here, so this is not a campaign directory; "
            "pass a dir made by `retrain CAMPAIGN.toml` (logs/campaign_<timestamp>)"
        )
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RetrainError(f"{path}: cannot read the manifest ({e}); restore it from a backup") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), list):
        raise RetrainError(f"{path}: not a retrain campaign manifest (no 'runs' list)")
    return doc


class Manifest:
    """The manifest of one campaign dir, rewritten atomically on every change.

    Executors report from worker threads, so every mutation holds a lock and writes the whole
    document before releasing it: the file on disk always equals some consistent in-memory state.
    """

    def __init__(self, campaign_dir: str | os.PathLike, doc: dict):
        self.campaign_dir = Path(campaign_dir)
        self.path = self.campaign_dir / MANIFEST_NAME
        self._doc = doc
        self._lock = threading.Lock()

    @classmethod
    def create(cls, campaign_dir: str | os.PathLike, doc: dict) -> Manifest:
        manifest = cls(campaign_dir, doc)
        with manifest._lock:
            write_json_atomic(manifest.path, manifest._doc)
        return manifest

    @classmethod
    def load(cls, campaign_dir: str | os.PathLike) -> Manifest:
        return cls(campaign_dir, read_manifest(campaign_dir))

    def snapshot(self) -> dict:
        """A deep copy of the document (safe to read while others update it)."""
        with self._lock:
            return json.loads(json.dumps(self._doc))

    @property
    def runs(self) -> list[dict]:
        return self.snapshot()["runs"]

    def run(self, name: str) -> dict:
        for entry in self.runs:
            if entry["name"] == name:
                return entry
        raise KeyError(name)

    def run_dir(self, name: str) -> Path:
        """Absolute path of a run's log dir."""
        return (self.campaign_dir / self.run(name)["log_dir"]).resolve()

    def update_run(self, name: str, **fields: object) -> dict:
        """Set fields of one run entry and persist; returns the updated entry."""
        unknown = set(fields) - set(RUN_FIELDS)
        if unknown:
            raise ValueError(f"unknown manifest run fields {sorted(unknown)}")
        if "state" in fields and fields["state"] not in RUN_STATES:
            raise ValueError(f"run state must be one of {RUN_STATES}, got {fields['state']!r}")
        with self._lock:
            for entry in self._doc["runs"]:
                if entry["name"] == name:
                    entry.update(fields)
                    write_json_atomic(self.path, self._doc)
                    return dict(entry)
        raise KeyError(name)

    def mark_running_as(self, state: str) -> list[str]:
        """Move every run still in state "running" to `state` (after an interrupt); returns their names."""
        with self._lock:
            moved = [e["name"] for e in self._doc["runs"] if e["state"] == "running"]
            for entry in self._doc["runs"]:
                if entry["state"] == "running":
                    entry["state"] = state
            if moved:
                write_json_atomic(self.path, self._doc)
        return moved

    def set_field(self, key: str, value: object) -> None:
        """Set a top-level field (e.g. "squeeze") and persist."""
        with self._lock:
            self._doc[key] = value
            write_json_atomic(self.path, self._doc)

    def get_field(self, key: str) -> object:
        with self._lock:
            return json.loads(json.dumps(self._doc.get(key)))
