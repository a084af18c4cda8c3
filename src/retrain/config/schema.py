"""Walking the config models: which dotted paths exist, what a pydantic error location names.

Every function takes the root model class (`Config`) as `root`, so this module sits below the
tables that define it (`Config.with_overrides` uses it; nothing here imports the tables).
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel

from retrain.suggest import closest_key

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def unwrap(annotation: Any) -> Any:
    """`X | None` -> X."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def is_table(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def table_path(prefix: Sequence[str]) -> str:
    return f"[{'.'.join(prefix)}]" if prefix else "top level"


def all_dotted_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[str]:
    """Every settable dotted path below `model`, e.g. "training.lr" (for did-you-mean suggestions)."""
    out: list[str] = []
    for name, field in model.model_fields.items():
        ann = unwrap(field.annotation)
        if is_table(ann):
            out += all_dotted_paths(ann, (*prefix, name))
        else:
            out.append(".".join((*prefix, name)))
    return out


def check_path(
    root: type[BaseModel], dotted: str, value: Any, text: str | None = None, *, flags: Mapping[str, str] | None = None
) -> tuple[str, Any]:
    """Check an override path against the schema: ("", value) when fine, else (problem, value).

    For string fields the raw `text` wins over its TOML parse, so `--model.revision 1234`
    stays the string "1234". `flags` (the CLI aliases): the path came from a command-line flag,
    so a suggestion is worded as one (`did you mean --max-steps?`).
    """
    parts = dotted.split(".")
    model: type[BaseModel] = root
    for depth, part in enumerate(parts):
        prefix = parts[:depth]
        if part not in model.model_fields:
            guess = closest_key(dotted, all_dotted_paths(root))
            what = f"unknown table [{part}]" if depth == 0 else f"unknown key {table_path(prefix)}.{part}"
            if flags is None:
                suggestion = f"; did you mean {guess}?" if guess else ""
            else:
                alias = next((a for a, p in flags.items() if p == guess), None)
                if len(parts) == 1:
                    what = "unknown option"
                    suggestion = (
                        f"; did you mean --{alias or guess}?"
                        if guess
                        else f"; options are dotted keys such as --training.lr, or {', '.join('--' + a for a in flags)}"
                    )
                else:
                    suggestion = (
                        (f"; did you mean --{guess}" + (f" (or --{alias})?" if alias else "?")) if guess else ""
                    )
            return f"{what}{suggestion or '; valid: ' + ', '.join(model.model_fields)}", value
        ann = unwrap(model.model_fields[part].annotation)
        rest = parts[depth + 1 :]
        if is_table(ann):
            optional = not model.model_fields[part].is_required() and model.model_fields[part].default is None
            if not rest and (isinstance(value, dict) or (value is None and optional)):
                return "", value  # a whole table (or removing an optional one), as TOML would give it
            if not rest:
                example = next(iter(ann.model_fields))
                return f"{table_path(parts)} is a table; override one key, e.g. {dotted}.{example}", value
            model = ann
            continue
        if typing.get_origin(ann) is dict:
            return "", value  # a free table such as [backend.options]: any key below it
        if rest:
            return f"{table_path(prefix)}.{part} is a value, not a table", value
        if text is not None and _is_str_field(ann) and not isinstance(value, str):
            value = text
        return "", value
    return "", value


def _is_str_field(ann: Any) -> bool:
    return ann is str or (typing.get_origin(ann) is Literal and all(isinstance(a, str) for a in typing.get_args(ann)))


def format_loc(root: type[BaseModel], loc: Sequence[Any]) -> str:
    """("training", "lr") -> "[training].lr"; ("campaign", "seeds", 2) -> "[campaign].seeds[2]"."""
    tables: list[str] = []
    model: Any = root
    i = 0
    while i < len(loc) and isinstance(loc[i], str) and is_table(model) and loc[i] in model.model_fields:
        ann = unwrap(model.model_fields[loc[i]].annotation)
        table = is_table(ann)
        free_table = typing.get_origin(ann) is dict and i + 1 < len(loc)
        if not (table or free_table):
            break
        tables.append(loc[i])
        model = ann if table else None
        i += 1
    head = f"[{'.'.join(tables)}]" if tables else ""
    tail = ""
    for part in loc[i:]:
        if isinstance(part, int):
            tail += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(str(part)):
            tail += f".{part}"
        else:
            tail += f'."{part}"'
    if not head:
        return tail.lstrip(".")
    return head + tail


def model_at(root: type[BaseModel], loc: Sequence[Any]) -> type[BaseModel] | None:
    """The model class that owns the last element of `loc` (for key suggestions)."""
    model: Any = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (is_table(model) and part in model.model_fields):
            return None
        ann = unwrap(model.model_fields[part].annotation)
        if typing.get_origin(ann) is list:
            ann = typing.get_args(ann)[0]
        model = ann
    return model if is_table(model) else None


def literal_args(root: type[BaseModel], loc: Sequence[Any]) -> list[Any]:
    """The allowed values of the Literal field at `loc` (also of a list's items), or []."""
    model = model_at(root, loc) if not isinstance(loc[-1], int) else model_at(root, loc[:-1])
    name = loc[-1] if not isinstance(loc[-1], int) else loc[-2]
    if model is None or name not in model.model_fields:
        return []
    ann = unwrap(model.model_fields[name].annotation)
    if typing.get_origin(ann) is list:
        ann = typing.get_args(ann)[0]
    return list(typing.get_args(ann)) if typing.get_origin(ann) is Literal else []
