"""`python -m retrain.scripts.sepa_significance`: the seed's significance script, now `retrain compare`.

    python -m retrain.scripts.sepa_significance \
        --baseline 'logs/campaign_X/runs/maxrl+gtpo_hicra_s*' --candidate 'logs/campaign_X/runs/maxrl+gtpo_sepa_s*' \
        --output significance.json --markdown significance.md --resamples 20000 --alpha 0.05

Same arguments, output and exit codes as `retrain compare` (0 ok, 2 bad input).
"""

from __future__ import annotations

import argparse
import sys

from retrain.analysis.cli import add_compare_arguments, run_compare
from retrain.errors import RetrainError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m retrain.scripts.sepa_significance",
        description="Baseline vs candidate significance report (same as `retrain compare`).",
    )
    add_compare_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_compare(args)
    except RetrainError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
