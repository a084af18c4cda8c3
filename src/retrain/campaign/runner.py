"""Run and resume campaigns: lay out the campaign dir, keep the manifest, hand runs to an executor.

    run_campaign(cfg)              → logs/campaign_<YYYYmmdd_HHMMSS>/ with every run, exit code
    resume_campaign(campaign_dir)  → finish exactly what is missing, exit code

Layout (docs/campaigns.md)::

    <log_root>/campaign_20250215_143022/
      campaign.toml        # the resolved campaign config
      manifest.json        # conditions, seeds, max_steps, each run's state, squeeze result
      runs/<label>_s<seed>/config.toml ...   # a normal run dir each (own adapter dir)

Exit codes: 0 every run completed, 1 some run failed, 130 interrupted (resume with `retrain resume`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from retrain.campaign.executors import (
    STDERR_NAME,
    STDOUT_NAME,
    Executor,
    Job,
    Outcome,
    make_executor,
    read_run_status,
)  # fmt: skip
from retrain.campaign.manifest import Manifest, new_manifest, run_entry
from retrain.errors import RetrainError
from retrain.jsonio import now_iso, write_json_atomic
from retrain.locks import DirLock, dir_lock

EXIT_INTERRUPTED = 130


def run_campaign(cfg, config_path: str | None = None, *, executor: Executor | None = None) -> int:
    """Start the campaign `cfg` describes (a Config with a `[campaign]` table); returns the exit code."""
    from retrain.campaign.grid import expand_campaign
    from retrain.config import config_to_toml

    if cfg.campaign is None:
        raise RetrainError("run_campaign: the config has no [campaign] table; run it as a single run instead")
    specs = expand_campaign(cfg)
    if not specs:
        raise RetrainError("[campaign]: the grid is empty (no seeds?); set [campaign].seeds = [42, 101, 202]")
    check_run_names([spec.name for spec in specs])  # before the campaign dir exists: nothing half made
    # A backend, sampling server, model or data file that cannot serve the runs stops the campaign
    # before its dir exists.
    preflight_runs([(spec.name, spec.config) for spec in specs])
    campaign_dir = make_campaign_dir(Path(cfg.campaign.log_root))
    # Held from the first file on: a `retrain resume` of this dir started meanwhile stops at once.
    with dir_lock(campaign_dir, "campaign"):
        (campaign_dir / "campaign.toml").write_text(config_to_toml(cfg), encoding="utf-8")
        entries = [prepare_run_dir(campaign_dir, spec) for spec in specs]
        mark_checked(
            campaign_dir,
            [(campaign_dir / entry["log_dir"], spec.config) for entry, spec in zip(entries, specs, strict=True)],
        )
        # The manifest is written last: a dir without one is a setup that never finished, not a campaign.
        manifest = Manifest.create(
            campaign_dir,
            new_manifest(
                config_path=str(Path(config_path).resolve()) if config_path else None,
                conditions=list(dict.fromkeys(spec.label for spec in specs)),
                seeds=list(dict.fromkeys(spec.seed for spec in specs)),
                max_steps=specs[0].config.training.max_steps,
                executor=cfg.campaign.executor,
                runs=entries,
            ),
        )
        doc = manifest.snapshot()
        print(
            f"Campaign: {len(doc['conditions'])} conditions x {len(doc['seeds'])} seeds = {len(entries)} runs, "
            f"{doc['max_steps']} steps each, executor {cfg.campaign.executor} -> {campaign_dir}",
            flush=True,
        )
        return execute(manifest, executor or executor_for(cfg), SqueezeHook.from_config(cfg))


def resume_campaign(campaign_dir: str | Path, *, executor: Executor | None = None) -> int:
    """Finish a campaign: completed runs skipped, partial runs resumed, never-started runs started.

    A run counts as completed only when its own run.json says so (the manifest may be stale after a
    kill); everything else goes through `retrain.run.resume`, which continues from the last checkpoint.
    """
    manifest = Manifest.load(campaign_dir)
    try:
        lock = DirLock(manifest.campaign_dir, "campaign").acquire()
    except OSError as e:
        raise RetrainError(f"{manifest.campaign_dir}: cannot write to the campaign dir ({e.strerror or e})") from None
    with lock:
        return _resume_locked(Manifest.load(campaign_dir), executor)  # reread: the holder before us may have changed it


def _resume_locked(manifest: Manifest, executor: Executor | None) -> int:
    from retrain.config import load_config

    toml_path = manifest.campaign_dir / "campaign.toml"
    if not toml_path.is_file():
        raise RetrainError(f"{toml_path} is missing; the campaign dir is incomplete and cannot be resumed")
    cfg = load_config(toml_path)
    done = sync_completed(manifest)
    todo = [e["name"] for e in manifest.runs if e["name"] not in done]
    # The service is checked again, once (it may be gone since the campaign started), and each run's
    # start takes the campaign's word for it. A run whose config.toml is missing or does not load is
    # left to its own start, which says what is wrong with it.
    run_cfgs = []
    for run_dir in map(manifest.run_dir, todo):
        with contextlib.suppress(RetrainError, OSError):
            run_cfgs.append((run_dir, load_config(run_dir / "config.toml")))
    preflight_backends([(run_dir.name, run_cfg) for run_dir, run_cfg in run_cfgs])
    mark_checked(manifest.campaign_dir, run_cfgs)
    print(
        f"Resuming {manifest.campaign_dir}: {len(done)}/{len(done) + len(todo)} runs already completed, "
        f"{len(todo)} to run",
        flush=True,
    )
    hook = SqueezeHook.from_config(cfg)
    if hook is not None and done:  # squeeze missing (killed before it ran): the earliest finished run
        finished = sorted(
            (e["finished_at"] or "~", i, e["name"]) for i, e in enumerate(manifest.runs) if e["name"] in done
        )
        hook.maybe_run(manifest, finished[0][2])
    return execute(manifest, executor or executor_for(cfg), hook, only=todo)


def preflight_runs(runs: list[tuple[str, Any]]) -> None:
    """The checks a single run makes before writing (retrain/preflight.py), for each distinct config
    among the (run name, config) pairs (every setting but [logging] and the seed): a bad data file,
    model name or service stops the campaign before its dir exists. Their outside-world part
    (`retrain.backends.preflight`: the Tinker service, a sampling server) runs once per distinct
    `preflight_key`: conditions differ in their algorithm, rarely in what it reads. When the configs
    differ, a failure names a run that has the failing settings."""
    from retrain.backends import preflight_key
    from retrain.preflight import preflight
    from retrain.run import DATA_SEED
    from retrain.secrets import expand_secrets

    distinct = _distinct(runs, _config_key)
    checked: set[str] = set()  # preflight_keys whose outside-world check passed
    for name, run_cfg in distinct:
        run_cfg = expand_secrets(run_cfg)
        key = preflight_key(run_cfg)
        try:
            preflight(run_cfg, DATA_SEED, backend=key not in checked)
        except RetrainError as e:
            raise (e if len(distinct) == 1 else RetrainError(f"[campaign] {name}: {e}")) from None
        checked.add(key)


def preflight_backends(runs: list[tuple[str, Any]]) -> None:
    """`retrain.backends.preflight` once per distinct `preflight_key` among the (run name, config)
    pairs: what a resumed campaign checks again (the service may be gone since it started; the rest
    was checked when it started)."""
    from retrain.backends import preflight, preflight_key
    from retrain.secrets import expand_secrets

    distinct = _distinct([(name, expand_secrets(run_cfg)) for name, run_cfg in runs], preflight_key)
    for name, run_cfg in distinct:
        try:
            preflight(run_cfg)
        except RetrainError as e:
            raise (e if len(distinct) == 1 else RetrainError(f"[campaign] {name}: {e}")) from None


def _config_key(cfg) -> str:
    """The config without [logging] and the seed: runs with equal keys make equal checks."""
    from retrain.config import config_to_dict

    doc = config_to_dict(cfg)
    doc.pop("logging", None)
    doc.get("training", {}).pop("seed", None)
    return json.dumps(doc, sort_keys=True, default=str)


def _distinct(runs: list[tuple[str, Any]], key: Callable[[Any], str]) -> list[tuple[str, Any]]:
    """The first (name, config) of each distinct key(config), in order."""
    first: dict[str, tuple[str, Any]] = {}
    for name, run_cfg in runs:
        first.setdefault(key(run_cfg), (name, run_cfg))
    return list(first.values())


def mark_checked(campaign_dir: Path, runs: list[tuple[Path, Any]]) -> None:
    """Record in each (run dir, config) that the campaign checked the config's backend
    (`preflight_runs`), so the run's first start does not check it again (`retrain.backends.preflight`
    reads the record with the secrets filled in, as here)."""
    from retrain.backends import record_preflight
    from retrain.secrets import expand_secrets

    for run_dir, run_cfg in runs:
        record_preflight(run_dir, expand_secrets(run_cfg), checked_by=f"campaign {campaign_dir}")


def executor_for(cfg) -> Executor:
    c = cfg.campaign
    return make_executor(c.executor, max_workers=c.max_workers, ray_address=c.ray_address, device=cfg.backend.device)


def make_campaign_dir(log_root: Path, now: datetime | None = None) -> Path:
    """A new `<log_root>/campaign_<YYYYmmdd_HHMMSS>` (local time); `_2`, `_3`, … when that exists.

    Created with exist_ok=False, so two campaigns started in the same second never share a dir.
    """
    stamp = (now or datetime.now()).strftime("%Y%m%d_%H%M%S")
    log_root.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        path = log_root / (f"campaign_{stamp}" if n == 1 else f"campaign_{stamp}_{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RetrainError(f"{log_root}: could not find a free campaign dir name for {stamp}")


def prepare_run_dir(campaign_dir: Path, spec) -> dict:
    """Create `runs/<name>/` with the run's resolved config.toml/config.json; returns its manifest entry.

    `logging.log_dir` is stored absolute so a worker anywhere (another process, a Ray node with the
    same shared mount) finds the run; the manifest records the dir relative to the campaign.
    """
    from retrain.config import config_to_dict, config_to_toml

    check_run_names([spec.name])
    rel = f"runs/{spec.name}"
    run_dir = (campaign_dir / rel).resolve()
    run_dir.mkdir(parents=True, exist_ok=False)
    config = spec.config.with_overrides({"logging.log_dir": str(run_dir)})
    (run_dir / "config.toml").write_text(config_to_toml(config), encoding="utf-8")
    write_json_atomic(run_dir / "config.json", config_to_dict(config))
    return run_entry(spec.name, spec.label, spec.seed, rel)


NAME_MAX_BYTES = 255  # one directory name on Linux, macOS and Windows filesystems


def check_run_names(names: list[str]) -> None:
    """Every run dir name must be one valid directory name: no "/", at most 255 bytes (long
    condition labels come from many or long `~key=value` overrides)."""
    for name in names:
        if "/" in name or "\0" in name or name in ("", ".", ".."):
            raise RetrainError(f"[campaign]: run name {name!r} is not a valid directory name; simplify the condition")
        size = len(name.encode("utf-8"))
        if size > NAME_MAX_BYTES:
            raise RetrainError(
                f"[campaign]: run name {name[:60]!r}... is {size} bytes, but a directory name holds at most "
                f"{NAME_MAX_BYTES}; shorten the condition (fewer or shorter overrides, or shorter plugin paths)"
            )


def sync_completed(manifest: Manifest) -> set[str]:
    """Names of runs whose run.json says completed and whose checkpoints prove it (run.json alone
    can be edited: retrain/checkpoints.py); their manifest entries are set to completed."""
    from retrain.checkpoints import is_complete

    done = set()
    max_steps = manifest.snapshot().get("max_steps")
    for entry in manifest.runs:
        run_dir = manifest.run_dir(entry["name"])
        if read_run_status(run_dir) == "completed" and (
            not isinstance(max_steps, int) or is_complete(run_dir, max_steps)
        ):
            done.add(entry["name"])
            if entry["state"] != "completed":
                manifest.update_run(entry["name"], state="completed", returncode=0)
    return done


@contextlib.contextmanager
def _env_default(key: str, value: str):
    """Set an environment variable for the block unless the user set it; restore afterwards."""
    if key in os.environ:
        yield
        return
    os.environ[key] = value
    try:
        yield
    finally:
        os.environ.pop(key, None)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM (a scheduler or `kill`) is handled like Ctrl-C: a clean, resumable stop."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def execute(
    manifest: Manifest, executor: Executor, squeeze: SqueezeHook | None = None, only: list[str] | None = None
) -> int:
    """Run the manifest's runs (all, or the names in `only`) and keep the manifest current."""
    names = only if only is not None else [e["name"] for e in manifest.runs]
    jobs = [Job(name, manifest.run_dir(name)) for name in names]
    clock: dict[str, float] = {}
    stopped: list[str] = []  # runs an interrupt stopped (the executor reports them before re-raising)

    def on_start(job: Job) -> None:
        clock[job.name] = time.monotonic()
        fields: dict = {"state": "running", "returncode": None, "finished_at": None, "error": None}
        if manifest.run(job.name)["started_at"] is None:
            fields["started_at"] = now_iso()
        if executor.captures_output:
            log_dir = manifest.run(job.name)["log_dir"]
            fields.update(stdout=f"{log_dir}/{STDOUT_NAME}", stderr=f"{log_dir}/{STDERR_NAME}")
        manifest.update_run(job.name, **fields)
        print(f"[campaign] start  {job.name}", flush=True)

    def on_finish(job: Job, outcome: Outcome) -> None:
        # elapsed_s accumulates over attempts: the wall time the run has cost so far.
        spent = time.monotonic() - clock.pop(job.name, time.monotonic())
        entry = manifest.update_run(
            job.name, state=outcome.state, returncode=outcome.returncode, finished_at=now_iso(),
            elapsed_s=round((manifest.run(job.name)["elapsed_s"] or 0.0) + spent, 3), error=outcome.error,
        )  # fmt: skip
        if outcome.state == "interrupted":
            stopped.append(job.name)
        note = f" ({outcome.error})" if outcome.error else ""
        print(f"[campaign] {entry['state']:<9} {job.name} in {spent:.1f}s{note}", flush=True)
        if outcome.state == "completed" and squeeze is not None:
            squeeze.maybe_run(manifest, job.name)

    with sigterm_as_interrupt():
        try:
            if jobs:  # nothing to do must not start a Ray cluster
                executor.run(jobs, on_start, on_finish)
        except KeyboardInterrupt:
            stopped.extend(manifest.mark_running_as("interrupted"))
            print(
                f"\nInterrupted ({len(set(stopped))} run(s) stopped). Continue with: "
                f"retrain resume {manifest.campaign_dir}",
                flush=True,
            )
            return EXIT_INTERRUPTED
    return summarize(manifest)


