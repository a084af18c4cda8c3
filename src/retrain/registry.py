"""One registry mechanism for every extension point: one entry per variant (docs/design.md).

Each kind of variant has one `Registry`, declared in the file that holds its built-ins, and each
built-in is a function plus one `register` line there:

    @TRANSFORMS.register("gtpo", summary="A_t = A·w_t, w_t = max(0, 1 + β(h_t/mean(h) − 1))", consumes={"beta"})
    def gtpo(advantage, h, planning_mask, *, beta): ...

Everything else reads the entries: the config's choices and its per-variant checks, the generated
docs/config.md, which knobs the RL step hands a transform (λ only to one that consumes it),
`retrain explain`'s warnings, and how a plugin ("module:function") is validated and wrapped.

| registry      | declared in            | chosen by                    | a variant is                               |
|---------------|------------------------|------------------------------|--------------------------------------------|
| ADVANTAGES    | rl/advantages.py       | [algorithm].advantage_mode   | rewards_G → adv_G                          |
| TRANSFORMS    | rl/transforms.py       | [algorithm].transform_mode   | (A, h_T, mask_T, *, knobs) → adv_T         |
| UNCERTAINTIES | rl/uncertainty.py      | [algorithm].uncertainty_kind | (logprobs_T, entropies_T) → h_T            |
| REWARDS       | rewards.py             | [reward].type                | [reward] table → (text, ref, fmt) → r      |
| SOURCES       | data/__init__.py       | [data].source                | (data_cfg, eval_cfg, seed) → Dataset       |
| BACKENDS      | backends/__init__.py   | [backend].backend            | Config → Backend                           |
| ENGINES       | backends/engines.py    | [inference].engine           | (Config, make_local) → a sampling backend  |
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from retrain.checks import show, suggest
from retrain.errors import RetrainError
from retrain.plugins import PLUGIN_FORM, import_plugin

T = TypeVar("T")

# What a variant can consume (or, for backends and engines, provide). The RL step hands a transform
# exactly the knobs it consumes; the config checks that what an uncertainty consumes is provided.
INPUTS: dict[str, str] = {
    "beta": "[gtpo].beta",
    "alpha": "[hicra].alpha",
    "sepa_lambda": "λ, the SEPA controller's pooling strength ([sepa])",
    "planning_mask": "the planning-token mask ([planning].strategic_grams)",
    "entropies": "the full next-token distribution (its Shannon entropy per token)",
}

Check = Callable[[Any], list[str]]  # (the whole Config) -> problems, each "[table].key: ..."


def int_at_least(minimum: int) -> Callable[[Any], str | None]:
    """An option check: an integer >= minimum (booleans are not integers here)."""

    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            return f"must be an integer >= {minimum}, got {show(value)}"
        return None

    return check


POSITIVE_INT = int_at_least(1)


def number_at_least(minimum: float) -> Callable[[Any], str | None]:
    """An option check: a finite number, integer or not, >= minimum (seconds, rates)."""

    def check(value: Any) -> str | None:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (isinstance(value, float) and not math.isfinite(value))
            or value < minimum
        ):
            return f"must be a number >= {minimum:g}, got {show(value)}"
        return None

    return check


@dataclass(frozen=True)
class Option:
    """One key of a variant's free options table (e.g. `[backend.options]`): its default, a
    one-line description, and its check (problem text or None)."""

    default: Any
    description: str
    check: Callable[[Any], str | None] = POSITIVE_INT

    def problem(self, value: Any) -> str | None:
        return self.check(value)


@dataclass(frozen=True)
class Variant(Generic[T]):
    """One registry entry.

    `target` is the callable, or "module:attr" for one imported only when the variant is used
    (the local backend imports torch). `consumes`/`provides` use the names in `INPUTS`. `check`
    returns the config's problems when this variant is chosen (e.g. jsonl needs [data].path);
    `options` are the keys of its options table with their defaults. `takes_argument`: the name
    is written "name:argument" (`reasoning_gym:chain_sum`).
    """

    name: str
    target: T | str | None
    summary: str
    consumes: frozenset[str] = frozenset()
    provides: frozenset[str] = frozenset()
    check: Check | None = None
    options: Mapping[str, Option] = field(default_factory=lambda: MappingProxyType({}))
    takes_argument: bool = False
    plugin: bool = False

    @property
    def choice_name(self) -> str:
        """The name as a config writes it: `reasoning_gym:<task>` for one that takes an argument."""
        return f"{self.name}:<task>" if self.takes_argument else self.name

    def load(self) -> T:
        """The callable (imported now when `target` is a "module:attr" string)."""
        if self.target is None:
            raise RetrainError(f"{self.name!r} has nothing to call")
        if isinstance(self.target, str):
            return import_plugin(self.target, self.name)  # type: ignore[return-value]
        return self.target

    def with_defaults(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options table with every unset key at its default."""
        return {key: options.get(key, opt.default) for key, opt in self.options.items()}

    def option_problems(self, where: str, options: Mapping[str, Any], owner: str) -> list[str]:
        """Unknown keys and bad values of an options table, e.g. `[backend.options].x: ...`."""
        problems = []
        for key, value in options.items():
            opt = self.options.get(key)
            if opt is None:
                known = list(self.options)
                problems.append(
                    f"{where}.{key}: unknown option for {owner}{suggest(key, known)} (known: {', '.join(known)})"
                )
            elif (problem := opt.problem(value)) is not None:
                problems.append(f"{where}.{key}: {problem}")
        return problems


