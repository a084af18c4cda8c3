"""The analysis code of docs/research-guide.md ("Reading the logs with your own code") runs
unchanged on directories in retrain's layout.

The code blocks between the page's `snippets: begin/end` markers are run as written, example calls
and relative paths included, from a directory holding `logs/train` and
`logs/campaign_20250215_143022`: the page and the layout cannot drift apart.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures_analysis import long_campaign, write_run  # noqa: F401 — pytest fixture
from PIL import Image

from retrain.analysis import load_campaign
from retrain.analysis.stats import fisher_exact_p

GUIDE_PAGE = Path(__file__).parents[1] / "docs" / "research-guide.md"


def guide_snippets() -> str:
    """The ```python blocks between the page's snippet markers, joined in order."""
    text = GUIDE_PAGE.read_text(encoding="utf-8")
    section = text.split("<!-- snippets: begin -->", 1)[1].split("<!-- snippets: end -->", 1)[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, flags=re.S))


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
    exec(compile(guide_snippets(), str(GUIDE_PAGE), "exec"), ns)  # noqa: S102 — the page's code, as users run it
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
