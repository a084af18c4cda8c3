#!/usr/bin/env bash
# Every CPU number of docs/performance.md in one command, from the repository root, on a quiet machine:
#
#     bash benchmarks/perf_cpu.sh                 # ~15 min on a quiet 2-core box
#
# 1. bench_vs_trl.py: retrain (fp32, and dtype = "auto" when it picks bf16 here) vs TRL GRPOTrainer
#    (skipped without TRL's venv, see benchmarks/trl_side.py), the machine's floor, peak RSS
#    → benchmarks/results/vs_trl.{md,json}
# 2. bench_quickstart.py: `retrain` with no arguments (dtype auto) → results/quickstart.{md,json}
# 3. bench_quickstart.py --dtype float32: the same in fp32 (what a CPU without bf16 runs)
#    → results/quickstart_float32.{md,json}
# PYTHON (default .venv/bin/python) runs retrain; RETRAIN_TRL_PYTHON names TRL's python
# (default /work/venvs/trl/bin/python). Each timed part waits for other processes to go quiet.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
"$PY" benchmarks/bench_vs_trl.py "$@"
"$PY" benchmarks/bench_quickstart.py
"$PY" benchmarks/bench_quickstart.py --dtype float32
