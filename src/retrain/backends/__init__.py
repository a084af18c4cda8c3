"""Backends: the model runtime behind `rl/step.py` (protocol in `base.py`).

    backend = make_backend(cfg)        # local (transformers + peft), or a plugin class

A plugin backend is `[backend] backend = "my_module:MyBackend"`: a class taking the Config and
implementing `retrain.backends.base.Backend`. Heavy imports (torch, transformers) happen only when
a backend is built.
"""

from __future__ import annotations

from retrain.backends.base import (
    Backend,
    Completion,
    Datum,
    SamplingParams,
    TrainResult,
)
from retrain.errors import RetrainError

__all__ = ["Backend", "Completion", "Datum", "SamplingParams", "TrainResult", "make_backend"]


def make_backend(cfg) -> Backend:
    """Build the backend `cfg.backend.backend` names: "local", "tinker" or "module:Class"."""
    kind = cfg.backend.backend
    if kind == "local":
        from retrain.backends.local import LocalBackend

        return LocalBackend.from_config(cfg)
    if kind == "tinker":
        raise RetrainError(
            "the tinker backend is not available in this build: the Tinker SDK client is not bundled. "
            'Use [backend] backend = "local", or a plugin class ("my_module:MyBackend") that wraps '
            "the Tinker SDK and implements retrain.backends.base.Backend"
        )
    from retrain.rl.registry import import_plugin

    cls = import_plugin(kind, "backend")
    backend = cls(cfg)
    missing = [a for a in ("sample", "train_step", "save", "load") if not callable(getattr(backend, a, None))]
    missing += [a for a in ("reports_sync_loss", "preserves_token_advantages") if not hasattr(backend, a)]
    if missing:
        raise RetrainError(f"backend plugin {kind!r} does not implement the Backend protocol: missing {missing}")
    return backend
