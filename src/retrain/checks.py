"""The wording of value checks, shared by the config and the components that also take Python
arguments (so `SEPAController(steps=-1)` and `[sepa] steps = -1` fail with the same words).

A component declares its numeric rules once, as `Bound`s next to its code::

    SEPA_BOUNDS = {"steps": Bound(ge=0), "ema_decay": Bound(ge=0, lt=1)}

The config's fields take their constraints from that table (`Field(500, **SEPA_BOUNDS["steps"].field_kwargs())`),
and the component's constructor checks its arguments against it (`bound_problems`), both worded by
`bound_problem`: `[sepa].steps: must be >= 0, got -1`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_OPS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def show(value: Any) -> str:
    """A user's value as they would write it in TOML: `-1`, `true`, `the string "x"`, `a table`."""
    if isinstance(value, str):
        return f'the string "{value}"' if '"' not in value else f"the string {value!r}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return f"the list {value!r}" if len(repr(value)) < 60 else "a list"
    return repr(value)


def bound_problem(op: str, bound: float, value: Any) -> str:
    """`must be >= 0, got -1` (integral bounds print as integers)."""
    shown_bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
    return f"must be {op} {shown_bound}, got {show(value)}"


def suggest(word: str, options: Sequence[str], quote: bool = True) -> str:
    """`; did you mean 'grpo'?` for the closest option, or ''."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    if not close:
        return ""
    return f"; did you mean {close[0]!r}?" if quote else f"; did you mean {close[0]}?"


def choice_problem(value: str, choices: Sequence[str], plugin: bool = False) -> str:
    """`must be one of 'linear', 'auto', got "cosine"` with a did-you-mean."""
    listed = ", ".join(repr(c) for c in choices)
    if plugin:
        listed += " or a plugin path 'module:function'"
    return f"must be one of {listed}, got {show(value)}{suggest(value, choices)}"


@dataclass(frozen=True)
class Bound:
    """Numeric limits of one setting: any of > gt, >= ge, < lt, <= le."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def field_kwargs(self) -> dict[str, float]:
        """The pydantic `Field` constraints (`ge=0, lt=1`)."""
        return {name: value for name, value in self.__dict__.items() if value is not None}

    def problem(self, value: float) -> str | None:
        """The first limit `value` breaks, worded as the config words it; None when within."""
        for name, op in _OPS:
            bound = getattr(self, name)
            if bound is None:
                continue
            ok = {"gt": value > bound, "ge": value >= bound, "lt": value < bound, "le": value <= bound}[name]
            if not ok:
                return bound_problem(op, bound, value)
        return None


def bound_problems(table: str, bounds: Mapping[str, Bound], values: Mapping[str, float]) -> list[str]:
    """`[table].key: must be ...` for every value outside its bound (all at once)."""
    out = []
    for key, bound in bounds.items():
        if key in values:
            problem = bound.problem(values[key])
            if problem:
                out.append(f"[{table}].{key}: {problem}")
    return out