class Registry(Generic[T]):
    """The variants of one kind, by name; plugins ("module:function") when `adapt_plugin` is set.

    `adapt_plugin(fn, path)` turns an imported plugin into a Variant: it checks the plugin's shape,
    says what it consumes and wraps its output checks. `validate_entry(variant)` runs on every
    built-in as it is added (e.g. a transform's declared knobs must match its signature).
    `options_table` = (where, cfg -> table) is the options table an entry's `options` describe,
    checked at config load for the chosen entry. Iterating gives the built-in names.
    """

    def __init__(
        self,
        kind: str,
        key: str,
        adapt_plugin: Callable[[Any, str], Variant[T]] | None = None,
        *,
        validate_entry: Callable[[Variant[T]], None] | None = None,
        options_table: tuple[str, Callable[[Any], Mapping[str, Any]]] | None = None,
    ):
        self.kind = kind  # "transform": how messages name one variant
        self.key = key  # "[algorithm].transform_mode": the config key that chooses it
        self.adapt_plugin = adapt_plugin
        self.validate_entry = validate_entry
        self.options_table = options_table
        self._entries: dict[str, Variant[T]] = {}

    @property
    def plugins(self) -> bool:
        return self.adapt_plugin is not None

    def add(self, variant: Variant[T]) -> Variant[T]:
        if variant.name in self._entries:
            raise ValueError(f"{self.kind} {variant.name!r} is registered twice")
        if self.validate_entry is not None:
            self.validate_entry(variant)
        self._entries[variant.name] = variant
        return variant

    def register(
        self,
        name: str,
        *,
        summary: str,
        consumes: Iterable[str] = (),
        provides: Iterable[str] = (),
        check: Check | None = None,
        options: Mapping[str, Option] | None = None,
        takes_argument: bool = False,
    ) -> Callable[[T], T]:
        """Decorator: register the function below as the built-in `name`, returning it unchanged."""

        def decorate(fn: T) -> T:
            self.add(
                Variant(
                    name,
                    fn,
                    summary,
                    _known(consumes),
                    _known(provides),
                    check,
                    MappingProxyType(dict(options or {})),
                    takes_argument,
                )
            )
            return fn

        return decorate

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def builtins(self) -> list[Variant[T]]:
        return list(self._entries.values())

    def choice_names(self) -> list[str]:
        """Names as a config writes them: `reasoning_gym:<task>` for one that takes an argument."""
        return [v.choice_name for v in self._entries.values()]

    def builtin(self, name: str) -> Variant[T] | None:
        """The built-in entry `name` chooses (also for "name:argument"), or None (a plugin path)."""
        if name in self._entries:
            return self._entries[name]
        head, sep, _ = name.partition(":")
        entry = self._entries.get(head)
        return entry if sep and entry is not None and entry.takes_argument else None

    def is_valid_name(self, name: str) -> bool:
        """A built-in name, or "name:argument" with a non-empty argument for one that takes it."""
        entry = self.builtin(name)
        if entry is None:
            return False
        return bool(name.partition(":")[2]) if entry.takes_argument else name == entry.name

    def entry(self, name: str) -> Variant[T]:
        """The entry for `name`: a built-in, or a plugin imported, validated and described now."""
        found = self.builtin(name)
        if found is not None:
            return found
        if self.adapt_plugin is None or ":" not in name:
            raise RetrainError(self._unknown(name))
        return self.adapt_plugin(import_plugin(name, self.kind), name)

    def resolve(self, name: str) -> T:
        """The callable `name` chooses (see `entry`)."""
        return self.entry(name).load()

    def problems(self, name: str, cfg: Any) -> list[str]:
        """The config's problems with the chosen built-in: its options table, then its own check
        (plugins are checked when imported)."""
        found = self.builtin(name)
        if found is None:
            return []
        problems = []
        if found.options and self.options_table is not None:
            where, table = self.options_table
            problems += found.option_problems(where, table(cfg), f"the {found.name} {self.kind}")
        return problems + (found.check(cfg) if found.check is not None else [])

    def _unknown(self, name: str) -> str:
        if not self.plugins:
            return f"{self.key} = {name!r}: use one of {', '.join(self.choice_names())}"
        hint = ""
        close = difflib.get_close_matches(name, self.names, n=1, cutoff=0.6)
        if close:
            hint = f" Did you mean {close[0]!r}?"
        elif "." in name:
            module, _, fn = name.rpartition(".")
            hint = f" Did you mean {module + ':' + fn!r}?"
        return (
            f"unknown {self.kind} {name!r}: use a built-in ({', '.join(self.names)}) or a plugin "
            f"path {PLUGIN_FORM}.{hint}"
        )


def _known(names: Iterable[str]) -> frozenset[str]:
    out = frozenset(names)
    unknown = out - set(INPUTS)
    if unknown:
        raise ValueError(f"unknown inputs {sorted(unknown)}; known: {sorted(INPUTS)}")
    return out


def checked_floats(out: Any, expected_len: int, path: str, what: str) -> list[float]:
    """A plugin's output as `expected_len` finite floats, else RetrainError naming the plugin (so a
    wrong length or a NaN surfaces here, not later as a shape error or a nan loss)."""
    try:
        values = [float(x) for x in out]
    except (TypeError, ValueError) as exc:
        raise RetrainError(f"plugin {path!r} must return a list of floats, got {out!r}") from exc
    if len(values) != expected_len:
        raise RetrainError(f"plugin {path!r} returned {len(values)} values for {expected_len} {what}")
    if not all(math.isfinite(v) for v in values):
        raise RetrainError(f"plugin {path!r} returned a non-finite value: {values}")
    return values
