"""The research guide's own analysis snippets run unchanged on campaign directories in our layout.

GUIDE_SNIPPETS is the guide's code (seed/research-guide.txt, "Using the emergence logs" and "Quick
significance check"), verbatim except for the indentation the text export lost, and run as written,
example calls and relative paths included, from a directory holding `logs/train` and
`logs/campaign_20250215_143022`.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from fixtures_analysis import long_campaign, write_run  # noqa: F401 — pytest fixture
from PIL import Image

from retrain.analysis import load_campaign
from retrain.analysis.stats import fisher_exact_p

GUIDE_SNIPPETS = '''
import json
from pathlib import Path
def load_metrics(run_dir: str) -> list[dict]:
    """Load per-step metrics from a training run."""
    path = Path(run_dir) / "metrics.jsonl"
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
# Example: load and plot correct_rate
metrics = load_metrics("logs/train")
steps = [m["step"] for m in metrics]
correct = [m["correct_rate"] for m in metrics]

def load_emergence(run_dir: str) -> dict:
    """Load steps and generations from emergence logs."""
    root = Path(run_dir) / "emergence"
    steps = []
    with open(root / "steps.jsonl") as f:
        for line in f:
            if line.strip():
                steps.append(json.loads(line))
    generations = []
    with open(root / "generations.jsonl") as f:
        for line in f:
            if line.strip():
                generations.append(json.loads(line))
    return {"steps": steps, "generations": generations}

import matplotlib.pyplot as plt
from collections import defaultdict
import numpy as np
def plot_campaign(campaign_dir: str):
    """Plot correct_rate for all conditions in a campaign."""
    root = Path(campaign_dir) / "runs"
    # Group runs by condition
    by_condition = defaultdict(list)
    for run_dir in sorted(root.iterdir()):
        metrics = load_metrics(str(run_dir))
        if not metrics:
            continue
        condition = metrics[0]["condition"]
        by_condition[condition].append(metrics)
    fig, ax = plt.subplots(figsize=(10, 6))
    for condition, runs in sorted(by_condition.items()):
        # Align steps across seeds, compute mean + std
        all_correct = []
        for run in runs:
            all_correct.append([m["correct_rate"] for m in run])
        min_len = min(len(c) for c in all_correct)
        arr = np.array([c[:min_len] for c in all_correct])
        mean = arr.mean(axis=0)
        std = arr.std(axis=0)
        steps = list(range(min_len))
        ax.plot(steps, mean, label=condition)
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("Step")
    ax.set_ylabel("Correct Rate")
    ax.set_title("5-Condition Ablation")
    ax.legend()
    ax.grid(True, alpha=0.3)
    plt.tight_layout()
    plt.savefig("ablation_curves.png", dpi=150)
plot_campaign("logs/campaign_20250215_143022")

def compare_entropy(campaign_dir: str, step_range=(400, 500)):
    """Compare exec_entropy_var between SEPA and HICRA in late training."""
    root = Path(campaign_dir) / "runs"
    sepa_vars, hicra_vars = [], []
    for run_dir in sorted(root.iterdir()):
        metrics = load_metrics(str(run_dir))
        if not metrics:
            continue
        condition = metrics[0]["condition"]
        late = [
            m["exec_entropy_var"]
            for m in metrics
            if step_range[0] <= m["step"] < step_range[1]
            and "exec_entropy_var" in m
        ]
        if not late:
            continue
        mean_var = np.mean(late)
        if "sepa" in condition:
            sepa_vars.append(mean_var)
        elif "hicra" in condition:
            hicra_vars.append(mean_var)
    print(f"SEPA exec_entropy_var (late): {np.mean(sepa_vars):.4f} +/- {np.std(sepa_vars):.4f}")
    print(f"HICRA exec_entropy_var (late): {np.mean(hicra_vars):.4f} +/- {np.std(hicra_vars):.4f}")
    print(f"Reduction: {(1 - np.mean(sepa_vars)/np.mean(hicra_vars))*100:.1f}%")

from scipy.stats import fisher_exact
# Count correct completions across all seeds for each condition
sepa_correct, sepa_total = 342, 1024
hicra_correct, hicra_total = 298, 1024
table = [
    [sepa_correct, sepa_total - sepa_correct],
    [hicra_correct, hicra_total - hicra_correct],
]
odds_ratio, p_value = fisher_exact(table)
print(f"SEPA: {sepa_correct/sepa_total:.1%}, HICRA: {hicra_correct/hicra_total:.1%}")
print(f"Fisher exact p = {p_value:.4f}")
'''


@pytest.fixture
def guide_workdir(tmp_path, long_campaign, monkeypatch):  # noqa: F811
    """A working directory shaped like the guide's examples: logs/train and logs/campaign_20250215_143022."""
    write_run(tmp_path / "logs" / "train", condition="maxrl+gtpo_sepa", seed=42, num_steps=12, rng_seed=7)
    shutil.copytree(long_campaign, tmp_path / "logs" / "campaign_20250215_143022")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path


def test_guide_snippets_run_unchanged(guide_workdir, capsys):
    import matplotlib

    matplotlib.use("Agg")
    ns: dict = {}
    exec(compile(GUIDE_SNIPPETS, "research-guide.txt", "exec"), ns)  # noqa: S102 — the guide's code, as users run it
    ns["compare_entropy"]("logs/campaign_20250215_143022")
    import matplotlib.pyplot as plt

    plt.close("all")
    out = capsys.readouterr().out

    # load_metrics on the single-run example: every step, in order
    assert ns["steps"] == list(range(12))
    assert len(ns["correct"]) == 12 and all(0 <= c <= 1 for c in ns["correct"])
    # load_emergence reads both files of a run
    em = ns["load_emergence"]("logs/train")
    assert len(em["steps"]) == 12 and len(em["generations"]) == 12
    assert {"correct_count", "total_count"} <= set(em["steps"][0])

    # plot_campaign wrote a real figure (many colours, not blank)
    img = np.asarray(Image.open(guide_workdir / "ablation_curves.png").convert("RGB"))
    assert img.shape[0] > 500 and len(np.unique(img.reshape(-1, 3), axis=0)) > 50

    # compare_entropy's numbers equal the same computation through load_campaign
    df = load_campaign("logs/campaign_20250215_143022")
    late = df[(df.step >= 400) & (df.step < 500)]
    run_means = late.groupby(["condition", "run"]).exec_entropy_var.mean()
    sepa, hicra = run_means["maxrl+gtpo_sepa"], run_means["maxrl+gtpo_hicra"]
    assert f"SEPA exec_entropy_var (late): {sepa.mean():.4f} +/- {np.std(sepa.values):.4f}" in out
    assert f"HICRA exec_entropy_var (late): {hicra.mean():.4f} +/- {np.std(hicra.values):.4f}" in out
    assert f"Reduction: {(1 - sepa.mean() / hicra.mean()) * 100:.1f}%" in out

    # the guide's quick Fisher check: our fisher_exact_p is scipy's number
    p_printed = float(re.search(r"Fisher exact p = ([0-9.]+)", out).group(1))
    assert "SEPA: 33.4%, HICRA: 29.1%" in out
    assert round(fisher_exact_p(298, 1024, 342, 1024), 4) == p_printed
