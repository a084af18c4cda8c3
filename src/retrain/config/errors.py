"""Every config problem in the config's words: pydantic errors translated to `[table].key: ...`,
then the checks between keys, most of them derived from the registries (what the chosen variant
needs, what it consumes and who provides it).

`validate(Config, raw, origins)` is the one entry point: (config or None, problems).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from retrain.backends import BACKENDS
from retrain.backends.engines import ENGINES
from retrain.backpressure import backpressure_problems
from retrain.checks import bound_problem, show, suggest
from retrain.config.labels import condition_label
from retrain.config.schema import all_dotted_paths, format_loc, literal_args, model_at
from retrain.data import SOURCES
from retrain.errors import ConfigError
from retrain.registry import Registry
from retrain.rewards import REWARDS
from retrain.rl.advantages import ADVANTAGES
from retrain.rl.sepa import sepa_problems
from retrain.rl.transforms import TRANSFORMS
from retrain.rl.uncertainty import UNCERTAINTIES
from retrain.suggest import closest_key

# Keys a campaign condition may not override: the grid sets them itself (grid.expand_campaign).
GRID_OWNED_KEYS = {
    "algorithm.advantage_mode": "put advantage_mode directly in the condition",
    "algorithm.transform_mode": "put transform_mode directly in the condition",
    "training.seed": "seeds come from [campaign].seeds",
    "training.max_steps": "every run of a campaign has the same length; set [campaign].max_steps",
    "logging.condition": "the condition label is derived from the condition",
    "logging.log_dir": "the campaign places each run under runs/<condition>_s<seed>",
}

Origins = Mapping[tuple[str, ...], str]

# Every kind of variant, in the order the docs list them.
REGISTRIES: tuple[Registry[Any], ...] = (ADVANTAGES, TRANSFORMS, UNCERTAINTIES, SOURCES, REWARDS, BACKENDS, ENGINES)


def validate(root: type[BaseModel], raw: Any, origins: Origins) -> tuple[Any, list[str]]:
    """Build the config from raw TOML data. Returns (config or None, problems)."""
    try:
        cfg = root.model_validate(raw)
    except ValidationError as e:
        return None, [translate(root, err, origins) for err in e.errors()]
    return cfg, cross_field_problems(cfg)


# ---------------------------------------------------------------------------------------------
# Pydantic errors -> `[table].key: problem`
# ---------------------------------------------------------------------------------------------

_KIND = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string (in quotes)",
    "list_type": "a list, e.g. [1, 2]",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}

_BOUND = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


def translate(root: type[BaseModel], err: Mapping[str, Any], origins: Origins) -> str:
    """One pydantic error -> `[table].key: what is wrong and how to fix it`."""
    loc = tuple(err["loc"])
    kind, value = err["type"], err.get("input")
    where = format_loc(root, loc)
    if kind == "extra_forbidden":
        return _unknown_key_message(root, loc, value) + _origin_note(loc, origins)
    if kind in _KIND:
        msg = f"expected {_KIND[kind]}, got {show(value)}"
        if kind.startswith("bool") and isinstance(value, str) and value.lower() in ("true", "false"):
            msg += f"; write {loc[-1]} = {value.lower()} without quotes"
        elif kind == "string_type" and not isinstance(value, (dict, list)):
            msg += f'; write {loc[-1]} = "{_show_plain(value)}"'
    elif kind in _BOUND:
        key, op = _BOUND[kind]
        msg = bound_problem(op, err["ctx"][key], value)
    elif kind == "literal_error":
        expected = literal_args(root, loc)
        shown = ", ".join(repr(a) for a in expected) if expected else err["ctx"]["expected"]
        msg = f"must be one of {shown}, got {show(value)}"
        if isinstance(value, str) and expected:
            msg += suggest(value, [str(a) for a in expected])
    elif kind == "value_error":
        msg = str(err["ctx"]["error"])
    elif kind == "missing":
        msg = "required key is missing"
    elif kind == "finite_number":
        msg = f"must be a finite number, got {value!r}"
    elif kind in ("too_short", "string_too_short"):
        msg = "must not be empty"
    else:  # a pydantic error we have not worded; still name the place
        msg = str(err.get("msg", kind)).lower()
    return f"{where}: {msg}{_origin_note(loc, origins)}"


def _show_plain(value: Any) -> str:
    return "true" if value is True else "false" if value is False else str(value)


def _unknown_key_message(root: type[BaseModel], loc: Sequence[Any], value: Any) -> str:
    key = str(loc[-1])
    parent = model_at(root, loc)
    if len(loc) == 1:  # top level: a table (or a stray key outside any table)
        tables = list(root.model_fields)
        if isinstance(value, dict):
            close = difflib.get_close_matches(key, tables, n=1, cutoff=0.6)
            hint = f"; did you mean [{close[0]}]?" if close else f"; valid tables: {', '.join(tables)}"
            return f"[{key}]: unknown table{hint}"
        owners = _owners(root, key)
        if owners:
            return f"{key}: keys belong in a table; did you mean [{owners[0]}].{key}?"
        return f"{key}: unknown top-level key; settings go in tables such as [training]"
    where = format_loc(root, loc[:-1])
    fields = list(parent.model_fields) if parent else []
    guess = closest_key(key, fields)
    hint = f"; did you mean {guess}?" if guess else ""
    if not hint:
        owners = _owners(root, key)
        hint = (
            f"; {key} belongs in [{owners[0]}]" if owners else (f"; valid keys: {', '.join(fields)}" if fields else "")
        )
    return f"{where}.{key}: unknown key{hint}"


def _owners(root: type[BaseModel], key: str) -> list[str]:
    """The tables that have a key named `key`."""
    return [".".join(p.split(".")[:-1]) for p in all_dotted_paths(root) if p.split(".")[-1] == key]


def _origin_note(loc: Sequence[Any], origins: Origins) -> str:
    for path, flag in origins.items():
        if tuple(loc[: len(path)]) == path:
            return f" (set by {flag})"
    return ""


# ---------------------------------------------------------------------------------------------
# Checks between keys
# ---------------------------------------------------------------------------------------------


def chosen_variants(cfg: Any) -> list[tuple[Registry[Any], str]]:
    """(registry, the name this config chooses in it), for every kind of variant."""
    return [
        (ADVANTAGES, cfg.algorithm.advantage_mode),
        (TRANSFORMS, cfg.algorithm.transform_mode),
        (UNCERTAINTIES, cfg.algorithm.uncertainty_kind),
        (SOURCES, cfg.data.source),
        (REWARDS, cfg.reward.type),
        (BACKENDS, cfg.backend.backend),
        (ENGINES, cfg.inference.engine),
    ]


def cross_field_problems(cfg: Any) -> list[str]:
    """Inconsistencies between keys that each look fine alone."""
    problems: list[str] = []
    for registry, name in chosen_variants(cfg):
        problems += registry.problems(name, cfg)
    problems += _provided_problems(cfg)
    if cfg.training.clip_eps_high > 0 and cfg.training.clip_eps == 0:
        problems.append("[training].clip_eps_high: needs clip_eps > 0 (clipping is off); set clip_eps, e.g. 0.2")
    # The controllers' own rules (their Python constructors call the same functions).
    s, bp = cfg.sepa, cfg.backpressure
    problems += sepa_problems(
        s.steps, s.schedule, s.delay_steps, s.correct_rate_gate, s.ema_decay, s.var_threshold, s.warmup
    )
    problems += backpressure_problems(
        bp.warmup_steps, bp.ema_decay, bp.throttle_margin, bp.increase_margin, bp.min_batch_size, bp.max_batch_size
    )
    if cfg.campaign is not None:
        problems += _campaign_problems(cfg)
    return problems


def _provided_problems(cfg: Any) -> list[str]:
    """What the uncertainty kind consumes (the full distribution) must be provided by both the
    backend and the engine; a plugin backend provides nothing the registry knows of."""
    needed = UNCERTAINTIES.entry(cfg.algorithm.uncertainty_kind).consumes & {"entropies"}
    backend, engine = BACKENDS.builtin(cfg.backend.backend), ENGINES.builtin(cfg.inference.engine)
    if not needed or all(e is not None and needed <= e.provides for e in (backend, engine)):
        return []
    backends = " or ".join(f'"{v.name}"' for v in BACKENDS.builtins() if needed <= v.provides)
    engines = " or ".join(f'"{v.name}"' for v in ENGINES.builtins() if needed <= v.provides)
    others = " or ".join(f'"{v.name}"' for v in UNCERTAINTIES.builtins() if not v.consumes & needed)
    kind = cfg.algorithm.uncertainty_kind
    return [
        (
            f'[algorithm].uncertainty_kind: "{kind}" needs the full distribution, available only with '
            f"backend = {backends} and engine = {engines}; use {others}"
        )
    ]


def _campaign_problems(cfg: Any) -> list[str]:
    assert cfg.campaign is not None
    problems: list[str] = []
    if cfg.squeeze is not None and cfg.squeeze.adapter_path:
        problems.append(
            "[squeeze].adapter_path: a campaign squeezes its first finished run's adapter; "
            "remove adapter_path (or squeeze standalone with `retrain squeeze ADAPTER`)"
        )
    base = cfg.model_copy(update={"campaign": None})
    base_problems = set(cross_field_problems(base))  # reported once for the config itself
    seen: dict[str, int] = {}
    for i, cond in enumerate(cfg.campaign.conditions):
        where = f"[campaign].conditions[{i}]"
        bad = False
        for key in cond.overrides:
            reason = GRID_OWNED_KEYS.get(key) or (
                "a run config has no [campaign]" if key.split(".")[0] == "campaign" else ""
            )
            if reason:
                problems.append(f'{where}."{key}": cannot be overridden per condition ({reason})')
                bad = True
        label = condition_label(cond.advantage_mode, cond.transform_mode, cond.overrides)
        if label in seen:
            problems.append(f"{where}: duplicates condition [{seen[label]}] ({label}); remove one")
        seen.setdefault(label, i)
        if bad:
            continue
        full = {
            "algorithm.advantage_mode": cond.advantage_mode,
            "algorithm.transform_mode": cond.transform_mode,
            **cond.overrides,
        }
        try:
            base.with_overrides(full)
        except ConfigError as e:
            problems += [f"{where}: {p}" for p in e.problems if p not in base_problems]
    return problems
