"""`retrain squeeze ADAPTER`: LoRA-Squeeze analysis (and compression) of a saved adapter (docs/squeeze.md).

Example::

    retrain squeeze logs/maxrl+gtpo_sepa_s42/adapter/final --min-variance-retention 0.95
    retrain squeeze ADAPTER --compress-to 16 --output squeezed_r16/
    retrain squeeze ADAPTER --json > squeeze.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from retrain import squeeze
from retrain.errors import RetrainError


def _parse_ranks(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        ranks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise RetrainError(f"--target-ranks: expected comma-separated integers such as 1,2,4,8; got {text!r}") from None
    if any(k < 1 for k in ranks):
        raise RetrainError(f"--target-ranks: ranks must be ≥ 1; got {text!r}")
    return ranks


def run_command(args: argparse.Namespace) -> int:
    """Analyse `args.adapter`; print the table (or JSON); compress when `--output` is given."""
    if not Path(args.adapter).exists():
        raise RetrainError(f"adapter not found: {args.adapter} (pass a PEFT adapter directory)")
    if args.compress_to and not args.output:
        raise RetrainError("--compress-to needs --output DIR (the new adapter's directory)")
    ranks = _parse_ranks(args.target_ranks)
    if args.json:
        result = squeeze.analyze_adapter(args.adapter, target_ranks=ranks, threshold=args.min_variance_retention)
        payload = result.to_dict()
        if args.output:
            rank = args.compress_to or result.recommended_rank
            payload["compressed"] = {
                "path": str(squeeze.compress_adapter(args.adapter, rank, args.output)),
                "rank": rank,
            }
        print(json.dumps(payload, indent=2))
        return 0
    squeeze.squeeze_and_report(
        args.adapter,
        threshold=args.min_variance_retention,
        target_ranks=ranks,
        compress_to=args.compress_to,
        output_path=args.output,
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `squeeze` verb; the parsed namespace's `func(args)` runs it and returns the exit code."""
    parser = subparsers.add_parser(
        "squeeze",
        help="LoRA-Squeeze: variance retained per rank of a saved adapter, and compression",
        description="Singular-value analysis of a PEFT LoRA adapter: variance retained at each rank "
        "(mean/min/max over layers) and the smallest rank keeping the threshold; optionally write a "
        "compressed adapter.",
    )
    parser.add_argument("adapter", help="PEFT adapter directory (adapter_model.safetensors + adapter_config.json)")
    parser.add_argument(
        "--min-variance-retention",
        type=float,
        default=0.95,
        metavar="F",
        help="threshold on mean variance retained for the recommended rank (default 0.95)",
    )
    parser.add_argument(
        "--target-ranks",
        default=None,
        metavar="K,K,...",
        help="ranks to tabulate (default: powers of two up to the source rank)",
    )
    parser.add_argument(
        "--compress-to",
        type=int,
        default=0,
        metavar="K",
        help="compression rank (default 0 = the recommended rank); needs --output",
    )
    parser.add_argument("--output", default=None, metavar="DIR", help="write the compressed adapter here (new dir)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")
    parser.set_defaults(func=run_command)
    return parser
