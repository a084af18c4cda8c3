"""The `retrain` command: each verb hands off to a function in another module.

    retrain [CONFIG.toml] [--key value ...]     run what the TOML describes (no verb word)
    retrain explain CONFIG [--json]             dry run
    retrain init [--template T] [PATH]          starter TOML
    retrain resume DIR                          continue a run or a campaign
    retrain status | squeeze | plot | compare | litmus | power | report | doctor

Verbs implemented elsewhere are imported only when invoked, so `retrain --help` and
`retrain explain` never pay for torch, pandas or matplotlib. Each such module exposes
`register(subparsers)`, which adds its subparser(s) with `set_defaults(func=callable(args) -> int)`.
Exit codes: 0 ok, 1 the work failed, 2 bad usage or config (nothing started), 130 interrupted,
141 the output was closed early (`| head`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retrain import __version__
from retrain.errors import RetrainError

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what `yes | head` reports for `yes`

# Verbs in help order, with their one-line help.
VERB_HELP = {
    "explain": "dry run: resolved config, run matrix, episodes, warnings",
    "init": "write a commented starter TOML (never overwrites)",
    "resume": "continue a run dir or a campaign dir",
    "status": "campaigns and runs under a log root",
    "squeeze": "LoRA-Squeeze analysis (and compression) of an adapter",
    "plot": "learning curves per condition, mean ± std across seeds",
    "compare": "significance report: candidate vs baseline",
    "litmus": "litmus verdict: CONFIRMED / FAILED / INCONCLUSIVE",
    "power": "episodes (and seeds x steps) needed to detect a lift",
    "report": "one HTML page: curves, tests, litmus, power, squeeze",
    "doctor": "versions, device, which optional parts are usable",
    "grams": "strategic grams: mine them from logged completions, check a list",
}

# Verbs owned by other modules: verb -> module exposing register(subparsers).
EXTERNAL_VERBS = {
    "status": "retrain.campaign.status",
    "squeeze": "retrain.squeeze_cli",
    "plot": "retrain.analysis.cli",
    "compare": "retrain.analysis.cli",
    "litmus": "retrain.analysis.cli",
    "power": "retrain.analysis.cli",
    "report": "retrain.analysis.cli",
    "doctor": "retrain.doctor",
    "grams": "retrain.grams.cli",
}

_RUN_USAGE = """\
run (no verb word):
  retrain [CONFIG.toml] [--table.key VALUE ...] [--resume DIR]
    CONFIG defaults to ./retrain.toml, else the built-in CPU quickstart.
    Runs a single run, a campaign ([campaign]) or a squeeze ([squeeze] with adapter_path).
    Overrides use dotted TOML paths (--training.lr 1e-4, --model.name=Qwen/Qwen3-4B);
    aliases: --seed, --max-steps, --lr, --wandb-project.

exit codes: 0 ok, 1 the work failed, 2 bad usage or config (nothing was started), 130 interrupted,
  141 the output was closed early (e.g. `| head`)
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `retrain` console script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if argv is None and threading.current_thread() is threading.main_thread():
        # A shell starts background jobs with SIGINT ignored, and Python then installs no Ctrl-C
        # handler; retrain relies on SIGINT (KeyboardInterrupt) to stop runs and campaigns with a
        # resumable state, so take it back. Only for the console entry point, not library calls.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = _dispatch(args)
        sys.stdout.flush()  # here, where a closed pipe is caught below, not at interpreter exit
        return code
    except RetrainError as e:
        print(f"retrain: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("retrain: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`retrain status --json | head`): not an error of ours. Point stdout
        # at /dev/null so the interpreter's final flush does not raise again, and exit like a
        # Unix tool killed by SIGPIPE.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # stdout is not a real file (captured)
            pass
        return EXIT_BROKEN_PIPE
    except SystemExit as e:  # argparse: --help (0) and usage errors (2)
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1


