"""`retrain grams check` and `retrain explain --probe`: planning tokens of sampled completions, measured
as a training step measures them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrain.cli import main
from retrain.grams.probe import planning_stats

SCRIPTED = """
[model]
name = "tiny-random"

[algorithm]
transform_mode = "{transform}"

[training]
batch_size = 2
group_size = 4
max_tokens = 8

[data]
source = "arithmetic"

[backend]
backend = "retrain_test_plugins:ScriptedBackend"
"""


def scripted_config(tmp_path: Path, transform: str = "gtpo_hicra", extra: str = "") -> Path:
    path = tmp_path / f"{transform}.toml"
    path.write_text(SCRIPTED.format(transform=transform) + extra)
    return path


def test_planning_stats_hand_computed():
    # "Let |me |check: |2 ..." : "let me check" spans the first three tokens.
    text = "Let me check: 2 + 3 = 5."
    offsets = [(0, 4), (4, 7), (7, 14), (14, 16), (16, 18), (18, 20), (20, 22), (22, 24)]
    s = planning_stats([(text, offsets), ("no plan", [(0, 3), (3, 7)])], ["let me check", "start over"])
    assert (s.completions, s.tokens, s.planning_tokens, s.completions_with_planning) == (2, 10, 3, 1)
    assert s.planning_token_fraction == pytest.approx(0.3)
    assert s.gram_hits == {"let me check": 1, "start over": 0} and s.unmatched == ["start over"]
    assert planning_stats([], ["x"]).planning_token_fraction == 0.0


def test_check_reports_the_fraction_a_step_would_log(tmp_path, capsys):
    # Per prompt: 9 + 4 + 6 + 1 = 20 tokens; "Let me check" marks 3, "Wait, let me think" 4 (two grams).
    cfg = scripted_config(tmp_path)
    assert main(["grams", "check", str(cfg), "--prompts", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["prompts"], report["samples_per_prompt"], report["completions"]) == (3, 4, 12)
    assert (report["tokens"], report["planning_tokens"]) == (60, 21)
    assert report["planning_token_fraction"] == pytest.approx(0.35)
    assert report["gram_hits"]["let me check"] == 3 and report["gram_hits"]["wait let me"] == 3
    assert "start over" in report["unmatched"]
    # A mined snippet replaces the config's list; the text output names the grams that matched.
    snippet = tmp_path / "mined.toml"
    snippet.write_text('[planning]\nstrategic_grams = ["the answer is", "never said"]\n')
    assert main(["grams", "check", str(cfg), "--prompts", "1", "--grams-file", str(snippet)]) == 0
    out = capsys.readouterr().out
    assert "planning_token_fraction 0.1500 (3 of 20 completion tokens)" in out
    assert "'the answer is' (1)" in out and "1 of 2 grams never matched: 'never said'" in out
    assert "warning" not in out


def test_check_warns_when_the_grams_mark_nothing(tmp_path, capsys):
    cfg = scripted_config(tmp_path)
    assert main(["grams", "check", str(cfg), "--planning.strategic_grams", '["start over"]']) == 0
    out = capsys.readouterr().out
    assert "planning_token_fraction 0.0000" in out
    assert "warning: this gram list: planning_token_fraction = 0.0000" in out and "gtpo_hicra trains like gtpo" in out


def test_check_bad_input_exits_2(tmp_path, capsys):
    cfg = scripted_config(tmp_path)
    (tmp_path / "bad.toml").write_text("[planning]\nstrategic_grams = 3\n")
    (tmp_path / "camp.toml").write_text(SCRIPTED.format(transform="gtpo") + "\n[campaign]\nseeds = [1]\n")
    cases = [
        (["grams", "check", str(cfg), "--grams-file", str(tmp_path / "none.toml")], "no such file"),
        (["grams", "check", str(cfg), "--grams-file", str(tmp_path / "bad.toml")], "needs [planning] strategic_grams"),
        (["grams", "check", str(cfg), "--prompts", "0"], "need prompts >= 1"),
        (["grams", "check", str(tmp_path / "camp.toml")], "pass a run config"),
        (["grams", "check", str(tmp_path / "missing.toml")], "missing.toml"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)


def test_check_on_a_real_model(tmp_path, capsys):
    # tiny-random through the local backend: real tokenizer offsets, real sampling.
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(
        SCRIPTED.format(transform="gtpo_sepa").replace(
            'backend = "retrain_test_plugins:ScriptedBackend"', 'backend = "local"\ndevice = "cpu"'
        )
    )
    assert (
        main(
            [
                "grams",
                "check",
                str(cfg),
                "--prompts",
                "2",
                "--samples",
                "3",
                "--json",
                "--planning.strategic_grams",
                '["a", "e"]',
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["completions"] == 6 and report["model"] == "tiny-random"
    assert 0 <= report["planning_tokens"] <= report["tokens"] and report["tokens"] > 0
    assert report["planning_token_fraction"] == pytest.approx(report["planning_tokens"] / report["tokens"])


def test_explain_probe_warns_for_the_planning_conditions_only(tmp_path, capsys):
    cfg = scripted_config(
        tmp_path,
        "gtpo",
        extra="""
[campaign]
seeds = [1, 2]

[[campaign.conditions]]
advantage_mode = "maxrl"
transform_mode = "gtpo"

[[campaign.conditions]]
advantage_mode = "maxrl"
transform_mode = "gtpo_hicra"

[[campaign.conditions]]
advantage_mode = "maxrl"
transform_mode = "gtpo_sepa"
""",
    )
    assert main(["explain", str(cfg), "--probe", "--planning.strategic_grams", '["start over"]']) == 0
    out = capsys.readouterr().out
    assert "# planning probe (maxrl+gtpo_hicra, maxrl+gtpo_sepa): 4 prompts x 4 base-model completions" in out
    assert (
        "maxrl+gtpo_hicra, maxrl+gtpo_sepa (probe of 16 base-model completions): planning_token_fraction = 0.0000"
    ) in out
    assert "gtpo_hicra trains like gtpo" in out
    # With grams the model does write, the probe finds them and there is no such warning.
    assert main(["explain", str(cfg), "--probe", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["probe"][0]["planning_token_fraction"] == pytest.approx(0.35)
    assert not any("planning_token_fraction" in w for w in info["warnings"])
    # Without --probe nothing is sampled.
    assert main(["explain", str(cfg), "--json"]) == 0
    assert "probe" not in json.loads(capsys.readouterr().out)
