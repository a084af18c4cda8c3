"""The TRL side of bench_vs_trl.py: TRL's GRPOTrainer with its defaults on the shared workload.

Runs in its own virtual environment (TRL pins its own stack); made once with

    python3 -m venv /work/venvs/trl
    /work/venvs/trl/bin/pip install torch==2.13.0          # first: the CPU wheel, not a CUDA build
    /work/venvs/trl/bin/pip install trl==1.16.0 transformers==5.24.0 peft==0.21.2

    /work/venvs/trl/bin/python benchmarks/trl_side.py MODEL_DIR OUT.json --steps 6 --threads 2

Only what the workload fixes is set: CPU, fp32 (bf16/fp16 off), 32 completions per step as 4
prompts × 8 generations in one optimizer step, ≤ 32 tokens, temperature 1, lr 1e-5, LoRA r16 α32
dropout 0.05 on the 7 projections, no checkpoints or reports. Everything else is GRPOConfig's
default (gradient checkpointing on, loss_type, beta = 0, ...). Each step waits for a quiet machine
first (quiet.py); step 0 is the warm-up and is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import quiet
import side_workload as W


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps, the first is the warm-up")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    from trl.extras import profiling

    blocks: list[tuple[str, float]] = []  # TRL's own profiling blocks (normally sent to wandb/mlflow)
    profiling.ProfilingContext._log_metrics = lambda self, duration: blocks.append((self.name, duration))

    tok = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    ds = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": r["prompt"]}], "answer": r["answer"]} for r in W.problems()]
    )
    cfg = GRPOConfig(
        output_dir=str(Path(args.out).parent / "trl_out"),
        use_cpu=True,
        bf16=False,
        fp16=False,
        per_device_train_batch_size=W.N_PROMPTS * W.GROUP,
        gradient_accumulation_steps=1,
        num_generations=W.GROUP,
        max_completion_length=W.MAX_TOKENS,
        temperature=W.TEMPERATURE,
        learning_rate=W.LR,
        max_steps=args.steps,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    steps: list[dict] = []
    log_rows: list[dict] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.quiet = quiet.wait_quiet(f"trl step {state.global_step}")
            self.b0 = len(blocks)
            self.window = quiet.Window().__enter__()

        def on_step_end(self, a, state, control, **kw):
            self.window.__exit__(None, None, None)
            mine: dict[str, float] = {}
            for name, s in blocks[self.b0 :]:
                mine[name] = mine.get(name, 0.0) + s
            gen = sum(s for name, s in mine.items() if name.endswith("generate"))
            prep = mine.get("GRPOTrainer._prepare_inputs", gen)
            steps.append(
                {
                    "step": len(steps),
                    **self.window.record(),
                    "wait": self.quiet,
                    "sample_s": round(gen, 3),
                    "train_s": round(self.window.wall - prep, 3),
                    "blocks": {k: round(v, 3) for k, v in mine.items()},
                }
            )
            print("trl", json.dumps(steps[-1]), flush=True)

    class Logs(TrainerCallback):
        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                log_rows.append(dict(logs))

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=W.trl_reward,
        args=cfg,
        train_dataset=ds,
        processing_class=tok,
        peft_config=LoraConfig(
            r=W.LORA_RANK,
            lora_alpha=W.LORA_ALPHA,
            lora_dropout=W.LORA_DROPOUT,
            target_modules=W.TARGETS,
            task_type="CAUSAL_LM",
        ),
        callbacks=[Timer(), Logs()],
    )
    texts = [
        tok.apply_chat_template([{"role": "user", "content": r["prompt"]}], add_generation_prompt=True, tokenize=False)
        for r in W.problems()
    ]
    prompt_lens = [len(tok(t, add_special_tokens=False).input_ids) for t in texts]
    t0 = time.time()
    trainer.train()
    for row, log in zip(steps, log_rows, strict=False):
        row["mean_completion_tokens"] = log.get("completions/mean_length")
    out = {
        "who": "trl",
        "versions": {
            "trl": trl.__version__,
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "peft": __import__("peft").__version__,
        },
        "threads": torch.get_num_threads(),
        "dtype": "float32",
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "loss_type": cfg.loss_type,
        "beta": cfg.beta,
        "mean_prompt_tokens": sum(prompt_lens) / len(prompt_lens),
        "steps": steps,
        "train_wall_s": round(time.time() - t0, 1),
        "peak_rss_mb": round(quiet.peak_rss_mb(), 1),
    }
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
