"""Loading a config: the file (or the built-in quickstart), CLI overrides, validation.

    cfg = load_config("retrain.toml", ["--training.lr", "1e-4", "--seed", "7"])

Every problem (unknown table or key, wrong type, out of range, TOML syntax, bad override,
cross-field inconsistency) is collected and raised together as one `ConfigError`.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retrain.config.errors import validate
from retrain.config.schema import check_path
from retrain.config.tables import Config
from retrain.config.toml import nest, set_path
from retrain.errors import ConfigError
from retrain.secrets import externalize, warn_moved

DEFAULT_CONFIG_FILE = "retrain.toml"

# The conditions a campaign runs when it lists none (docs/campaigns.md).
ABLATION_CONDITIONS = [
    ("grpo", "none"),
    ("maxrl", "none"),
    ("maxrl", "gtpo"),
    ("maxrl", "gtpo_hicra"),
    ("maxrl", "gtpo_sepa"),
]

# The built-in CPU quickstart, as overrides on the standard profile. The one place these numbers
# live: `quickstart_config()` and `retrain init --template quickstart` both read it. SmolLM2-135M
# learns 2-operand addition with them (held-out 0.35 -> 0.70 in 40 steps at ~10 s/step; README).
QUICKSTART_OVERRIDES: dict[str, Any] = {
    "model.name": "smollm2-135m",
    "model.lora_rank": 16,
    "model.lora_alpha": 32,
    "algorithm.advantage_mode": "maxrl",
    "algorithm.transform_mode": "gtpo_sepa",
    "training.seed": 42,
    "training.max_steps": 40,
    "training.batch_size": 2,
    "training.group_size": 8,
    "training.max_tokens": 32,
    "training.temperature": 0.7,  # at 1.0 this model mostly babbles
    "training.lr": 1e-4,
    "training.save_every": 20,
    "sepa.steps": 40,
    "sepa.delay_steps": 5,
    "sepa.warmup": 10,
    "data.source": "arithmetic",
    "data.max_operand": 50,
    "data.operations": ["+"],
    "eval.every": 5,
    "eval.num_examples": 40,
    "logging.log_dir": "logs/quickstart",
}

# Short CLI aliases for the overrides people type most.
ALIASES = {
    "seed": "training.seed",
    "max-steps": "training.max_steps",
    "lr": "training.lr",
    "wandb-project": "logging.wandb_project",
}


def quickstart_config() -> Config:
    """The built-in CPU quickstart (SmolLM2-135M on 2-operand addition); see QUICKSTART_OVERRIDES."""
    cfg, problems = validate(Config, nest(QUICKSTART_OVERRIDES), {})
    assert isinstance(cfg, Config) and not problems, problems  # a broken built-in is a bug, not a user error
    return cfg


def resolve_config_path(path: str | Path | None) -> Path | None:
    """The file `load_config(path)` reads: `path`, else ./retrain.toml when present, else None
    (the built-in quickstart)."""
    if path is not None:
        return Path(path)
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load, override and validate a config.

    `path` None means ./retrain.toml when it exists, else the built-in quickstart. `overrides` are
    CLI-style tokens: `["--training.lr", "1e-4", "--seed=7", "--model.name", "Qwen/Qwen3-4B"]`;
    each value is parsed as a TOML value when it parses, else taken as a string.
    Raises ConfigError with every problem found.
    """
    file = resolve_config_path(path)
    source = str(file) if file is not None else "built-in quickstart config"
    raw = _read_toml(file) if file is not None else nest(QUICKSTART_OVERRIDES)
    problems: list[str] = []
    origins: dict[tuple[str, ...], str] = {}
    pairs, parse_problems = parse_override_tokens(overrides)
    problems += parse_problems
    for flag, dotted, text in pairs:
        problem, value = check_path(Config, dotted, _parse_value(text), text, flags=ALIASES)
        if problem:
            problems.append(f"{flag}: {problem}")
            continue
        set_path(raw, dotted.split("."), value)
        origins[tuple(dotted.split("."))] = flag
    # Literal secrets leave the config for the environment before anything can write them
    # (retrain/secrets.py); the Config keeps ${RETRAIN_SECRET_...} references instead.
    raw, moved = externalize(raw)
    cfg, more = validate(Config, raw, origins)
    if problems or more:
        raise ConfigError(problems + more, source=source)
    assert isinstance(cfg, Config)
    warn_moved(moved)
    return cfg


def _read_toml(file: Path) -> dict[str, Any]:
    if not file.exists():
        raise ConfigError([f"file not found: {file}; create one with `retrain init {file}`"], source=str(file))
    if not file.is_file():
        raise ConfigError([f"{file} is not a file; give the path of a .toml config"], source=str(file))
    try:
        return tomllib.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(
            [f"not UTF-8 text ({e.reason} at byte {e.start}); save the file as UTF-8"], source=str(file)
        ) from None
    except tomllib.TOMLDecodeError as e:
        # tomllib's message carries "(at line L, column C)".
        raise ConfigError([f"TOML syntax error: {e}"], source=str(file)) from None
    except RecursionError:  # arrays or inline tables nested thousands deep
        raise ConfigError(
            [
                (
                    "nested too deeply to read (arrays or inline tables inside each other); a retrain "
                    "config needs at most a few levels"
                )
            ],
            source=str(file),
        ) from None
    except ValueError:  # an integer past Python's int/str conversion limit
        raise ConfigError(
            [(f"a number with more than {sys.get_int_max_str_digits()} digits; no retrain setting takes one")],
            source=str(file),
        ) from None


def parse_override_tokens(tokens: Sequence[str]) -> tuple[list[tuple[str, str, str]], list[str]]:
    """`["--training.lr", "1e-4", "--seed=7"]` -> `[(flag, dotted_path, text), ...]` and problems.

    Aliases (`--seed`, `--max-steps`, `--lr`, `--wandb-project`) become their dotted paths.
    """
    pairs: list[tuple[str, str, str]] = []
    problems: list[str] = []
    tokens = list(tokens)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) == 2:
            problems.append(
                f"unexpected argument {token!r}; overrides look like --training.lr 1e-4 (config file first)"
            )
            i += 1
            continue
        flag, eq, text = token.partition("=")
        if not eq:
            if i + 1 >= len(tokens):
                problems.append(f"{flag}: needs a value, e.g. {flag} VALUE")
                break
            text = tokens[i + 1]
            i += 1
        i += 1
        key = flag[2:]
        pairs.append((flag, ALIASES.get(key, key), text))
    return pairs, problems


def _parse_value(text: str) -> Any:
    """A TOML value when `text` parses as one (1e-4, true, [1, 2], "x"), else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, ValueError, RecursionError):  # also 5000 digits, [[[[...]]]]
        return text
