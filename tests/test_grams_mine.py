"""`retrain grams mine`: counting, the CMH score, filters, planted grams ranked first, CLI contract."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrain.cli import main
from retrain.errors import RetrainError
from retrain.grams.mine import (
    Generation,
    cmh_z,
    mine_grams,
    read_generations,
    render_snippet,
    text_grams,
    word_runs,
)
from retrain.rl.planning import find_planning_phrases

PLANTED = ("let me verify", "carry the one", "check by subtracting")
FILLER = (
    "we",
    "add",
    "so",
    "then",
    "next",
    "now",
    "the",
    "result",
    "is",
    "this",
    "gives",
    "first",
    "take",
    "number",
    "and",
    "plus",
    "ok",
    "here",
    "write",
    "it",
    "as",
    "good",
    "sum",
    "digits",
    "value",
)


def test_word_runs_split_where_a_gram_cannot_continue():
    assert word_runs("Wait, let me check: 3+4 = 7. That’s it - double-check") == [
        ["wait", "let", "me", "check", "3"],
        ["4"],
        ["7"],
        ["that's", "it", "double", "check"],
    ]
    assert text_grams("Let me verify. Let me", 2, 3) == {"let me", "me verify", "let me verify"}
    assert text_grams("a b", 3, 4) == set()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list("abcXYé ’'.,:;-—+=_\n()") + ["wait", "let", "me", " 12 "]), max_size=40))
def test_every_counted_gram_matches_the_text_it_came_from(pieces):
    text = "".join(pieces)
    # A mined gram must mark, during training, the text it was counted in (same word and separator rules).
    for gram in text_grams(text, 1, 4):
        assert find_planning_phrases(text, [gram]) == [gram], (text, gram)


def test_cmh_z_hand_computed_and_invariants():
    # One table (8, 2, 2, 8): E = 10·10/20 = 5, V = 10⁴ / (20²·19), z = 3 / √V.
    assert cmh_z([(8, 2, 2, 8)]) == pytest.approx(3 / math.sqrt(1e4 / (400 * 19)))
    # Swapping correct and incorrect flips the sign; tables without variance change nothing.
    assert cmh_z([(2, 8, 8, 2)]) == pytest.approx(-cmh_z([(8, 2, 2, 8)]))
    assert cmh_z([(8, 2, 2, 8), (3, 0, 0, 0), (0, 2, 0, 5), (1, 0, 0, 0)]) == pytest.approx(cmh_z([(8, 2, 2, 8)]))
    # Two strata pool numerators and variances: (4,1,1,4) twice.
    e, v = 5 * 5 / 10, 5 * 5 * 5 * 5 / (10 * 10 * 9)
    assert cmh_z([(4, 1, 1, 4), (4, 1, 1, 4)]) == pytest.approx(2 * (4 - e) / math.sqrt(2 * v))
    assert cmh_z([]) == 0.0


def synthetic_generations(*, per_prompt: int = 8, prompts: int = 60, seed: int = 0) -> list[Generation]:
    """Completions of arithmetic prompts with three planted reasoning grams (60% of correct completions,
    10% of incorrect ones) and three traps that also track correctness: a number ("equals 42"), a prompt
    echo ("the sum of"), and a phrase tied to easy prompts whatever the outcome ("easy peasy lemon")."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(prompts):
        a, b = int(rng.integers(10, 99)), int(rng.integers(10, 99))
        prompt = f"What is the sum of {a} and {b}? Put the answer in \\boxed{{}}."
        easy = p % 2 == 0
        p_correct = 0.8 if easy else 0.2
        for _ in range(per_prompt):
            correct = bool(rng.random() < p_correct)
            words = list(rng.choice(FILLER, size=12))
            parts = [" ".join(words[:6])]
            for gram in PLANTED:
                if rng.random() < (0.6 if correct else 0.1):
                    parts.append(gram)
            if correct and rng.random() < 0.7:
                parts.append("equals 42")
            if rng.random() < (0.8 if correct else 0.2):
                parts.append("the sum of")
            if easy:
                parts.append("easy peasy lemon")
            parts.append(" ".join(words[6:]))
            rng.shuffle(parts)
            text = ". ".join(parts) + f". \\boxed{{{a + b if correct else a + b + 1}}}"
            rows.append(Generation(text=text, correct=correct, group=("run", p, prompt), prompt=prompt))
    return rows


def test_mining_ranks_the_planted_grams_first_and_drops_task_content():
    result = mine_grams(synthetic_generations(), top=10)
    ranked = [s.gram for s in result.grams]
    assert set(ranked[:3]) == set(PLANTED), ranked
    assert result.stratified and result.informative_groups >= 30
    assert all(s.z > 0 for s in result.grams)
    for trap in ("equals 42", "the sum of", "sum of", "easy peasy lemon", "easy peasy", "peasy lemon"):
        assert trap not in ranked, (trap, ranked)
    # sub-grams of a chosen gram are not listed again
    assert "let me" not in ranked and "me verify" not in ranked
    top = result.grams[0]
    assert top.rate_with > top.rate_without and 0 < top.share < 1


def test_within_prompt_score_is_not_fooled_by_prompt_difficulty():
    # With one completion per prompt there is no within-prompt contrast: the pooled score lets a phrase
    # of easy prompts look like a reasoning move, and the result says so.
    gens = synthetic_generations()
    one_per_prompt = mine_grams([g for i, g in enumerate(gens) if i % 8 == 0], min_support=3, top=30)
    assert not one_per_prompt.stratified
    assert any("across prompts" in note for note in one_per_prompt.notes)
    pooled = {s.gram: s.z for s in mine_grams(gens, top=10**6, min_z=-100, stratify=False).grams}
    within = {s.gram: s.z for s in mine_grams(gens, top=10**6, min_z=-100).grams}
    assert pooled["easy peasy lemon"] > 3  # confounded: easy prompts are mostly solved
    assert abs(within["easy peasy lemon"]) < 2  # same prompt, gram present either way: no signal


