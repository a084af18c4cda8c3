#!/usr/bin/env bash
# The CUDA path of the local backend, for real, on a GPU machine with no network (run by hand).
# Needs: torch/transformers/peft there; the missing pure-Python wheels in .whl (pydantic, tomli_w, ...);
# the SmolLM2 architecture files (config + tokenizer, no weights) in .devcarry/smol-arch.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD/src:$PWD/tests
else
  export PYTHONPATH=$PWD/src:$PWD/tests
fi
export PYTHONUNBUFFERED=1 RETRAIN_CACHE=/tmp/retrain-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'cuda', torch.cuda.is_available())"
echo "== CUDA tests"
python3 -m pytest -q -p no:cacheprovider tests/test_backend_local.py tests/test_decode.py tests/test_run.py -m "cuda or not slow" -k "cuda or every_file or consistent" 2>&1 | tail -15 | tee "$OUT/cuda_tests.txt"
echo "== a tiny-random run on CUDA through the CLI"
mkdir -p /tmp/cudarun && python3 - <<'PY'
import sys; sys.path.insert(0, "tests")
from pathlib import Path
from runutil import write_tiny_config
write_tiny_config(Path("/tmp/cudarun/c.toml"), Path("/tmp/cudarun/run"), steps=5, extra='\n[backend]\ndevice = "cuda"\n')
PY
python3 -m retrain /tmp/cudarun/c.toml 2>&1 | tail -7 | tee "$OUT/cuda_run.txt"
python3 -c "import json; r=[json.loads(l) for l in open('/tmp/cudarun/run/metrics.jsonl')]; print([(x['step'], round(x['mean_reward'],3), x['num_datums'], x['loss'] and round(x['loss'],4), x['sampler_train_kl'] and round(x['sampler_train_kl'],5)) for x in r])" | tee -a "$OUT/cuda_run.txt"
echo "== SmolLM2-135M architecture (random weights) on CUDA: per-phase step time"
python3 - <<'PY'
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
cfg = AutoConfig.from_pretrained(".devcarry/smol-arch"); torch.manual_seed(0)
m = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
m.save_pretrained("/tmp/smol-rand"); AutoTokenizer.from_pretrained(".devcarry/smol-arch").save_pretrained("/tmp/smol-rand")
PY
python3 benchmarks/bench_step.py --model /tmp/smol-rand --device cuda --steps 6 --out "$OUT/step_cuda_quickstart.txt" 2>&1 | tail -12
python3 benchmarks/bench_step.py --model /tmp/smol-rand --device cuda --steps 4 --batch-size 8 --group-size 16 --max-tokens 256 --out "$OUT/step_cuda_8x16x256.txt" 2>&1 | tail -12
echo "== decode fast path: tok/s, growing cache vs preallocated cache vs CUDA graph vs HF generate (random weights)"
# 8 prompts × 16 completions × 256 and × 1024 new tokens, SmolLM2-135M and Qwen3-0.6B shapes, bf16.
for arch in smollm2 qwen3-0.6b; do
  for tokens in 256 1024; do
    repeats=$([ "$tokens" -gt 256 ] && echo 1 || echo 3)
    python3 benchmarks/bench_decode.py --arch "$arch" --prompts 8 --group 16 --tokens "$tokens" \
      --repeats "$repeats" --out "$OUT/decode_${arch}_8x16x${tokens}.json" 2>&1 | tail -8 | tee "$OUT/decode_${arch}_8x16x${tokens}.txt"
  done
done
