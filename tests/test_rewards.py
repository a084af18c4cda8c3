"""Rewards: answer extraction, match / math / custom, failure counting, no eval of model text.

The worker processes (time and memory limits, shutdown) have their own tests in test_reward_worker.py;
the adversarial corpus runs in test_reward_corpus.py.
"""

from __future__ import annotations

import math
import textwrap
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
    parse_math,
)


def reward_cfg(type="match", custom="", timeout_s=5.0, **limits):
    return SimpleNamespace(type=type, custom=custom, timeout_s=timeout_s, **limits)


@pytest.fixture(scope="module")
def scorers():
    """One `match` and one `math` scorer for the module (each starts a worker process)."""
    made = {kind: make_scorer(reward_cfg(kind)) for kind in ("match", "math")}
    yield made
    for scorer in made.values():
        scorer.close()


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
        (r"\boxed{42}}}", "42"),  # stray braces after the box are not part of it
    ],
)
def test_extract_boxed_hand_cases(text, expected):
    assert extract_boxed(text) == expected


def test_extract_boxed_stops_at_the_answer_cap():
    assert extract_boxed(r"\boxed{" + "7" * 10 + "}", max_chars=10) == "7" * 10
    assert extract_boxed(r"\boxed{" + "7" * 11 + "}", max_chars=10) is None
    huge = r"\boxed{" + "7" * 10_000_000 + "}"  # the issue's 10 MB box: scanned only up to the cap
    start = time.perf_counter()
    assert extract_boxed(huge, max_chars=1000) is None
    assert time.perf_counter() - start < 1.0


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
        # a dash of any kind directly before the digits is a minus sign (issue: "–42" was read as 42)
        ("The answer is –42", "-42"),  # en dash
        ("The answer is —42", "-42"),  # em dash
        ("x = ‒7, or ﹣7, or －7", "-7"),
        ("the answer\u201442", "42"),  # glued to a word: punctuation, not a sign
        ("3\u20135", "5"),  # glued to a number: an operator
        ("it is 1e5", "1e5"),
        ("it is 2.5E-3", "2.5E-3"),
        ("it is 1e999", "1e999"),  # not 999
        ("x2", None),  # digits glued to a word are part of it
        ("CO2 and H2O", None),
        ("version v1.2", None),
        ("４２ or ٤٢", None),  # only ASCII digits
        ("4\u200b2", "2"),
        ("42% of them", "42"),
    ],
)
def test_extract_last_number_hand_cases(text, expected):
    assert extract_last_number(text) == expected


@settings(max_examples=80, deadline=None)
@given(n=st.integers(min_value=-(10**12), max_value=10**12))
def test_extract_last_number_reads_any_integer_with_separators(n):
    assert extract_last_number(f"so we get {n:,} in total") == str(n)


def test_extract_last_number_is_linear_and_capped():
    start = time.perf_counter()
    assert extract_last_number("1 " * 500_000 + "7") == "7"
    assert extract_last_number("9" * 2000, max_chars=1000) is None
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("52.0", "52", True),
        ("0.50", ".5", True),
        ("1,000", "1000", True),
        ("52.1", "52", False),
        ("abc", "abc", False),
        ("7", "-7", False),
        ("1e5", "100000", True),
        ("–7", "-7", True),
        ("NaN", "NaN", False),
        ("Infinity", "Infinity", False),
    ],
)
def test_numbers_equal_compares_exact_values(a, b, equal):
    assert numbers_equal(a, b) is equal


# ----------------------------------------------------------------------------------- match / math


def test_match_boxed_trims_whitespace_and_is_exact():
    assert match_reward(r"... \boxed{ 72 }", "72\n") == 1.0
    assert match_reward(r"\boxed{72}", "73") == 0.0
    assert match_reward("72", "72") == 0.0  # boxed format: no box, no answer
    assert match_reward(r"\boxed{72.0}", "72") == 0.0  # boxed answers compare as text
    assert match_reward(r"\boxed{–72}", "-72") == 0.0  # as text, an en dash is not a hyphen


def test_match_number_format_normalises_numbers():
    assert match_reward("15 + 27 = 42", "42", "number") == 1.0
    assert match_reward("I think it is 42.0", "42", "number") == 1.0
    assert match_reward("it is 1,042", "1042", "number") == 1.0
    assert match_reward("it is 41, not 42? no: 41", "42", "number") == 0.0
    assert match_reward("no idea", "42", "number") == 0.0
    assert match_reward("so x = –42", "-42", "number") == 1.0


@pytest.mark.parametrize(
    "dash", ["-", "\u2010", "\u2011", "\u2012", "\u2013", "\u2014", "\u2015", "\u2212", "\ufe58", "\ufe63", "\uff0d"]
)
def test_a_dash_before_a_number_is_its_sign_in_every_reward(dash):
    """Issue 11: "–42"/"—42" were read as 42. One rule for number answers and for math."""
    for reward in (match_reward, math_reward):
        assert reward(f"x = {dash}42", "42", "number") == 0.0
        assert reward(f"x = {dash}42", "-42", "number") == 1.0
    assert math_reward(rf"\boxed{{{dash}42}}", "42") == 0.0
    assert math_reward(rf"\boxed{{{dash}42}}", "-42") == 1.0


