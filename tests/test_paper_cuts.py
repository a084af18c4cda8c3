"""A new user's paper cuts (issue #11 item 10): each one as the user met it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from retrain.cli import main


def test_status_into_a_closed_pipe_is_quiet(tmp_path: Path):
    """`retrain status --json | head` printed a BrokenPipeError traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "retrain", "status", str(tmp_path), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before retrain writes a byte
    err = proc.stderr.read().decode()
    assert proc.wait() == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err


def test_report_of_an_empty_dir_suggests_only_what_report_takes(tmp_path: Path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a campaign directory (no runs/ folder)" in err
    assert "--candidate" not in err and "--baseline" not in err


def test_plot_errors_name_no_flag_the_user_did_not_type(tmp_path: Path, capsys):
    assert main(["plot", str(tmp_path / "nosuch")]) == 2
    err = capsys.readouterr().err
    assert "--inputs" not in err and "retrain compare" not in err
    assert "no such run directory" in err and "retrain plot CAMPAIGN" in err
    assert main(["plot", str(tmp_path)]) == 2
    assert "--inputs" not in capsys.readouterr().err


def test_litmus_errors_carry_the_retrain_prefix(tmp_path: Path, capsys):
    assert main(["litmus", "--baseline", str(tmp_path / "a"), "--candidate", str(tmp_path / "b")]) == 3
    err = capsys.readouterr().err
    assert err.startswith("retrain: error: --baseline")


def test_status_eta_counts_held_out_evals(tmp_path: Path):
    """Evals run between steps, outside step_time_s: the ETA left them out."""
    from retrain.campaign.status import run_status

    rows = [{"step": s, "step_time_s": 1.0, **({"eval_time_s": 5.0} if s in (4, 9) else {})} for s in range(10)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "run.json").write_text(json.dumps({"status": "running", "max_steps": 20, "step": 9}))
    status = run_status(tmp_path)
    assert status.eta_s == 10 * (1.0 + 10.0 / 10)  # 10 steps left, each with its share of eval time
    assert status.elapsed_s == 10 * 1.0 + 2 * 5.0


def test_a_run_says_when_it_evaluates_and_what_to_do_next(tmp_path: Path, capsys):
    from runutil import write_tiny_config

    from retrain.config import load_config
    from retrain.run import train

    log_dir = tmp_path / "run"
    assert train(load_config(write_tiny_config(tmp_path / "r.toml", log_dir, steps=2))) == 0
    out = capsys.readouterr().out
    assert "eval (the base model): greedy answers to 4 held-out prompts ..." in out
    assert "eval (after step 1): " in out and "% correct (" in out
    assert f"Next: retrain plot {log_dir}" in out
    assert main(["plot", str(log_dir), "--out", str(tmp_path / "curve.png")]) == 0  # the suggestion works
    rows = [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[0].get("eval_time_s") is None and rows[1]["eval_time_s"] > 0


def test_explain_lists_the_plugins_a_config_would_import(tmp_path: Path, capsys):
    """Plugins run code (issue #11 item 9): explain says so, and which ones, without importing them."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[reward]\ntype = "custom"\ncustom = "not_imported_by_explain:score"\n'
        '[algorithm]\nadvantage_mode = "my_adv:fn"\n[backend]\ndevice = "cpu"\n'
    )
    assert main(["explain", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "runs with your permissions" in out
    assert (
        "#   reward.custom = not_imported_by_explain:score" in out and "#   algorithm.advantage_mode = my_adv:fn" in out
    )
    assert main(["explain", str(cfg), "--json"]) == 0
    plugins = json.loads(capsys.readouterr().out)["plugins"]
    assert {"key": "reward.custom", "path": "not_imported_by_explain:score"} in plugins
    assert all(p["key"] != "backend.device" for p in plugins)


def test_a_toml_with_only_squeeze_trains_nothing(tmp_path: Path, monkeypatch, capsys):
    """[squeeze] without adapter_path started a training run of the default Qwen3-4B."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text("[squeeze]\nmin_variance_retention = 0.9\n")
    assert main(["s.toml"]) == 2
    err = capsys.readouterr().err
    assert "standalone squeeze (it trains nothing) and needs the adapter to analyse" in err
    assert list(tmp_path.iterdir()) == [tmp_path / "s.toml"]  # no logs/
    assert main(["explain", "s.toml"]) == 0
    assert "needs adapter_path" in capsys.readouterr().out


def test_docs_say_what_squeeze_does_with_and_without_a_campaign():
    doc = (Path(__file__).parents[1] / "docs" / "config.md").read_text()
    squeeze = doc[doc.index("## `[squeeze]`") :]
    assert "without `[squeeze]` the config is a single run" not in squeeze
    assert "standalone squeeze of `adapter_path` (nothing is trained)" in squeeze


def test_explain_estimates_survive_a_damaged_prior_log(tmp_path: Path, capsys):
    """explain reads a prior run's speed from its metrics.jsonl: torn rows, a 5,000-digit integer,
    deep nesting and NaN are skipped (with a warning), the good rows still give the estimate."""
    import warnings

    log_dir = tmp_path / "prior"
    log_dir.mkdir()
    good = [
        json.dumps(
            {
                "step": s,
                "step_time_s": 10.0,
                "mean_completion_tokens": 50.0,
                "batch_size": 2,
                "group_size": 4,
                "tokens_per_second": 100.0,
            }
        )
        for s in range(5)
    ]
    bad = [
        '{"step": 5, "step_time_s": ' + "9" * 5000 + "}",
        '{"step": 6, "x": ' + "[" * 5000 + "]" * 5000 + "}",
        '{"step": 7, "step_time_s": NaN}',
        '{"step": 8, "step_ti',
    ]
    (log_dir / "metrics.jsonl").write_text("\n".join(good + bad) + "\n")
    path = tmp_path / "c.toml"
    path.write_text(f'[logging]\nlog_dir = "{log_dir.as_posix()}"\n')
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert main(["explain", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["tokens_per_step"]["measured"] == {
        "sampled": 50.0 * 2 * 4,
        "prompt_and_completion": 1000.0,
        "from": str(log_dir),
    }