def _dispatch(argv: list[str]) -> int:
    first = argv[0] if argv else None
    if first in VERB_HELP:
        parser, subparsers = build_parser(first)
        args, extras = parser.parse_known_args(argv)
        if extras and not getattr(args, "accepts_extras", False):
            subparsers.choices[first].error(f"unrecognized arguments: {' '.join(extras)}")
        args.extras = extras
        return int(args.func(args))
    if first in ("-h", "--help", "--version"):
        build_parser(None)[0].parse_args(argv)
        return 0
    return run_verb(argv)


# ---------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------


def build_parser(verb: str | None) -> tuple[argparse.ArgumentParser, Any]:
    """The top-level parser. Only `verb`'s external module is imported; the others get a
    placeholder so that `--help` can list them."""
    parser = argparse.ArgumentParser(
        prog="retrain",
        description="TOML-first RLVR trainer and experiment toolkit.",
        epilog=_RUN_USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"retrain {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    if verb in EXTERNAL_VERBS:
        _register_external(subparsers, verb)  # first: its module may register sibling verbs too
    own = {"explain": _add_explain, "init": _add_init, "resume": _add_resume}
    for name, help_text in VERB_HELP.items():
        if name in own:
            own[name](subparsers, help_text)
        elif name not in subparsers.choices:
            _add_stub(subparsers, name, f"{name} is not available yet")
    return parser, subparsers


def _register_external(subparsers: Any, verb: str) -> None:
    """Import the verb's module and let it register; on failure, a stub that says why."""
    module_name = EXTERNAL_VERBS[verb]
    try:
        register = importlib.import_module(module_name).register
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            return  # the module itself is not written yet: the caller adds the stub
        _add_stub(subparsers, verb, f"{verb} needs the missing package {e.name!r}: pip install {e.name}")
        return
    except (ImportError, AttributeError) as e:
        _add_stub(subparsers, verb, f"{verb} is not available: {e}")
        return
    register(subparsers)


def _add_stub(subparsers: Any, verb: str, message: str) -> None:
    def stub(args: argparse.Namespace) -> int:
        print(f"retrain: {message}", file=sys.stderr)
        return 2

    p = subparsers.add_parser(verb, help=VERB_HELP[verb], add_help=False)
    p.set_defaults(func=stub, accepts_extras=True)


def _add_explain(subparsers: Any, help_text: str) -> None:
    p = subparsers.add_parser(
        "explain",
        help=help_text,
        description="Dry run: resolved config, condition labels, run matrix, episodes, warnings. Starts nothing.",
        usage="retrain explain [CONFIG.toml] [--json] [--probe] [--table.key VALUE ...]",
        allow_abbrev=False,
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--probe",
        action="store_true",
        help="also sample a few completions of the base model (loads it) and warn when the strategic "
        "grams mark ~no token, i.e. when SEPA vs HICRA would compare nothing",
    )
    p.set_defaults(func=cmd_explain, accepts_extras=True)  # extras: the config path and overrides


def _add_init(subparsers: Any, help_text: str) -> None:
    from retrain.templates import TEMPLATES  # light: config models only

    p = subparsers.add_parser("init", help=help_text, description="Write a commented starter TOML; never overwrites.")
    p.add_argument(
        "--template", "-t", choices=TEMPLATES, default="quickstart", help="starter profile (default: quickstart)"
    )
    p.add_argument("path", nargs="?", default="retrain.toml", help="file to create (default: retrain.toml)")
    p.set_defaults(func=cmd_init)


def _add_resume(subparsers: Any, help_text: str) -> None:
    p = subparsers.add_parser(
        "resume", help=help_text, description="Resume a run dir (config.toml) or a campaign dir (manifest.json)."
    )
    p.add_argument("dir", help="run or campaign directory")
    p.set_defaults(func=cmd_resume)


# ---------------------------------------------------------------------------------------------
# Verbs implemented here (each a thin call into another module)
# ---------------------------------------------------------------------------------------------


def split_config(tokens: Sequence[str]) -> tuple[str | None, list[str]]:
    """`[CONFIG] [--key value ...]` -> (CONFIG or None, override tokens)."""
    if tokens and not tokens[0].startswith("-"):
        return tokens[0], list(tokens[1:])
    return None, list(tokens)


def _pop_flag_value(tokens: list[str], flag: str) -> str | None:
    """Remove `flag VALUE` / `flag=VALUE` from `tokens`; return VALUE (None when absent)."""
    for i, token in enumerate(tokens):
        if token == flag:
            if i + 1 >= len(tokens):
                raise RetrainError(f"{flag} needs a value, e.g. {flag} logs/my_run")
            value = tokens[i + 1]
            del tokens[i : i + 2]
            return value
        if token.startswith(flag + "="):
            del tokens[i]
            return token.split("=", 1)[1]
    return None


def _call(module_name: str, function: str, *args: Any) -> int:
    """Import `module_name` lazily and call `function(*args)` -> exit code."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise RetrainError(f"{module_name} is not available yet in this build of retrain") from None
        raise RetrainError(f"missing package {e.name!r}: pip install {e.name}") from None
    return int(getattr(module, function)(*args))


def run_verb(tokens: Sequence[str]) -> int:
    """`retrain [CONFIG.toml] [--key value ...] [--resume DIR]`."""
    if any(t in ("-h", "--help") for t in tokens):
        build_parser(None)[0].print_help()
        return 0
    config, overrides = split_config(tokens)
    resume_dir = _pop_flag_value(overrides, "--resume")
    if resume_dir is not None:
        if config is not None or overrides:
            raise RetrainError("--resume continues a run with its saved config; drop the config file and overrides")
        return resume(resume_dir)

    from retrain.config import load_config, resolve_config_path

    path = resolve_config_path(config)
    cfg = load_config(path, overrides)
    if path is None:
        print(
            "retrain: no retrain.toml here; running the built-in quickstart (SmolLM2-135M, 2-operand addition). "
            "`retrain init` writes an editable copy.",
            file=sys.stderr,
        )
    if cfg.kind == "campaign":
        return _call("retrain.campaign.runner", "run_campaign", cfg, str(path) if path else None)
    if cfg.kind == "squeeze":
        return _call("retrain.squeeze", "run_from_config", cfg)
    return _call("retrain.run", "train", cfg)


def resume(directory: str) -> int:
    """Resume a campaign dir (has manifest.json) or a run dir (has config.toml)."""
    d = Path(directory)
    if not d.is_dir():
        raise RetrainError(f"{directory}: no such directory; give a run dir or a campaign dir (see `retrain status`)")
    if (d / "manifest.json").is_file():
        return _call("retrain.campaign.runner", "resume_campaign", str(d))
    if (d / "config.toml").is_file():
        return _call("retrain.run", "resume", str(d))
    raise RetrainError(
        f"{directory} is neither a run dir (no config.toml) nor a campaign dir (no manifest.json); "
        "`retrain status` lists what can be resumed"
    )


def cmd_resume(args: argparse.Namespace) -> int:
    return resume(args.dir)


def cmd_explain(args: argparse.Namespace) -> int:
    from retrain.config import load_config, resolve_config_path
    from retrain.explain import explain, render_text

    config, overrides = split_config(args.extras)
    path = resolve_config_path(config)
    cfg = load_config(path, overrides)
    info = explain(cfg, path)
    if args.probe:
        from retrain.explain import probe_warnings

        info["probe"], warnings = probe_warnings(cfg)
        info["warnings"] += warnings
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(render_text(info, cfg), end="")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from retrain.templates import write_template

    path = write_template(args.template, args.path)
    print(f"wrote {path} (template {args.template}); preview with `retrain explain {path}`, run with `retrain {path}`")
    return 0
