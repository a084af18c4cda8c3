"""Config data ↔ TOML text: inline values, the resolved config.toml, dotted paths.

Pure functions over plain data (dicts, lists, scalars) and pydantic models; no config class is
imported here, so the tables, the loader and the docs can all use them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import tomli_w
from pydantic import BaseModel


def toml_value(value: Any) -> str:
    """`value` written as an inline TOML value (for docs, templates and labels): `[42, 101]`."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).strip().removeprefix("v = ")


def flatten_dict(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"training": {"lr": 1e-4}} → {"training.lr": 1e-4}; an empty table stays a value ({}).
    The dotted form of overrides, wandb config keys and config comparisons."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out.update(flatten_dict(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def set_path(raw: dict[str, Any], parts: Sequence[str], value: Any) -> None:
    """raw[a][b][c] = value for parts (a, b, c), creating (or replacing non-table) levels."""
    for part in parts[:-1]:
        child = raw.get(part)
        if not isinstance(child, dict):
            child = raw[part] = {}
        raw = child
    raw[parts[-1]] = value


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"training.lr": 1e-4} → {"training": {"lr": 1e-4}}."""
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        set_path(out, dotted.split("."), value)
    return out


def config_to_dict(cfg: BaseModel) -> dict[str, Any]:
    """The config as plain JSON-able data in the TOML shape (absent tables are None)."""
    return cfg.model_dump(mode="json")


def config_to_toml(cfg: BaseModel) -> str:
    """The fully resolved config as TOML; `load_config` on it gives an equal Config.

    Written table by table with inline arrays (tomli_w alone puts every list item on its own
    line, which makes a run's config.toml hard to read); tomli_w still formats keys and scalars.
    """
    return "\n".join(_toml_table_lines((), _drop_none(config_to_dict(cfg)))).lstrip("\n") + "\n"


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_drop_none(v) for v in obj]
    return obj


def _toml_key(key: str) -> str:
    return tomli_w.dumps({key: 0}).rsplit(" = ", 1)[0]


def _toml_table_lines(prefix: tuple[str, ...], table: Mapping[str, Any]) -> list[str]:
    header = ".".join(_toml_key(p) for p in prefix)
    lines = [f"\n[{header}]"] if prefix else []
    nested: list[tuple[str, Any]] = []
    for key, value in table.items():
        if isinstance(value, dict) or (isinstance(value, list) and value and all(isinstance(v, dict) for v in value)):
            nested.append((key, value))  # TOML wants sub-tables after the table's own keys
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value_wrapped(value)}")
    for key, value in nested:
        if isinstance(value, dict):
            lines += _toml_table_lines((*prefix, key), value)
            continue
        for item in value:
            lines.append(f"\n[[{'.'.join(_toml_key(p) for p in (*prefix, key))}]]")
            lines += [f"{_toml_key(k)} = {_toml_value_wrapped(v)}" for k, v in item.items()]
    return lines


def _toml_value_wrapped(value: Any, width: int = 96) -> str:
    """Inline, or one item per line for a list too long to read inline."""
    inline = toml_value(value)
    if len(inline) <= width or not isinstance(value, list):
        return inline
    return "[\n" + "".join(f"    {toml_value(v)},\n" for v in value) + "]"
