"""Rewards: answer extraction, match / math / custom, time limits, failure counting, no eval of model text."""

from __future__ import annotations

import math
import textwrap
import threading
import time
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrain.data.base import Example
from retrain.errors import RetrainError
from retrain.rewards import (
    RewardFn,
    Scorer,
    extract_boxed,
    extract_last_number,
    make_scorer,
    match_reward,
    math_reward,
    numbers_equal,
)


def reward_cfg(type="match", custom="", timeout_s=5.0):
    return SimpleNamespace(type=type, custom=custom, timeout_s=timeout_s)


def boxed(answer: str) -> Example:
    return Example(prompt="q", answer=answer, id="ex1", answer_format="boxed")


def number(answer: str) -> Example:
    return Example(prompt="q", answer=answer, id="ex2", answer_format="number")


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A temporary current directory with a my_rewards.py plugin module (cwd is on the import path)."""
    (tmp_path / "my_rewards.py").write_text(
        textwrap.dedent(
            """
            import time

            def exact(completion, reference):
                return 1.0 if completion.strip() == reference else 0.0

            def boom(completion, reference):
                raise KeyError("no such field")

            def nan(completion, reference):
                return float("nan")

            def text(completion, reference):
                return "1.0"

            def truthy(completion, reference):
                return completion == reference

            def slow(completion, reference):
                time.sleep(5)
                return 1.0

            def spin(completion, reference):
                while True:
                    pass

            def swallow(completion, reference):
                try:
                    time.sleep(5)
                except Exception:
                    return 1.0
                return 1.0

            NOT_A_FUNCTION = 3
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


# ----------------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{42}", "42"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\frac{\sqrt{3}}{2}} done", r"\frac{\sqrt{3}}{2}"),
        (r"first \boxed{1} then \boxed{2}", "2"),  # the last box wins
        (r"\boxed {7}", "7"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces are content, not structure
        (r"\boxed{}", ""),
        ("no box here", None),
        (r"\boxed{1 + {2", None),  # unbalanced: cut at max_tokens
        (r"\boxed{3} and then \boxed{4", None),  # the last box is unbalanced → no answer, not the draft
        (r"\boxed", None),
    ],
)
def test_extract_boxed_hand_cases(text, expected):
    assert extract_boxed(text) == expected


# Brace-balanced LaTeX-ish content without backslashes, e.g. "a{b{}c}d".
balanced = st.recursive(
    st.text(alphabet="abc123+-= ", max_size=5),
    lambda inner: st.builds(lambda a, b, c: f"{a}{{{b}}}{c}", inner, inner, inner),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(prefix=st.text(alphabet="xyz {}0123.,", max_size=20), content=balanced)
def test_extract_boxed_returns_any_balanced_content_of_the_last_box(prefix, content):
    assert extract_boxed(prefix + r"\boxed{" + content + "} end") == content


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 42.", "42"),
        ("x = -7", "-7"),
        ("It is −3", "-3"),  # U+2212 minus
        ("3 - 5 = -2", "-2"),
        ("3-5", "5"),  # a minus glued to a number is an operator, not a sign
        ("total: 1,234,567 apples", "1234567"),
        ("costs $1,000.50", "1000.50"),
        ("pi is 3.14", "3.14"),
        ("about .5 of it", ".5"),
        ("52.0", "52.0"),
        ("no digits", None),
    ],
)
def test_extract_last_number_hand_cases(text, expected):
    assert extract_last_number(text) == expected


@settings(max_examples=80, deadline=None)
@given(n=st.integers(min_value=-(10**12), max_value=10**12))
def test_extract_last_number_reads_any_integer_with_separators(n):
    assert extract_last_number(f"so we get {n:,} in total") == str(n)


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [("52.0", "52", True), ("0.50", ".5", True), ("1,000", "1000", True), ("52.1", "52", False),
     ("abc", "abc", False), ("7", "-7", False)],
)
def test_numbers_equal_compares_exact_values(a, b, equal):
    assert numbers_equal(a, b) is equal


# ----------------------------------------------------------------------------------- match / math


def test_match_boxed_trims_whitespace_and_is_exact():
    assert match_reward(r"... \boxed{ 72 }", "72\n") == 1.0
    assert match_reward(r"\boxed{72}", "73") == 0.0
    assert match_reward("72", "72") == 0.0  # boxed format: no box, no answer
    assert match_reward(r"\boxed{72.0}", "72") == 0.0  # boxed answers compare as text (SPEC §10)


def test_match_number_format_normalises_numbers():
    assert match_reward("15 + 27 = 42", "42", "number") == 1.0
    assert match_reward("I think it is 42.0", "42", "number") == 1.0
    assert match_reward("it is 1,042", "1042", "number") == 1.0
    assert match_reward("it is 41, not 42? no: 41", "42", "number") == 0.0
    assert match_reward("no idea", "42", "number") == 0.0


def test_unknown_answer_format_is_a_user_error():
    with pytest.raises(RetrainError, match="answer_format"):
        match_reward("1", "1", "latex")


@pytest.mark.parametrize(
    ("completion", "reference", "reward"),
    [
        (r"\boxed{0.5}", r"\frac{1}{2}", 1.0),
        (r"\boxed{\frac{1}{2}}", "0.5", 1.0),
        (r"\boxed{1+2x}", "2x+1", 1.0),
        (r"\boxed{\sqrt{2}}", "2^{1/2}", 1.0),
        (r"\boxed{72}", "72", 1.0),
        (r"\boxed{2x+2}", "2x+1", 0.0),
        (r"\boxed{\frac{1}{3}}", "0.5", 0.0),
        ("the answer is 0.5", "0.5", 0.0),  # boxed format without a box
    ],
)
def test_math_reward_symbolic_equivalence(completion, reference, reward):
    assert math_reward(completion, reference) == reward


