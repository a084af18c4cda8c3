"""`retrain report`: one self-contained HTML + markdown + JSON, checked in a real headless browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from fixtures_analysis import run_cli, small_campaign, two_arm_campaign  # noqa: F401 — pytest fixture
from PIL import Image

from retrain.analysis.report import build_report, pick_sepa_hicra
from retrain.errors import RetrainError

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=5000",
]


@pytest.fixture(scope="module")
def report(small_campaign, tmp_path_factory):
    camp = tmp_path_factory.mktemp("rep") / small_campaign.name
    shutil.copytree(small_campaign, camp)
    paths = build_report(camp, resamples=2000, seed=3)
    return camp, paths


def test_report_files_and_sections(report):
    camp, paths = report
    assert paths["html"] == camp / "report" / "report.html"
    html, md = paths["html"].read_text(), paths["markdown"].read_text()
    for heading in (
        "Runs",
        "Learning curves",
        "Mechanism: entropy and SEPA λ",
        "Each condition vs the baseline",
        "SEPA vs HICRA",
        "Litmus (profile",
        "Power",
        "LoRA-Squeeze",
    ):
        assert heading in html and heading in md, heading
    # self-contained: every figure inline, nothing fetched from elsewhere
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', html)) == 3
    assert not re.search(r'(src|href)="(https?:|//|file:)', html) and "<link" not in html
    # the markdown points at the PNGs written beside it
    for name in ("curves_correct_rate", "curves_mean_reward", "mechanism"):
        assert f"(figures/{name}.png)" in md
        assert (camp / "report" / "figures" / f"{name}.svg").is_file()


def test_report_json_content(report):
    camp, paths = report
    data = json.loads(paths["json"].read_text())
    assert data["baseline"] == "grpo+none"
    others = ["maxrl+gtpo", "maxrl+gtpo_hicra", "maxrl+gtpo_sepa", "maxrl+none"]
    assert sorted(data["comparisons"]) == sorted(
        [f"grpo+none vs {c}" for c in others] + ["maxrl+gtpo_hicra vs maxrl+gtpo_sepa"]
    )
    assert data["litmus"]["status"] in ("CONFIRMED", "FAILED", "INCONCLUSIVE")
    assert len(data["runs"]) == 15 and {r["state"] for r in data["runs"]} == {"completed"}
    assert data["squeeze"]["recommended_rank"] == 8
    assert [r["lift"] for r in data["power"]["rows"]] == [0.005, 0.01, 0.0126, 0.02, 0.05]
    assert data["power"]["batch_size"] == 8 and data["power"]["group_size"] == 16
    # the report's numbers are compare's numbers (same seed → same p and CI)
    from retrain.analysis.load import resolve_arm
    from retrain.analysis.significance import compare_arms

    again = compare_arms(
        resolve_arm(["grpo+none"], camp), resolve_arm(["maxrl+gtpo_sepa"], camp), resamples=2000, seed=3
    )
    mine = data["comparisons"]["grpo+none vs maxrl+gtpo_sepa"]["seed_level"]["correct_rate"]
    assert (mine["p_value"], mine["ci_low"]) == (
        again["seed_level"]["correct_rate"]["p_value"],
        again["seed_level"]["correct_rate"]["ci_low"],
    )


def test_regenerate_and_refuse_foreign_dirs(report, tmp_path):
    camp, paths = report
    assert build_report(camp, resamples=200)["html"] == paths["html"]  # our own report: regenerated
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(RetrainError, match="not a retrain report \\(notes.txt\\)"):
        build_report(camp, foreign, resamples=200)
    assert (foreign / "notes.txt").read_text() == "keep me" and not (foreign / "figures").exists()


def test_baseline_choice(tmp_path, capsys):
    camp = two_arm_campaign(tmp_path / "c", lift=0.05, seeds=(1, 2, 3), num_steps=10)
    with pytest.raises(RetrainError, match="--baseline 'grpo\\+none'.*Conditions there: maxrl\\+gtpo_hicra"):
        build_report(camp, resamples=200, baseline="grpo+none")
    html = build_report(camp, resamples=200)["html"].read_text()  # default baseline absent: said so, no crash
    assert "The baseline condition <code>grpo+none</code> is not in this campaign" in html
    assert (
        run_cli(
            ["report", str(camp), "--baseline", "maxrl+gtpo_hicra", "--out", str(tmp_path / "r2"), "--resamples", "200"]
        )
        == 0
    )
    data = json.loads((tmp_path / "r2" / "report.json").read_text())
    assert list(data["comparisons"]) == ["maxrl+gtpo_hicra vs maxrl+gtpo_sepa"] * 1
    assert run_cli(["report", str(tmp_path / "nope")]) == 2


def test_pick_sepa_hicra():
    assert pick_sepa_hicra(["grpo+gtpo_hicra", "grpo+gtpo_sepa", "maxrl+gtpo_hicra", "maxrl+gtpo_sepa"]) == (
        "maxrl+gtpo_hicra",
        "maxrl+gtpo_sepa",
    )
    assert pick_sepa_hicra(["grpo+gtpo_hicra", "grpo+gtpo_sepa"]) == ("grpo+gtpo_hicra", "grpo+gtpo_sepa")
    assert pick_sepa_hicra(["maxrl+gtpo_sepa", "grpo+gtpo_hicra"]) is None


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _run_chromium(binary: str, url: str, profile_dir, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "--enable-logging=stderr", "--v=0", *extra, url],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _console_errors(stderr: str) -> list[str]:
    """Console messages that are page errors (chromium's own dbus/gpu noise is not the page's)."""
    return [
        line for line in stderr.splitlines() if "CONSOLE" in line and re.search(r"Uncaught|Error|Failed to load", line)
    ]


@pytest.mark.slow
def test_report_in_headless_chromium(report, tmp_path):
    binary = _chromium()
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but chromium is missing: apt-get install -y chromium")
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI installs it and runs this test")
    _, paths = report
    url = paths["html"].resolve().as_uri()
    # the detector does see a page error (a control page with a broken script)
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>notDefinedAnywhere();</script></body></html>")
    assert _console_errors(_run_chromium(binary, bad.as_uri(), tmp_path / "p0", "--dump-dom").stderr)

    dom = _run_chromium(binary, url, tmp_path / "p1", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console_errors(dom.stderr) == []
    # the page's own script marked every figure as decoded by the browser
    assert dom.stdout.count('data-rendered="yes"') == 3 and 'data-rendered="no"' not in dom.stdout
    assert "SEPA vs HICRA" in dom.stdout

    shot = tmp_path / "shot.png"
    res = _run_chromium(binary, url, tmp_path / "p2", "--window-size=1280,3000", f"--screenshot={shot}")
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (3000, 1280)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 100
    assert (img.sum(-1) < 720).mean() > 0.05  # text, tables and curves: a good share of non-white pixels
    # the SEPA curve's red (#d62728) is on screen, i.e. the figures rendered, not just the tables
    red = (np.abs(img.astype(int) - [214, 39, 40]).sum(-1) < 40).sum()
    assert red > 500


def test_pick_sepa_hicra_with_override_labels():
    conds = ["grpo+none", "maxrl+gtpo_hicra", "maxrl+gtpo_sepa~sepa.steps=5", "maxrl+gtpo_sepa~sepa.steps=50"]
    assert pick_sepa_hicra(conds) == ("maxrl+gtpo_hicra", "maxrl+gtpo_sepa~sepa.steps=5")