def test_answers_over_the_cap_score_zero():
    long = "4" * 1001
    assert match_reward(rf"\boxed{{{long}}}", long) == 0.0
    assert match_reward(rf"\boxed{{{long}}}", long, max_answer_chars=2000) == 1.0
    assert math_reward(rf"\boxed{{{long}}}", long) == 0.0
    assert match_reward(f"it is {long}", long, "number") == 0.0


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
        (r"\boxed{10\%}", "0.1", 1.0),
        (r"\boxed{x = 5}", "5", 1.0),
        (r"\boxed{5\text{ cm}}", "5", 1.0),
        (r"\boxed{\left(1,2\right)}", "(1, 2)", 1.0),
        (r"\boxed{42.}", "42", 1.0),  # a sentence's full stop inside the box
        (r"\boxed{2x+2}", "2x+1", 0.0),
        (r"\boxed{\frac{1}{3}}", "0.5", 0.0),
        ("the answer is 0.5", "0.5", 0.0),  # boxed format without a box
    ],
)
def test_math_reward_symbolic_equivalence(completion, reference, reward):
    assert math_reward(completion, reference) == reward


# Issue 11: each of these scored 1.0 through math-verify's first-number fallback.
ISSUE_WRONG_CORRECT = [
    (r"\boxed{42 + ???}", "42"),
    (r"\boxed{42)}", "42"),
    (r"\boxed{42\%\%}", "42"),
    (r"\boxed{1+__import__('os')}", "1"),
    (r"\boxed{" + " + ".join(["1"] * 1000) + "}", "1"),
    (r"\boxed{\phantom{42}}", "42"),  # invisible
]


@pytest.mark.parametrize(("completion", "reference"), ISSUE_WRONG_CORRECT)
def test_unparseable_answers_score_zero_never_the_first_number(completion, reference, scorers):
    assert math_reward(completion, reference) == 0.0
    assert scorers["math"].score(completion, boxed(reference)) == 0.0


# The review's cases: each scored 1.0 (math-verify reads `7 = 42` by its right side and `42 \approx 7` by its
# left, and drops a trailing \text{...} whole).
HEDGES = [
    (r"\boxed{7 = 42}", "42"),
    (r"\boxed{7 \equiv 42}", "42"),
    (r"\boxed{42 \approx 7}", "42"),
    (r"\boxed{42 \text{ (or 7)}}", "42"),
    (r"\boxed{0.5 \approx 9}", r"\frac{1}{2}"),
    (r"\boxed{42 = 42}", "42"),  # a relation between two numbers is not an answer
    (r"\boxed{x + 35 = 42}", "42"),
    (r"\boxed{a = 7 = 42}", "42"),
    (r"\boxed{x \approx 42}", "42"),
    (r"\boxed{x \in 42}", "42"),
    (r"\boxed{42 \text{ or more}}", "42"),
    (r"\boxed{42 \mbox{ (approximately)}}", "42"),
    (r"\boxed{42 \textit{ish}}", "42"),
    (r"\boxed{42 \mathrm{(or\ 7)}}", "42"),
]


@pytest.mark.parametrize(("completion", "reference"), HEDGES)
def test_relations_and_words_that_hedge_score_zero(completion, reference, scorers):
    assert math_reward(completion, reference) == 0.0
    assert scorers["math"].score(completion, boxed(reference)) == 0.0


@pytest.mark.parametrize(
    ("completion", "reference"),
    [
        (r"\boxed{x = 42}", "42"),
        (r"\boxed{x_1=42}", "42"),
        (r"\boxed{\theta = \frac{1}{2}}", "0.5"),
        (r"\boxed{42 \text{ cm}}", "42"),
        (r"\boxed{24 \text{ square units}}", "24"),
        (r"\boxed{42 \textbf{ dollars}}", "42"),
        (r"\boxed{42\,\mathrm{km}}", "42"),
        (r"\boxed{\text{42}}", "42"),
        (r"\boxed{42\text{ cm}^2}", "42"),
        (r"\boxed{y = 1 + 2x}", "y = 2x + 1"),  # an equation reference is compared equation to equation
        (r"\boxed{x \le 3}", r"x \leq 3"),
    ],
)
def test_a_symbol_equals_value_and_units_in_words_still_score(completion, reference):
    assert math_reward(completion, reference) == 1.0


def test_the_reward_docstring_examples_run():
    import doctest

    from retrain import rewards

    result = doctest.testmod(rewards)
    assert result.failed == 0 and result.attempted >= 5


@pytest.mark.parametrize("text", ["42 + ???", "42)", r"42\%\%", "1+__import__('os')", "", "  ", "4 2 )"])
def test_parse_math_needs_the_whole_text(text):
    assert parse_math(text) is None