def summarize(manifest: Manifest) -> int:
    """Print the outcome; 0 when every run of the campaign completed, else 1."""
    runs = manifest.runs
    bad = [e for e in runs if e["state"] != "completed"]
    if not bad:
        print(
            f"All {len(runs)} runs completed. Results in {manifest.campaign_dir}\n"
            f"Next: retrain report {manifest.campaign_dir}   (curves, significance tests, litmus, power: one page)\n"
            f"      retrain plot {manifest.campaign_dir}   (learning curves only)",
            flush=True,
        )
        return 0
    print(
        f"{len(bad)}/{len(runs)} runs did not complete: " + ", ".join(f"{e['name']} ({e['state']})" for e in bad),
        flush=True,
    )
    print(
        f"Results in {manifest.campaign_dir}; rerun what is missing with: retrain resume {manifest.campaign_dir}",
        flush=True,
    )
    return 1


@dataclass
class SqueezeHook:
    """Auto-squeeze (docs/squeeze.md): analyse the first completed run's `adapter/final` once per campaign."""

    threshold: float
    target_ranks: list[int]
    wandb_project: str = ""
    wandb_entity: str | None = None
    wandb_mode: str | None = None
    wandb_group: str | None = None
    attempted: bool = False

    @classmethod
    def from_config(cls, cfg) -> SqueezeHook | None:
        if getattr(cfg, "squeeze", None) is None:
            return None
        lg = cfg.logging
        return cls(
            threshold=cfg.squeeze.min_variance_retention,
            target_ranks=list(cfg.squeeze.target_ranks or []),
            wandb_project=lg.wandb_project if lg.wandb_mode != "disabled" else "",
            wandb_entity=lg.wandb_entity or None,
            wandb_mode=lg.wandb_mode,
            wandb_group=lg.wandb_group or None,
        )

    def maybe_run(self, manifest: Manifest, run_name: str) -> None:
        """Analyse `run_name`'s final adapter unless the manifest already holds a result.

        A failure is recorded in the manifest (`squeeze.error`) and never fails the campaign: the
        squeeze is advice about the next campaign's rank, the runs are the results.
        """
        if self.attempted or manifest.get_field("squeeze") is not None:
            return
        self.attempted = True
        from retrain.squeeze import analyze_adapter, format_table, log_squeeze_to_wandb

        adapter = manifest.run_dir(run_name) / "adapter" / "final"
        try:
            result = analyze_adapter(adapter, self.target_ranks, self.threshold)
        except Exception as e:  # noqa: BLE001 - see docstring
            print(f"[campaign] squeeze of {adapter} failed: {e}", flush=True)
            manifest.set_field(
                "squeeze", {"error": f"{type(e).__name__}: {e}", "run": run_name, "adapter_path": str(adapter)}
            )
            return
        print(f"[campaign] LoRA-Squeeze of {run_name}:\n{format_table(result)}", flush=True)
        manifest.set_field("squeeze", {**result.to_dict(), "run": run_name})
        if self.wandb_project:
            try:
                with _env_default("WANDB_DIR", str(manifest.campaign_dir)):  # not ./wandb in the cwd
                    log_squeeze_to_wandb(
                        result, self.wandb_project, self.wandb_entity, self.wandb_mode, group=self.wandb_group
                    )
            except Exception as e:  # noqa: BLE001 - wandb trouble must not stop the campaign
                print(f"[campaign] could not log the squeeze to wandb: {e}", flush=True)
