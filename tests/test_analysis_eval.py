"""Held-out accuracy (`eval_correct_rate`) in report, compare and plot, with the before-training point.

The fixture campaign logs evals the way the trainer does: eval.jsonl rows after step -1 (the base
model), 4, 9, 14 and 19, and the same values in those steps' metrics rows (null elsewhere). The
expected numbers are read back from eval.jsonl by hand.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from fixtures_analysis import eval_campaign, run_cli, small_campaign  # noqa: F401 — pytest fixtures
from PIL import Image

from retrain.analysis.load import load_campaign_runs, resolve_arm, runs_to_frame
from retrain.analysis.plot import curve_stats
from retrain.analysis.report import build_report
from retrain.analysis.significance import compare_arms

HICRA, SEPA, EVAL = "maxrl+gtpo_hicra", "maxrl+gtpo_sepa", "eval_correct_rate"


def evals_of(run_dir) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    return {r["after_step"]: r[EVAL] for r in rows}


def test_series_comes_from_eval_jsonl_with_the_base_point(eval_campaign):  # noqa: F811 — pytest fixture
    for run in load_campaign_runs(eval_campaign):
        steps, values = run.series(EVAL)
        expected = evals_of(run.run_dir)
        assert steps.tolist() == [-1, 4, 9, 14, 19] == sorted(expected)
        assert values.tolist() == [expected[s] for s in steps.tolist()]
        # the metrics rows hold the same numbers on the eval steps, null elsewhere
        col = run.column(EVAL)
        assert np.isnan(col[[0, 1, 2, 3, 5]]).all() and col[[4, 9, 14, 19]].tolist() == values[1:].tolist()


def test_series_falls_back_to_the_metrics_rows(eval_campaign, tmp_path):  # noqa: F811 — pytest fixture
    camp = tmp_path / "c"
    shutil.copytree(eval_campaign, camp)
    run_dir = camp / "runs" / f"{SEPA}_s42"
    expected = evals_of(run_dir)
    (run_dir / "eval.jsonl").unlink()
    (run,) = resolve_arm([str(run_dir)])
    steps, values = run.series(EVAL)
    assert steps.tolist() == [4, 9, 14, 19]  # no before-training point without eval.jsonl
    assert values.tolist() == [expected[s] for s in (4, 9, 14, 19)]


def test_compare_on_a_sparse_metric_says_which_points(eval_campaign, capsys, tmp_path):  # noqa: F811 — pytest fixture
    base, cand = resolve_arm([HICRA], eval_campaign), resolve_arm([SEPA], eval_campaign)
    res = compare_arms(base, cand, primary_metric=EVAL, resamples=500)
    m = res["seed_level"][EVAL]
    assert res["window"]["start"] == 16 and res["primary_metric"] == EVAL and m["available"]
    # each run's value is its one eval point in [16, 20): after step 19
    for arm, runs in (("baseline", base), ("candidate", cand)):
        assert m["runs"][arm] == pytest.approx({r.name: evals_of(r.run_dir)[19] for r in runs})
        assert m["points"][arm] == {r.name: [19] for r in runs}
    assert m["baseline_mean"] == pytest.approx(np.mean([evals_of(r.run_dir)[19] for r in base]))
    assert any(
        n.startswith(f"{EVAL} is logged on some steps only") and "step 19 in every run" in n for n in res["notes"]
    )
    assert "points" not in res["seed_level"]["correct_rate"]  # a dense metric needs no such note
    # a wider window averages the eval points it holds
    wide = compare_arms(base, cand, primary_metric=EVAL, window=(5, 20), resamples=500)["seed_level"][EVAL]
    r = cand[0]
    assert wide["runs"]["candidate"][r.name] == pytest.approx(np.mean([evals_of(r.run_dir)[s] for s in (9, 14, 19)]))
    assert wide["points_description"] == "steps 9, 14, 19 in every run"

    out = tmp_path / "sig.json"
    assert (
        run_cli(
            [
                "compare",
                str(eval_campaign),
                "--baseline",
                HICRA,
                "--candidate",
                SEPA,
                "--metric",
                EVAL,
                "--resamples",
                "500",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert f"(seed-level test on {EVAL})" in text and "step 19 in every run" in text
    assert re.search(rf"^{EVAL}\s+{m['baseline_mean']:.4f}\s+{m['candidate_mean']:.4f}", text, re.MULTILINE)
    assert json.loads(out.read_text())["seed_level"][EVAL]["runs"] == m["runs"]


def test_compare_window_without_eval_points_is_a_clear_error(eval_campaign, capsys):  # noqa: F811 — pytest fixture
    argv = [
        "compare",
        str(eval_campaign),
        "--baseline",
        HICRA,
        "--candidate",
        SEPA,
        "--metric",
        EVAL,
        "--window",
        "15:19",
    ]
    assert run_cli(argv) == 2
    out = capsys.readouterr().out
    assert f"cannot compare on {EVAL}" in out and "it is logged at steps -1, 4, 9, 14, 19" in out
    # the before-training point counts only when the window asks for it
    base, cand = resolve_arm([HICRA], eval_campaign), resolve_arm([SEPA], eval_campaign)
    m = compare_arms(base, cand, primary_metric=EVAL, window=(-1, 0), resamples=200)["seed_level"][EVAL]
    assert m["runs"]["baseline"] == pytest.approx({r.name: evals_of(r.run_dir)[-1] for r in base})


def test_plot_draws_eval_points_and_lines(eval_campaign, tmp_path):  # noqa: F811 — pytest fixture
    out = tmp_path / "eval.png"
    assert run_cli(["plot", str(eval_campaign), "--metric", EVAL, "--out", str(out)]) == 0
    img = np.asarray(Image.open(out).convert("RGB"))
    assert (img.sum(-1) < 750).mean() > 0.03
    svg = out.with_suffix(".svg").read_text()
    # 3 conditions x 5 eval points (before training included), each drawn as a marker
    markers = re.findall(r'<use xlink:href="#m[0-9a-f]+" x="[-0-9.]+" y="[-0-9.]+"', svg)
    assert len(markers) >= 15
    for cond in ("grpo+none (n=3)", f"{HICRA} (n=3)", f"{SEPA} (n=3)"):
        assert cond in svg
    # the drawn means are the means over seeds of eval.jsonl's values, step -1 included
    runs = load_campaign_runs(eval_campaign)
    st = curve_stats(runs_to_frame(runs, [EVAL]), EVAL)
    for cond in ("grpo+none", SEPA):
        for step in (-1, 19):
            row = st[(st.condition == cond) & (st.step == step)].iloc[0]
            vals = [evals_of(r.run_dir)[step] for r in runs if r.condition == cond]
            assert row["mean"] == pytest.approx(np.mean(vals)) and row["n"] == 3


def test_plot_of_a_metric_without_values_is_an_error(small_campaign, tmp_path, capsys):  # noqa: F811 — pytest fixture
    assert run_cli(["plot", str(small_campaign), "--metric", EVAL, "--out", str(tmp_path / "x.png")]) == 2
    out = capsys.readouterr().out
    assert f"--metric '{EVAL}': no run logged a value of it" in out and "[eval] every > 0" in out
    assert "Logged metrics:" in out and "correct_rate" in out
    assert not (tmp_path / "x.png").exists()  # no empty figure


def test_report_shows_held_out_accuracy(eval_campaign, tmp_path):  # noqa: F811 — pytest fixture
    camp = tmp_path / eval_campaign.name
    shutil.copytree(eval_campaign, camp)
    paths = build_report(camp, resamples=500, seed=1)
    data = json.loads(paths["json"].read_text())
    runs = load_campaign_runs(camp)
    # runs table: before-training and final eval of every run
    for row in data["runs"]:
        run = next(r for r in runs if r.condition == row["condition"] and r.seed == row["seed"])
        ev = evals_of(run.run_dir)
        assert (row["eval_before"], row["eval_final"]) == (ev[-1], ev[19])
    # per-condition summary
    for cond in ("grpo+none", HICRA, SEPA):
        evs = [evals_of(r.run_dir) for r in runs if r.condition == cond]
        e = data["eval"][cond]
        assert e["before_mean"] == pytest.approx(np.mean([v[-1] for v in evs]))
        assert e["final_mean"] == pytest.approx(np.mean([v[19] for v in evs]))
        assert e["change"] == pytest.approx(np.mean([v[19] - v[-1] for v in evs])) and e["change_runs"] == 3
        assert e["final_after_steps"] == [19] and e["window_mean"] == pytest.approx(e["final_mean"])
    # compared like every other metric, in the per-condition table and SEPA vs HICRA
    sh = data["comparisons"][f"{HICRA} vs {SEPA}"]["seed_level"][EVAL]
    assert sh["candidate_mean"] == pytest.approx(data["eval"][SEPA]["final_mean"])
    assert data["comparisons"][f"grpo+none vs {SEPA}"]["seed_level"][EVAL]["available"]
    html, md = paths["html"].read_text(), paths["markdown"].read_text()
    assert "Held-out accuracy (eval_correct_rate)" in html and "Held-out accuracy (eval_correct_rate)" in md
    assert html.count("data:image/png;base64,") == 4 and "(figures/curves_eval_correct_rate.png)" in md
    assert f"| {SEPA} | 3 | {data['eval'][SEPA]['before_mean']:.4g} | {data['eval'][SEPA]['final_mean']:.4g} |" in md
    assert "eval_correct_rate is logged on some steps only" in md


def test_report_change_pairs_each_runs_before_and_final(eval_campaign, tmp_path):  # noqa: F811 — pytest fixture
    """A run whose before-training eval is missing (say its eval.jsonl row was lost) must not shift the
    change: it is the mean over runs of (final - before), from the runs that have both points."""
    camp = tmp_path / eval_campaign.name
    shutil.copytree(eval_campaign, camp)
    runs = sorted((camp / "runs").glob(f"{SEPA}_s*"))
    lost = runs[0] / "eval.jsonl"
    rows = [json.loads(line) for line in lost.read_text().splitlines()]
    rows = [{**r, EVAL: 1.0} if r["after_step"] == 19 else r for r in rows if r["after_step"] != -1]
    lost.write_text("".join(json.dumps(r) + "\n" for r in rows))  # and this run's final is the best
    e = json.loads(build_report(camp, resamples=200, seed=1)["json"].read_text())["eval"][SEPA]
    kept = [evals_of(r) for r in runs[1:]]
    assert e["change_runs"] == 2
    assert e["change"] == pytest.approx(np.mean([v[19] - v[-1] for v in kept]))
    assert e["change"] != pytest.approx(e["final_mean"] - e["before_mean"])  # the unpaired difference


def test_report_without_evals_says_how_to_get_them(small_campaign, tmp_path):  # noqa: F811 — pytest fixture
    camp = tmp_path / small_campaign.name
    shutil.copytree(small_campaign, camp)
    paths = build_report(camp, resamples=200)
    md = paths["markdown"].read_text()
    assert "No held-out evals in this campaign" in md and "[eval] every = N" in md
    assert "eval" not in json.loads(paths["json"].read_text())


def test_report_shows_pass_at_k_and_mean_at_k(tmp_path):
    from fixtures_analysis import write_campaign

    camp = write_campaign(
        tmp_path / "campaign_k",
        conditions=(HICRA, SEPA),
        seeds=(1, 2, 3),
        num_steps=10,
        squeeze=False,
        eval_every=5,
        eval_k=4,
    )
    paths = build_report(camp, resamples=200)
    data = json.loads(paths["json"].read_text())
    runs = load_campaign_runs(camp)
    for cond in (HICRA, SEPA):
        rows = [
            [json.loads(line) for line in (r.run_dir / "eval.jsonl").read_text().splitlines()]
            for r in runs
            if r.condition == cond
        ]
        sampled = data["eval"][cond]["sampled"]
        assert sampled["k"] == 4
        assert sampled["eval_pass_at_k_before"] == pytest.approx(np.mean([ev[0]["eval_pass_at_k"] for ev in rows]))
        assert sampled["eval_pass_at_k_final"] == pytest.approx(np.mean([ev[-1]["eval_pass_at_k"] for ev in rows]))
        assert sampled["eval_mean_at_k_final"] == pytest.approx(np.mean([ev[-1]["eval_mean_at_k"] for ev in rows]))
    md = paths["markdown"].read_text()
    assert "| condition | runs | k | pass@k before | pass@k final | mean@k before | mean@k final |" in md
    # and the other verbs take them like any held-out metric
    base, cand = resolve_arm([HICRA], camp), resolve_arm([SEPA], camp)
    m = compare_arms(base, cand, primary_metric="eval_pass_at_k", resamples=200)["seed_level"]["eval_pass_at_k"]
    assert m["points"]["baseline"] == {r.name: [9] for r in base}
