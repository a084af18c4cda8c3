"""Secrets in a config: kept out of every file retrain writes, read from the environment.

A run writes its resolved config (config.toml, config.json, campaign.toml), sends it to wandb and
prints it (`retrain explain`). None of these may hold an API key or a token in a URL. So:

- A config may refer to environment variables, `${NAME}`, in any string:
  `url = "https://host/v1?api_key=${VLLM_KEY}"`, `[backend.options] api_key = "${TINKER_API_KEY}"`.
  The Config keeps the reference; every file and printout shows it, never the value. The values are
  put in only in memory, when a run builds its components (`expand_secrets`), so `retrain resume`
  in a later shell reads them from that shell's environment.
- A secret written literally is found when the config loads (`externalize`): the value of a key
  named like a secret (`api_key`, `*_key`, `token`, `secret`, `password`, ...), the password of a
  URL (`https://user:PASS@host`), URL query parameters named like secrets (`?key=...`) and the
  value after such a flag in a list of arguments (`["--api-key", "sk-..."]`, `"--token=..."`). It is
  moved into this process's environment as `RETRAIN_SECRET_<KEY PATH>` and the Config refers to
  it, so the run (and a campaign's child processes, which inherit the environment) work, and a
  warning says which variable a later `retrain resume` needs.
- `redact` replaces any literal secret left in a document by "<redacted>": for text retrain shows
  that did not come from a Config.

Example::

    >>> doc, moved = externalize({"inference": {"url": "https://u:hunter2@h/v1?token=abc"}}, env={})
    >>> doc["inference"]["url"]
    'https://u:${RETRAIN_SECRET_INFERENCE_URL}@h/v1?token=${RETRAIN_SECRET_INFERENCE_URL_2}'
    >>> expand_secrets_in(doc, env=moved)["inference"]["url"]
    'https://u:hunter2@h/v1?token=abc'
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from retrain.errors import RetrainError

REDACTED = "<redacted>"
ENV_PREFIX = "RETRAIN_SECRET_"
# A key whose value is a secret: api_key, tinker_api_key, token, access_token, secret, password, ...
SECRET_KEY = re.compile(
    r"(?i)(^|[_\-.])(api_?key|key|token|secret|password|passwd|pwd|credentials?|auth|"
    r"signature|sig)$"
)
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# The same names as command-line flags, alone ("--api-key", then the value) or with "=".
SECRET_FLAG = re.compile(r"(?i)--?[\w\-]*(api[_\-]?key|key|token|secret|password|passwd)")
SECRET_FLAG_VALUE = re.compile(r"(?i)(--?[\w\-]*(?:api[_\-]?key|key|token|secret|password|passwd))=(.+)")
_URL = re.compile(r"(?i)^[a-z][a-z0-9+.\-]*://")


def _is_reference(text: str) -> bool:
    """True when `text` is empty or made only of ${NAME} references (nothing secret in it)."""
    return not ENV_REF.sub("", text).strip()


def secret_spans(key: str, value: str, prev: object = None) -> list[tuple[int, int]]:
    """(start, end) of each literal secret inside `value`, the string found under `key`; `prev` is
    the list item before it, for command-line lists (`server_args = ["--api-key", "sk-..."]`)."""
    if SECRET_KEY.search(key) or (isinstance(prev, str) and SECRET_FLAG.fullmatch(prev)):
        return [] if _is_reference(value) else [(0, len(value))]
    flag = SECRET_FLAG_VALUE.fullmatch(value)
    if flag and not _is_reference(flag.group(2)):
        return [(flag.start(2), flag.end(2))]
    if not _URL.match(value):
        return []
    spans = []
    parts = urlsplit(value)
    netloc_at = value.index("//") + 2
    if parts.password and not _is_reference(parts.password):
        userinfo = parts.netloc.rpartition("@")[0]
        start = netloc_at + userinfo.index(":") + 1
        spans.append((start, netloc_at + len(userinfo)))
    if parts.query:
        query_at = value.index("?") + 1
        pos = query_at
        for field in value[query_at:].split("#")[0].split("&"):
            name, eq, secret = field.partition("=")
            if eq and SECRET_KEY.search(name) and secret and not _is_reference(secret):
                start = pos + len(name) + 1
                spans.append((start, start + len(secret)))
            pos += len(field) + 1
    return spans


def _env_name(path: list[str]) -> str:
    return ENV_PREFIX + re.sub(r"[^A-Za-z0-9]+", "_", "_".join(path)).strip("_").upper()


def _walk(doc: Any, path: list[str], fn: Callable[[list[str], str, object], str], prev: object = None) -> Any:
    """A copy of `doc` with every string leaf replaced by fn(path, value, the list item before it)."""
    if isinstance(doc, dict):
        return {k: _walk(v, [*path, str(k)], fn) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_walk(v, [*path, str(i)], fn, doc[i - 1] if i else None) for i, v in enumerate(doc)]
    if isinstance(doc, str):
        return fn(path, doc, prev)
    return doc


def _key(path: list[str]) -> str:
    """The key a value sits under: the last name in its path that is not a list index."""
    return next((p for p in reversed(path) if not p.isdigit()), "")


def externalize(doc: dict, env: MutableMapping[str, str] | None = None) -> tuple[dict, dict[str, str]]:
    """Move every literal secret of `doc` into `env` (default: os.environ) and refer to it instead.

    Returns (the new document, {variable: secret} of what was moved)."""
    env = os.environ if env is None else env
    moved: dict[str, str] = {}

    def replace(path: list[str], value: str, prev: object) -> str:
        spans = secret_spans(_key(path), value, prev)
        if not spans:
            return value
        base = _env_name(path)
        out, last = [], 0
        for i, (start, end) in enumerate(spans):
            name = base if i == 0 else f"{base}_{i + 1}"
            env[name] = moved[name] = value[start:end]
            out += [value[last:start], "${" + name + "}"]
            last = end
        return "".join(out) + value[last:]

    return _walk(doc, [], replace), moved


def expand_secrets_in(doc: Any, env: MutableMapping[str, str] | None = None) -> Any:
    """`doc` with every ${NAME} replaced by the environment's value; RetrainError naming the key
    and the variable when one is not set."""
    env = os.environ if env is None else env

    def expand(path: list[str], value: str, prev: object) -> str:
        def one(m: re.Match) -> str:
            name = m.group(1)
            if name not in env:
                hint = (
                    " (a secret your TOML held literally; retrain never writes secrets to its files)"
                    if name.startswith(ENV_PREFIX)
                    else ""
                )
                raise RetrainError(
                    f"{'.'.join(path)} refers to ${{{name}}}, which is not set in the environment{hint}; "
                    f"export {name}=... and run again"
                )
            return env[name]

        return ENV_REF.sub(one, value)

    return _walk(doc, [], expand)


def redact(doc: Any) -> Any:
    """`doc` with every literal secret replaced by "<redacted>" (references are left as they are)."""

    def hide(path: list[str], value: str, prev: object) -> str:
        spans = secret_spans(_key(path), value, prev)
        for start, end in reversed(spans):
            value = value[:start] + REDACTED + value[end:]
        return value

    return _walk(doc, [], hide)


def references(doc: Any) -> set[str]:
    """Names of the environment variables `doc` refers to."""
    found: set[str] = set()

    def collect(path: list[str], value: str, prev: object) -> str:
        found.update(ENV_REF.findall(value))
        return value

    _walk(doc, [], collect)
    return found


def expand_secrets(cfg):
    """A copy of the Config with its ${NAME} references filled in from the environment, for the
    components of a run to use; the Config itself (and so every file written from it) keeps them."""
    doc = cfg.model_dump(mode="json")  # what config_to_dict gives (this module sits below retrain.config)
    if not references(doc):
        return cfg
    # Validated again as a whole: `[backend.options]` keys are not dotted-override paths.
    return type(cfg).model_validate(expand_secrets_in(doc))


def warn_moved(moved: dict[str, str], stream=None) -> None:
    """Tell the user which variables now hold the secrets their TOML held literally."""
    import sys

    if not moved:
        return
    names = ", ".join(sorted(moved))
    print(
        f"retrain: warning: the config holds secrets literally; they are kept out of every file retrain writes, "
        f"as ${{...}} references to {names} (set for this process and its child runs). To resume later in "
        f"another shell, export them there, or write your own ${{VAR}} references in the TOML.",
        file=stream or sys.stderr,
        flush=True,
    )