def test_no_contrast_ranks_by_frequency_and_says_so():
    gens = [Generation(f"so let me verify it {i}", True, ("r", i, "p")) for i in range(30)]
    result = mine_grams(gens)
    assert [s.gram for s in result.grams][:1] == ["let me verify"] or result.grams[0].support == 30
    assert any("no contrast" in note for note in result.notes)


def test_too_few_completions_and_bad_settings_are_user_errors():
    with pytest.raises(RetrainError, match="only 3 completions"):
        mine_grams([Generation("a b c", True, ("r", 0, "p"))] * 3)
    with pytest.raises(RetrainError, match="min-n"):
        mine_grams(synthetic_generations(), n_min=0)


def test_snippet_loads_as_the_planning_table(tmp_path):
    from retrain.config import load_config

    result = mine_grams(synthetic_generations(), top=5)
    snippet = render_snippet(result, ["logs/run"])
    assert tomllib.loads(snippet)["planning"]["strategic_grams"] == [s.gram for s in result.grams]
    path = tmp_path / "retrain.toml"
    path.write_text(snippet)
    assert load_config(path).planning.strategic_grams == [s.gram for s in result.grams]


# ------------------------------------------------------------------------------------------- CLI


def write_generations(run_dir: Path, gens: list[Generation], *, metrics: bool = True) -> Path:
    rows = [
        {
            "step": g.group[1],
            "prompt": g.prompt,
            "completion": g.text,
            "completion_chars": len(g.text),
            "reward": float(g.correct),
            "correct": g.correct,
            "num_tokens": 20,
            "hit_max_tokens": False,
            "planning_phrases": [],
        }
        for g in gens
    ]
    (run_dir / "emergence").mkdir(parents=True)
    (run_dir / "emergence" / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if metrics:
        (run_dir / "metrics.jsonl").write_text("")
    return run_dir


def test_cli_mine_on_a_campaign_writes_the_snippet(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    gens = synthetic_generations()
    camp = tmp_path / "campaign_x"
    write_generations(camp / "runs" / "maxrl+gtpo_s1", gens[: len(gens) // 2])
    write_generations(camp / "runs" / "maxrl+gtpo_s2", gens[len(gens) // 2 :])
    (camp / "runs" / "not_started").mkdir()
    assert main(["grams", "mine", str(camp), "--top", "5", "--json", "mined.json"]) == 0
    out = capsys.readouterr().out
    assert "let me verify" in out and "wrote strategic_grams.toml" in out
    grams = tomllib.loads(Path("strategic_grams.toml").read_text())["planning"]["strategic_grams"]
    assert set(grams[:3]) == set(PLANTED)
    data = json.loads(Path("mined.json").read_text())
    assert data["completions"] == len(gens) and [g["gram"] for g in data["grams"]] == grams
    # A second run replaces its own output; a file retrain did not write is never touched.
    assert main(["grams", "mine", str(camp), "--top", "3"]) == 0
    Path("mine.toml").write_text("# my notes\n")
    assert main(["grams", "mine", str(camp), "--out", "mine.toml"]) == 2
    assert Path("mine.toml").read_text() == "# my notes\n"
    assert "retrain did not write" in capsys.readouterr().err


def test_cli_mine_bad_input_exits_2_with_one_clear_message(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cases = [
        (["grams", "mine", "nope"], "nope: no such run or campaign directory"),
        (["grams", "mine", str(tmp_path)], "neither a run dir"),
        (
            ["grams", "mine", str(write_generations(tmp_path / "few", synthetic_generations()[:5]))],
            "only 5 completions",
        ),
        (["grams", "mine", str(tmp_path / "few"), "--min-n", "3", "--max-n", "2"], "min-n"),
        (["grams", "mine", str(tmp_path / "few"), "--top", "x"], "invalid int value"),
        (["grams", "mine"], "required: RUN_OR_CAMPAIGN"),
    ]
    (tmp_path / "camp" / "runs" / "a").mkdir(parents=True)
    cases.append((["grams", "mine", str(tmp_path / "camp")], "no run under runs/ has emergence/generations.jsonl"))
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    assert not Path("strategic_grams.toml").exists()


def test_cli_mine_nothing_found_exits_1_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    gens = [Generation(f"word{i} other{i} thing{i}", i % 2 == 0, ("r", i // 4, "p")) for i in range(40)]
    assert main(["grams", "mine", str(write_generations(tmp_path / "run", gens))]) == 1
    assert "no gram passed the filters" in capsys.readouterr().err
    assert not Path("strategic_grams.toml").exists()


def test_read_generations_takes_outcome_from_reward_when_correct_is_absent(tmp_path):
    run = tmp_path / "run"
    (run / "emergence").mkdir(parents=True)
    rows = [
        {"step": 0, "prompt": "p", "completion": "a b", "reward": 0.9},
        {"step": 0, "prompt": "p", "completion": "a b", "reward": 0.1},
        {"step": 0, "prompt": "p", "reward": 1.0},  # no text: skipped
        {"step": 0, "prompt": "p", "completion": "x" * 5, "completion_chars": 900, "correct": True},
    ]
    (run / "emergence" / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    gens = read_generations([str(run)])
    assert [(g.correct, g.truncated) for g in gens] == [(True, False), (False, False), (True, True)]
