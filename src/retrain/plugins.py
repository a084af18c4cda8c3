"""The one plugin loader: "package.module:function" in a config → the function.

    fn = import_plugin("my_plugins:flat_transform", "[algorithm].transform_mode")

A plugin is imported with the current directory on the import path (appended, never first), so a
`my_plugins.py` next to the TOML works from the `retrain` console script as it does from
`python -m retrain`, and can never shadow an installed package. Every registry
(`retrain.registry`) loads its plugins through here; so does `[reward].custom`.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from retrain.errors import RetrainError

PLUGIN_FORM = "'package.module:function'"

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
# `module:function`, or the dotted `package.module.attr` the config also accepts (the loader then
# suggests the colon form). Checked at config load; the import happens when the run is built.
PLUGIN_RE = re.compile(rf"{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*|{_IDENT}(\.{_IDENT})+")
CALLABLE_RE = re.compile(rf"{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*")


def import_plugin(path: str, kind: str) -> Callable[..., Any]:
    """Import "package.module:function" and return the callable; RetrainError on any problem.

    `kind` names what the plugin is for in the messages (e.g. "[reward].custom", "transform").
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr or ":" in attr:
        raise RetrainError(f"{kind} plugin {path!r} must look like {PLUGIN_FORM}")
    try:
        module = _import_with_cwd(module_name)
    except ImportError as exc:
        raise RetrainError(
            f"{kind} plugin {path!r}: cannot import module {module_name!r} ({exc}). "
            f"It must be importable from the current directory or the installed packages, "
            f"written as {PLUGIN_FORM}."
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RetrainError(f"{kind} plugin {path!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise RetrainError(f"{kind} plugin {path!r}: {attr!r} is not callable")
    return obj  # type: ignore[no-any-return]


def _import_with_cwd(module_name: str) -> ModuleType:
    """Import a module, also looking in the current directory (console scripts do not put it on
    sys.path, `python -m` does); appended, so it never shadows an installed package."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        return importlib.import_module(module_name)
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
