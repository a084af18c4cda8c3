"""Condition labels: `<advantage>+<transform>` then `~key=value` per override, safe in a path."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from retrain.config.toml import toml_value

# Labels name run directories (runs/<label>_s<seed>/), so override values keep only characters
# that are safe in a path on every OS; anything else (a "/" in a model id, spaces) becomes "-".
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=,\-]")


# A whole label may also hold the "~" between overrides and the ":" of a plugin path.
_UNSAFE_LABEL = re.compile(r"[^A-Za-z0-9._+=,~:\-]")


def path_safe_label(label: str) -> str:
    """A user's own `[logging].condition`, made safe as campaign labels are: it names the run dir
    (logs/<condition>_s<seed>), so "../../victim/evil" must not climb out of logs/.

    >>> path_safe_label("../../victim/evil")
    '..-..-victim-evil'
    """
    return _UNSAFE_LABEL.sub("-", label)


def _label_value(value: Any) -> str:
    """TOML-style scalars (`1e-05`, `false`), strings bare, lists comma-joined; path-safe."""
    if isinstance(value, list):
        return ",".join(_label_value(v) for v in value)
    text = value if isinstance(value, str) else toml_value(value)
    return _UNSAFE.sub("-", text)


def condition_label(advantage_mode: str, transform_mode: str, overrides: Mapping[str, Any]) -> str:
    """`adv+transform`, then `~key=value` per override sorted by key.

    >>> condition_label("maxrl", "gtpo_sepa", {"training.lr": 1e-05, "sepa.steps": 100})
    'maxrl+gtpo_sepa~sepa.steps=100~training.lr=1e-05'
    """
    label = f"{advantage_mode}+{transform_mode}"
    for key in sorted(overrides):
        label += f"~{key}={_label_value(overrides[key])}"
    return label
