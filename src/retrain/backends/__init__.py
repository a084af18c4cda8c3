"""Backends: the model runtime behind `rl/step.py` (protocol in `base.py`), one entry each in `BACKENDS`.

    preflight(cfg)                     # before a run writes anything: can the backend start at all?
    backend = make_backend(cfg)        # local (transformers + peft), tinker (the Tinker SDK), or a plugin class

A plugin backend is `[backend] backend = "my_module:MyBackend"`: a class (or function) taking the
Config and returning an object that implements `retrain.backends.base.Backend`. Heavy imports
(torch, transformers) happen only when a backend is built: the local entry names its target as a
string.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retrain.backends import tinker as _tinker
from retrain.backends.base import (
    Backend,
    Completion,
    Datum,
    SamplingParams,
    TrainResult,
)
from retrain.checks import show
from retrain.errors import RetrainError
from retrain.jsonio import now_iso, read_json, write_json_atomic
from retrain.registry import POSITIVE_INT, Option, Registry, Variant

__all__ = [
    "BACKENDS",
    "Backend",
    "Completion",
    "Datum",
    "SamplingParams",
    "TrainResult",
    "make_backend",
    "preflight",
    "preflight_key",
    "record_preflight",
]

BackendFactory = Callable[[Any], Backend]  # the whole Config -> a ready backend

_PROTOCOL_METHODS = ("sample", "train_step", "save", "load")


def _backend_plugin(factory: Callable[[Any], Any], path: str) -> Variant[BackendFactory]:
    """A plugin backend: built from the Config, then checked against the Backend protocol."""

    def build(cfg: Any) -> Backend:
        backend = factory(cfg)
        missing = [a for a in _PROTOCOL_METHODS if not callable(getattr(backend, a, None))]
        missing += [a for a in ("reports_sync_loss",) if not hasattr(backend, a)]
        if missing:
            raise RetrainError(f"backend plugin {path!r} does not implement the Backend protocol: missing {missing}")
        return backend  # type: ignore[no-any-return]

    return Variant(path, build, f"plugin {path}", plugin=True)


def _micro_batch_size_problem(value: Any) -> str | None:
    if value == "auto" or POSITIVE_INT(value) is None:
        return None
    return f'must be "auto" or an integer >= 1, got {show(value)}'


BACKENDS: Registry[BackendFactory] = Registry(
    "backend",
    "[backend].backend",
    _backend_plugin,
    options_table=("[backend.options]", lambda cfg: cfg.backend.options),
)

BACKENDS.add(
    Variant(
        "local",
        "retrain.backends.local:LocalBackend.from_config",
        "transformers + peft on CPU or one CUDA device",
        provides=frozenset({"entropies"}),
        options={
            "micro_batch_size": Option(
                "auto",
                "completions per forward/backward in train_step (each prompt still runs once); "
                'bounds activation memory, does not change the result; "auto": 4 in fp32, 8 in bf16 '
                "(the same activation memory)",
                check=_micro_batch_size_problem,
            ),
            "max_sample_rows": Option(256, "most completions decoded at once; bounds KV-cache memory"),
        },
    )
)


# The tinker module is light (the SDK is imported only when the backend is built), so its entry,
# with its config check and options table, is declared there.
BACKENDS.add(_tinker.ENTRY)


def make_backend(cfg: Any) -> Backend:
    """Build the backend `cfg.backend.backend` names: "local", "tinker" or "module:Class".

    With a server engine (`[inference] engine = "openai"`) the backend trains and the engine's
    `build(cfg, make_local)` wraps it so that sampling goes to the server; `make_local(c)` builds the
    trainer from a config the engine may adjust (the dtype its server runs)."""
    from retrain.backends.engines import ENGINES

    make_local = lambda c=cfg: BACKENDS.resolve(c.backend.backend)(c)  # noqa: E731
    engine = ENGINES.entry(cfg.inference.engine)
    if engine.target is None:
        return make_local()
    return engine.load()(cfg, make_local)  # type: ignore[no-any-return]


PREFLIGHT_RECORD = "preflight.json"  # in a run dir: a campaign checked this run's config (see `preflight`)


def preflight_key(cfg: Any) -> str:
    """Every setting `preflight`'s checks read, as one string: configs with equal keys pass or fail
    together, so a campaign checks each distinct key once (conditions differ in their algorithm,
    rarely in these). The backend options are all in it (tinker's connect_timeout_s decides whether a
    slow service passes); so are the sampling server's url, name and timeout, and max_tokens, which
    both the service and the server check against the model's context."""
    inf = cfg.inference
    key = {
        "backend": cfg.backend.backend,
        "options": dict(cfg.backend.options),
        "model": cfg.model.name,
        "revision": cfg.model.revision,
        "max_tokens": cfg.training.max_tokens,
        "engine": inf.engine,
        "url": inf.url,
        "served_model": inf.served_model,
        "launch": inf.launch,
        "request_timeout_s": inf.request_timeout_s,
    }
    return json.dumps(key, sort_keys=True, default=str)


def _digest(key: str) -> str:
    # The record keeps only a hash: the key is built from the config a check ran on, whose ${VAR}
    # secret references may be resolved in memory, and nothing retrain writes may hold one.
    return hashlib.sha256(key.encode()).hexdigest()


def record_preflight(run_dir: Path, cfg: Any, checked_by: str) -> None:
    """Note in `run_dir` that `cfg`'s checks passed just now (`checked_by` says who checked): the run's
    first start then skips them (`preflight`)."""
    write_json_atomic(
        Path(run_dir) / PREFLIGHT_RECORD,
        {"checked_sha256": _digest(preflight_key(cfg)), "checked_by": checked_by, "checked_at": now_iso()},
    )


def _take_preflight_record(cfg: Any) -> bool:
    """Whether the run dir holds a record for exactly this config's checks; the record is removed, so it
    answers one start only (a later `retrain resume` of the run checks again)."""
    if not cfg.logging.log_dir:
        return False
    path = Path(cfg.logging.log_dir) / PREFLIGHT_RECORD
    record = read_json(path)
    if record:
        path.unlink(missing_ok=True)
    return bool(record) and record.get("checked_sha256") == _digest(preflight_key(cfg))


def preflight(cfg: Any) -> None:
    """Checks that need the outside world, made before a run writes anything (RetrainError, exit 2):
    for tinker, the SDK, the API key, the service answering and training `[model].name`; for the
    openai engine, the sampling server (`openai_engine.preflight`).

    A campaign checks each distinct `preflight_key` of its runs once, before its dir exists, and leaves
    a `preflight.json` (`record_preflight`) in each run dir: a run's first start takes that record in
    place of the checks, so N runs cost one check, not N + 1."""
    if _take_preflight_record(cfg):
        return
    if cfg.backend.backend == "tinker":
        _tinker.preflight(cfg)
    if cfg.inference.engine == "openai":
        from retrain.backends import openai_engine

        openai_engine.preflight(cfg)
