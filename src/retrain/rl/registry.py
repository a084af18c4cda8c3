"""Extension points: built-in tables plus "module:function" plugins, through one `resolve`.

    advantage_fn = resolve(cfg.algorithm.advantage_mode, ADVANTAGES, "advantage")
    transform_fn = resolve(cfg.algorithm.transform_mode, TRANSFORMS, "transform")

A name found in the table is a built-in. Anything else must be a plugin path
"package.module:function", imported with the current directory on the import path (so a
`my_plugins.py` beside the TOML works from the `retrain` command too). Other extension points
(rewards, data sources, backends) use the same `resolve` with their own table and kind.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from retrain.errors import RetrainError
from retrain.rl.advantages import grpo_advantages, maxrl_advantages
from retrain.rl.transforms import TRANSFORMS as _BUILTIN_TRANSFORMS


@runtime_checkable
class AdvantageFn(Protocol):
    """Episode advantages for one prompt group: rewards_G → adv_G (same length, finite).

    Example — a std-normalised GRPO as a plugin (file `my_plugins.py` next to your TOML, then
    `[algorithm] advantage_mode = "my_plugins:grpo_std"`)::

        >>> def grpo_std(rewards: list[float]) -> list[float]:
        ...     mean = sum(rewards) / len(rewards)
        ...     std = (sum((r - mean) ** 2 for r in rewards) / len(rewards)) ** 0.5
        ...     return [(r - mean) / (std + 1e-6) for r in rewards]
        >>> [round(a, 3) for a in grpo_std([1.0, 0.0, 0.0, 1.0])]
        [1.0, -1.0, -1.0, 1.0]

    Groups whose rewards all tie are dropped before the call (SPEC §3.1).
    """

    def __call__(self, rewards: list[float]) -> list[float]: ...


@runtime_checkable
class TokenTransform(Protocol):
    """Token advantages for one completion: (A, h_T, mask_T) → adv_T (same length as h_T).

    `advantage` is the completion's episode advantage, `h` its per-token uncertainty, and
    `planning_mask` 1 on planning tokens. The keyword arguments carry [gtpo].beta, [hicra].alpha
    and the step's SEPA λ; use them or ignore them.

    Example — give planning tokens double credit and nothing else (`[algorithm] transform_mode =
    "my_plugins:planning_only"`)::

        >>> def planning_only(advantage, h, planning_mask, *, beta, alpha, sepa_lambda):
        ...     return [2.0 * advantage if m else 0.0 for m in planning_mask]
        >>> planning_only(0.5, [1.0, 2.0, 3.0], [0, 1, 1], beta=0.1, alpha=0.2, sepa_lambda=0.0)
        [0.0, 1.0, 1.0]
    """

    def __call__(
        self,
        advantage: float,
        h: Sequence[float],
        planning_mask: Sequence[int],
        *,
        beta: float,
        alpha: float,
        sepa_lambda: float,
    ) -> list[float]: ...


ADVANTAGES: dict[str, AdvantageFn] = {"grpo": grpo_advantages, "maxrl": maxrl_advantages}
TRANSFORMS: dict[str, TokenTransform] = _BUILTIN_TRANSFORMS  # the same table token_advantages uses

PLUGIN_FORM = "'package.module:function'"


def import_plugin(path: str, kind: str) -> Callable:
    """Import "package.module:function" and return the function; RetrainError on any problem."""
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
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RetrainError(
                f"{kind} plugin {path!r}: module {module_name!r} has no attribute {attr!r}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise RetrainError(f"{kind} plugin {path!r}: {attr!r} is not callable")
    return obj


def _import_with_cwd(module_name: str):
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


def resolve(name_or_path: str, table: Mapping[str, Callable], kind: str) -> Callable:
    """The callable for `name_or_path`: `table[name]` for a built-in, else an imported plugin.

    Built-ins come back as they are. Plugins of kind "advantage" or "transform" come back wrapped
    so a wrong output length or a non-finite value raises RetrainError naming the plugin instead
    of surfacing later as a shape error or a nan loss. Unknown names raise RetrainError listing
    the built-ins (with a did-you-mean) and the plugin form.
    """
    if name_or_path in table:
        return table[name_or_path]
    if ":" not in name_or_path:
        hint = ""
        close = difflib.get_close_matches(name_or_path, list(table), n=1, cutoff=0.6)
        if close:
            hint = f" Did you mean {close[0]!r}?"
        elif "." in name_or_path:
            module, _, fn = name_or_path.rpartition(".")
            hint = f" Did you mean {module + ':' + fn!r}?"
        raise RetrainError(
            f"unknown {kind} {name_or_path!r}: use a built-in ({', '.join(table)}) or a plugin "
            f"path {PLUGIN_FORM}.{hint}"
        )
    fn = import_plugin(name_or_path, kind)
    checker = _OUTPUT_CHECKS.get(kind)
    return checker(fn, name_or_path) if checker else fn


def _check_output(out, expected_len: int, path: str, what: str) -> list[float]:
    try:
        values = [float(x) for x in out]
    except (TypeError, ValueError) as exc:
        raise RetrainError(f"plugin {path!r} must return a list of floats, got {out!r}") from exc
    if len(values) != expected_len:
        raise RetrainError(
            f"plugin {path!r} returned {len(values)} values for {expected_len} {what}"
        )
    if not all(math.isfinite(v) for v in values):
        raise RetrainError(f"plugin {path!r} returned a non-finite value: {values}")
    return values


def _checked_advantage(fn: Callable, path: str) -> Callable:
    @functools.wraps(fn)
    def checked(rewards: list[float]) -> list[float]:
        return _check_output(fn(list(rewards)), len(rewards), path, "rewards")

    return checked


def _checked_transform(fn: Callable, path: str) -> Callable:
    @functools.wraps(fn)
    def checked(advantage, h, planning_mask, *, beta, alpha, sepa_lambda) -> list[float]:
        out = fn(advantage, h, planning_mask, beta=beta, alpha=alpha, sepa_lambda=sepa_lambda)
        return _check_output(out, len(h), path, "tokens")

    return checked


_OUTPUT_CHECKS = {"advantage": _checked_advantage, "transform": _checked_transform}
