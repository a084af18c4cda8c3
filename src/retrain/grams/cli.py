"""`retrain grams mine` and `retrain grams check` (registered by `retrain.cli`).

Exit codes: 0 ok; 1 mining found no gram that passed the filters (nothing written); 2 bad input
(a missing run dir, no logged completions, a bad option, a bad config), nothing written.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

from retrain.errors import RetrainError

DEFAULT_SNIPPET = "strategic_grams.toml"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "grams",
        help="strategic grams: mine candidates from logged completions, check a list",
        description="Strategic grams (the phrases that mark planning tokens) for a new model or task.",
    )
    sub = p.add_subparsers(dest="grams_verb", metavar="{mine,check}", required=True)

    m = sub.add_parser(
        "mine",
        help="rank word n-grams that mark correct completions; write a [planning] snippet",
        description="Count word n-grams in emergence/generations.jsonl, drop task content (numbers, prompt "
        "echoes), rank by how much more often completions containing them are correct than "
        "completions of the same prompt without them (Cochran-Mantel-Haenszel z), print a table "
        "and write a ready [planning] strategic_grams snippet.",
    )
    m.add_argument("inputs", nargs="+", metavar="RUN_OR_CAMPAIGN", help="run dirs, campaign dirs, or globs of them")
    m.add_argument("--top", type=int, default=20, help="grams to keep (20)")
    m.add_argument("--min-n", type=int, default=2, help="shortest gram in words (2)")
    m.add_argument("--max-n", type=int, default=4, help="longest gram in words (4)")
    m.add_argument("--min-support", type=int, default=5, help="completions a gram must appear in (5)")
    m.add_argument("--min-share", type=float, default=0.01, help="... and this share of all completions (0.01)")
    m.add_argument(
        "--out",
        default=DEFAULT_SNIPPET,
        metavar="FILE.toml",
        help=f"where the [planning] snippet goes ({DEFAULT_SNIPPET}); a file retrain did not write is "
        "never overwritten",
    )
    m.add_argument("--json", default=None, metavar="FILE.json", help="also write every number as JSON")
    m.set_defaults(func=cmd_mine)

    c = sub.add_parser(
        "check",
        help="sample a few completions; report the planning-token fraction the gram list gives",
        description="Sample the run's first prompts with the config's model, task and sampling settings, and "
        "report the planning-token fraction and which grams matched, as step 0 would log them.",
        usage="retrain grams check [CONFIG.toml] [--prompts N] [--samples N] [--grams-file FILE] [--json] "
        "[--table.key VALUE ...]",
    )
    c.add_argument("--prompts", type=int, default=4, help="prompts to sample (4)")
    c.add_argument("--samples", type=int, default=0, help="completions per prompt (0 = [training].group_size)")
    c.add_argument(
        "--grams-file",
        default=None,
        metavar="FILE.toml",
        help="take the gram list from this TOML's [planning].strategic_grams (e.g. what `mine` wrote)",
    )
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.set_defaults(func=cmd_check, accepts_extras=True)  # extras: the config path and overrides


def cmd_mine(args: argparse.Namespace) -> int:
    from retrain.analysis.outputs import is_ours, write_json, write_text
    from retrain.grams.mine import (
        mine_grams,
        read_generations,
        render_snippet,
        render_table,
    )

    for flag, path in (("--out", args.out), ("--json", args.json)):
        # Refused before any work, so a bad path leaves nothing half done (write_text would refuse later).
        if path and Path(path).exists() and (Path(path).is_dir() or not is_ours(Path(path))):
            raise RetrainError(f"{flag} {path}: the file exists and retrain did not write it; choose another path")
    result = mine_grams(
        read_generations(args.inputs),
        n_min=args.min_n,
        n_max=args.max_n,
        top=args.top,
        min_support=args.min_support,
        min_share=args.min_share,
    )
    print(render_table(result), end="")
    if not result.grams:
        print(
            "retrain: no gram passed the filters; nothing written (try a lower --min-support or --min-share, "
            "or --min-n 1)",
            file=sys.stderr,
        )
        return 1
    snippet = render_snippet(result, args.inputs)
    tomllib.loads(snippet)  # what we write must load
    print(f"wrote {write_text(args.out, snippet)}: [planning] strategic_grams with {len(result.grams)} grams")
    if args.json:
        print(f"wrote {write_json(args.json, {'generator': 'retrain grams mine', **result.to_dict()})}")
    return 0


def read_grams_file(path: str) -> list[str]:
    """[planning].strategic_grams of a TOML file (a full config or a mined snippet)."""
    file = Path(path)
    if not file.is_file():
        raise RetrainError(f"--grams-file {path}: no such file")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise RetrainError(f"--grams-file {path}: not valid TOML ({e})") from None
    grams = data.get("planning", {}).get("strategic_grams") if isinstance(data.get("planning"), dict) else None
    if not isinstance(grams, list) or not all(isinstance(g, str) and g.strip() for g in grams):
        raise RetrainError(
            f'--grams-file {path}: needs [planning] strategic_grams = ["...", ...] '
            "(a list of non-empty phrases), as `retrain grams mine` writes"
        )
    return grams


def cmd_check(args: argparse.Namespace) -> int:
    from retrain.cli import split_config
    from retrain.config import load_config, resolve_config_path
    from retrain.grams.probe import probe_planning, render_probe

    config, overrides = split_config(args.extras)
    cfg = load_config(resolve_config_path(config), overrides)
    if cfg.kind != "run":
        raise RetrainError(
            "grams check samples one run's model and task; pass a run config (not a campaign or squeeze "
            "TOML); for a campaign, pass a run TOML with the same [model], [data] and [planning]"
        )
    grams = read_grams_file(args.grams_file) if args.grams_file else None
    report = probe_planning(cfg, num_prompts=args.prompts, samples_per_prompt=args.samples, grams=grams)
    print(json.dumps(report, indent=2) if args.json else render_probe(report), end="\n" if args.json else "")
    return 0