def test_math_scorer_on_number_format(scorers):
    scorer = scorers["math"]
    assert scorer.score("so it's 42.0", number("42")) == 1.0
    assert scorer.score("so it's 41", number("42")) == 0.0
    assert scorer.score("so it's 1e5", number("100000")) == 1.0


def test_score_batch_matches_score(scorers):
    texts = [r"\boxed{1}", r"\boxed{2}", "no", r"\boxed{\frac{2}{4}}"]
    examples = [boxed("1"), boxed("3"), boxed("1"), boxed("0.5")]
    for kind, expected in (("match", [1.0, 0.0, 0.0, 0.0]), ("math", [1.0, 0.0, 0.0, 1.0])):
        assert scorers[kind].score_batch(texts, examples) == expected
        assert [scorers[kind].score(t, e) for t, e in zip(texts, examples, strict=True)] == expected


def test_model_text_is_never_evaluated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # before the scorers: their workers start here
    scorers = {kind: make_scorer(reward_cfg(kind)) for kind in ("match", "math")}
    payloads = [
        r"\boxed{__import__('os').system('touch X')}",
        r"\boxed{__import__('os').system('touch X') + 1}",
        r"\boxed{(lambda: __import__('os').system('touch X'))()}",
        "__import__('os').system('touch X')",
        "9**9**9 and __import__('os').system('touch X')",
    ]
    for kind in ("match", "math"):
        for text in payloads:
            for example in (boxed("0"), number("0")):
                assert scorers[kind].score(text, example) == 0.0
            assert math_reward(text, "0") == 0.0 and math_reward(text, "0", "number") == 0.0
        scorers[kind].close()
    assert not (tmp_path / "X").exists()


# ----------------------------------------------------------------------------------- custom


def test_custom_reward_is_loaded_and_called_with_the_reference(plugin_dir):
    with make_scorer(reward_cfg("custom", "my_rewards:exact")) as scorer:
        assert scorer.score(" 42 ", number("42")) == 1.0
        assert scorer.score("41", number("42")) == 0.0
        assert scorer.pop_counts() == {"reward_failures": 0, "reward_timeouts": 0}


def test_custom_bool_return_is_a_number(plugin_dir):
    with make_scorer(reward_cfg("custom", "my_rewards:truthy")) as scorer:
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
    with make_scorer(reward_cfg("custom", f"my_rewards:{fn}")) as scorer:
        assert scorer.score("1", number("1")) == 0.0
        assert scorer.score("2", number("1")) == 0.0
        assert (scorer.failures, scorer.timeouts) == (2, 0)
        assert "ex2" in scorer.last_error
        assert scorer.pop_counts() == {"reward_failures": 2, "reward_timeouts": 0}
        assert scorer.pop_counts() == {"reward_failures": 0, "reward_timeouts": 0}  # per-step: popped
        assert scorer.failures == 2  # totals stay


def test_a_reward_that_cannot_go_to_the_worker_is_a_clear_error():
    with pytest.raises(RetrainError, match="module-level function"):
        Scorer(lambda completion, reference, answer_format: 1.0, name="inline")


def test_scores_are_finite_floats(scorers):
    value = scorers["match"].score(r"\boxed{3}", boxed("3"))
    assert isinstance(value, float) and math.isfinite(value) and value == 1.0


def test_the_contributing_reward_example_is_one_function_and_one_entry(monkeypatch):
    """The "A reward" snippet in CONTRIBUTING.md registers a factory whose reward the workers can call:
    picklable, `(completion, reference, answer_format) -> float`."""
    import pickle
    from pathlib import Path

    from retrain import rewards
    from retrain.registry import Registry

    text = (Path(__file__).resolve().parents[1] / "CONTRIBUTING.md").read_text(encoding="utf-8")
    code = text.split("### A reward", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    fresh = Registry("reward", "[reward].type")
    namespace = {**vars(rewards), "REWARDS": fresh}
    exec(code, namespace)  # noqa: S102 -- as if written in rewards.py
    monkeypatch.setattr(rewards, "within_one_percent", namespace["within_one_percent"], raising=False)
    reward = fresh.resolve("within_1pct")(reward_cfg("within_1pct", max_answer_chars=1000))
    reward = pickle.loads(pickle.dumps(reward))  # what the reward worker receives
    assert reward(r"so \boxed{100.5}", "100", "boxed") == 1.0
    assert reward("so it is 99.2", "100", "number") == 1.0
    assert reward("so it is 102", "100", "number") == 0.0
    assert reward(r"\boxed{x}", "100", "boxed") == 0.0
    assert reward(r"\boxed{" + "1" * 30 + "}", "1" * 30, "boxed") == 1.0
    with_custom = SimpleNamespace(reward=SimpleNamespace(type="within_1pct", custom="m:f"))
    assert fresh.entry("within_1pct").check(with_custom) == [
        '[reward].custom: is set but type = "within_1pct" ignores it; set type = "custom" or remove custom'
    ]
