"""`python -m retrain.scripts.sepa_litmus`: the seed's litmus script, now `retrain litmus`.

    python -m retrain.scripts.sepa_litmus \
        --baseline 'logs/campaign_X/runs/maxrl+gtpo_hicra_s*' --candidate 'logs/campaign_X/runs/maxrl+gtpo_sepa_s*' \
        --output litmus.json --markdown litmus.md

Exit codes: 0 CONFIRMED, 1 FAILED, 2 INCONCLUSIVE, 3 error (bad usage included).
"""

from __future__ import annotations

import argparse
import sys

from retrain.analysis.cli import add_litmus_arguments, exit_3_on_usage_error, run_litmus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m retrain.scripts.sepa_litmus",
        description="Litmus verdict: evidence gates, then threshold checks (same as `retrain litmus`).",
    )
    add_litmus_arguments(parser)
    exit_3_on_usage_error(parser)
    args = parser.parse_args(argv)
    return run_litmus(args)


if __name__ == "__main__":
    sys.exit(main())