def test_math_scorer_on_number_format():
    scorer = make_scorer(reward_cfg("math"))
    assert scorer.score("so it's 42.0", number("42")) == 1.0
    assert scorer.score("so it's 41", number("42")) == 0.0


def test_model_text_is_never_evaluated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    payloads = [
        r"\boxed{__import__('os').system('touch X')}",
        r"\boxed{__import__('os').system('touch X') + 1}",
        r"\boxed{(lambda: __import__('os').system('touch X'))()}",
        "__import__('os').system('touch X')",
    ]
    for kind in ("match", "math"):
        scorer = make_scorer(reward_cfg(kind))
        for text in payloads:
            for example in (boxed("0"), number("0")):
                assert scorer.score(text, example) == 0.0
    assert not (tmp_path / "X").exists()


def test_math_reward_pathological_input_is_cut_by_the_timeout():
    # 9^9^9^9 makes sympy try to evaluate an astronomically large power: exactly what the limit is for.
    scorer = make_scorer(reward_cfg("math", timeout_s=0.5))
    start = time.perf_counter()
    assert scorer.score(r"\boxed{9^{9^{9^{9}}}}", boxed("1")) == 0.0
    assert time.perf_counter() - start < 2.0
    assert scorer.pop_counts() == {"reward_failures": 0, "reward_timeouts": 1}


# ----------------------------------------------------------------------------------- custom


def test_custom_reward_is_loaded_and_called_with_the_reference(plugin_dir):
    scorer = make_scorer(reward_cfg("custom", "my_rewards:exact"))
    assert scorer.score(" 42 ", number("42")) == 1.0
    assert scorer.score("41", number("42")) == 0.0
    assert scorer.pop_counts() == {"reward_failures": 0, "reward_timeouts": 0}


def test_custom_bool_return_is_a_number(plugin_dir):
    scorer = make_scorer(reward_cfg("custom", "my_rewards:truthy"))
    assert scorer.score("7", number("7")) == 1.0
    assert scorer.failures == 0


def test_reward_fn_protocol_accepts_a_plain_function(plugin_dir):
    import my_rewards

    assert isinstance(my_rewards.exact, RewardFn)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("my_rewards", "must look like 'package.module:function'"),
        ("my_rewards:", "must look like 'package.module:function'"),
        (":exact", "must look like 'package.module:function'"),
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("my_rewards:missing", "has no attribute 'missing'"),
        ("my_rewards:NOT_A_FUNCTION", "is not callable"),
    ],
)
def test_bad_custom_path_names_it_and_the_expected_form(plugin_dir, spec, message):
    with pytest.raises(RetrainError, match=message) as info:
        make_scorer(reward_cfg("custom", spec))
    assert "[reward].custom" in str(info.value) and repr(spec) in str(info.value)


def test_custom_type_without_a_path_is_a_user_error():
    with pytest.raises(RetrainError, match=r'\[reward\].custom: required when type = "custom"'):  # the config's words
        make_scorer(reward_cfg("custom", ""))


def test_unknown_reward_type_is_a_user_error():
    with pytest.raises(RetrainError, match="match, math, custom"):
        make_scorer(reward_cfg("exact"))


@pytest.mark.parametrize("fn", ["boom", "nan", "text"])
def test_bad_custom_results_score_zero_and_are_counted(plugin_dir, fn):
    scorer = make_scorer(reward_cfg("custom", f"my_rewards:{fn}"))
    assert scorer.score("1", number("1")) == 0.0
    assert scorer.score("2", number("1")) == 0.0
    assert (scorer.failures, scorer.timeouts) == (2, 0)
    assert "ex2" in scorer.last_error
    assert scorer.pop_counts() == {"reward_failures": 2, "reward_timeouts": 0}
    assert scorer.pop_counts() == {"reward_failures": 0, "reward_timeouts": 0}  # per-step: popped
    assert scorer.failures == 2  # totals stay


@pytest.mark.parametrize("fn", ["slow", "spin", "swallow"])
def test_slow_custom_reward_is_cut_at_the_timeout(plugin_dir, fn):
    scorer = make_scorer(reward_cfg("custom", f"my_rewards:{fn}", timeout_s=0.2))
    start = time.perf_counter()
    assert scorer.score("1", number("1")) == 0.0
    assert time.perf_counter() - start < 1.0
    assert (scorer.failures, scorer.timeouts) == (0, 1)
    # the timer is disarmed afterwards: a fast reward is unaffected
    fast = make_scorer(reward_cfg("custom", "my_rewards:exact", timeout_s=0.2))
    time.sleep(0.3)
    assert fast.score("1", number("1")) == 1.0


def test_timeout_also_applies_off_the_main_thread(plugin_dir):
    """Off the main thread SIGALRM is unavailable; the scorer stops waiting instead (worker abandoned)."""
    import my_rewards

    scorer = Scorer(lambda c, e: my_rewards.slow(c, e.answer), timeout_s=0.2, name="slow")
    results = []
    worker = threading.Thread(target=lambda: results.append(scorer.score("1", number("1"))))
    start = time.perf_counter()
    worker.start()
    worker.join()
    assert results == [0.0] and time.perf_counter() - start < 1.0
    assert scorer.timeouts == 1


def test_scores_are_finite_floats(plugin_dir):
    scorer = make_scorer(reward_cfg("match"))
    value = scorer.score(r"\boxed{3}", boxed("3"))
    assert isinstance(value, float) and math.isfinite(value) and value == 1.0
