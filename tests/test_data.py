"""Data sources and the Cursor: seeded, reproducible, held-out eval never trained on, clear errors."""

from __future__ import annotations

import json
import re
import sys
import textwrap
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrain.data import SOURCES, Cursor, Dataset, Example, load_dataset
from retrain.data.arithmetic import generate, solve, to_example
from retrain.errors import RetrainError
from retrain.rewards import match_reward

# The first 120 train and 100 test rows of GSM8K (MIT licence, in the folder), in its own format.
GSM8K_DIR = Path(__file__).parent / "fixtures" / "gsm8k"
INSTRUCTION = "\nPut the final answer in \\boxed{}."


def data_cfg(**overrides):
    fields = dict(
        source="arithmetic",
        path="",
        split="train",
        max_examples=0,
        shuffle=True,
        operand_digits=2,
        max_operand=0,
        operations=["+"],
        eval_split="test",
        prompt_style="answer",
    )
    fields.update(overrides)
    return SimpleNamespace(**fields)


def eval_cfg(num_examples=40):
    return SimpleNamespace(every=0, num_examples=num_examples, max_tokens=0)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


PROMPT_RE = re.compile(r"What is (\d+) ([+*-]) (\d+)\? Answer with just the number\.")


def parse_problem(example: Example) -> tuple[int, str, int]:
    a, op, b = PROMPT_RE.fullmatch(example.prompt).groups()
    return int(a), op, int(b)


# ----------------------------------------------------------------------------------- arithmetic


def test_arithmetic_default_shape_and_wording():
    ds = load_dataset(data_cfg(), eval_cfg(), seed=42)
    assert (len(ds.train), len(ds.eval)) == (10_000, 40)
    first = ds.train[0]
    a, op, b = parse_problem(first)
    assert first.prompt == f"What is {a} + {b}? Answer with just the number."
    assert first.answer == str(a + b) and first.answer_format == "number"


def test_arithmetic_same_seed_same_data_other_seed_other_data():
    one, two = (load_dataset(data_cfg(max_examples=200), eval_cfg(), seed=7) for _ in range(2))
    assert one.train == two.train and one.eval == two.eval
    other = load_dataset(data_cfg(max_examples=200), eval_cfg(), seed=8)
    assert other.train != one.train and other.eval != one.eval


def test_arithmetic_eval_does_not_depend_on_max_examples():
    small = load_dataset(data_cfg(max_examples=10), eval_cfg(), seed=3)
    large = load_dataset(data_cfg(max_examples=5000), eval_cfg(), seed=3)
    assert small.eval == large.eval and len(small.train) == 10


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(min_value=-(2**40), max_value=2**40),
    ops=st.lists(st.sampled_from(["+", "-", "*"]), min_size=1, max_size=3, unique=True),
    digits=st.integers(min_value=1, max_value=4),
    max_operand=st.sampled_from([0, 3, 12]),
)
def test_arithmetic_answers_exact_ranges_respected_eval_disjoint(seed, ops, digits, max_operand):
    ds = load_dataset(
        data_cfg(operations=ops, operand_digits=digits, max_operand=max_operand, max_examples=60),
        eval_cfg(10),
        seed=seed,
    )
    hi = max_operand if max_operand > 0 else 10**digits - 1
    train = [parse_problem(e) for e in ds.train]
    held = [parse_problem(e) for e in ds.eval]
    for example, (a, op, b) in zip(ds.train + ds.eval, train + held, strict=True):
        assert 0 <= a <= hi and 0 <= b <= hi and op in ops
        assert int(example.answer) == solve(a, op, b)
    assert len(set(held)) == len(held) == 10  # distinct eval problems
    assert not set(held) & set(train)  # held out on (a, op, b)


def test_arithmetic_steps_style_words_the_same_problems_for_working():
    answer = load_dataset(data_cfg(max_examples=50), eval_cfg(10), seed=5)
    steps = load_dataset(data_cfg(max_examples=50, prompt_style="steps"), eval_cfg(10), seed=5)
    for plain, worked in zip(answer.train + answer.eval, steps.train + steps.eval, strict=True):
        a, op, b = parse_problem(plain)
        assert worked.prompt == f"What is {a} {op} {b}? Solve it step by step."
        # same problem, same reference, same id: only the wording differs, so runs compare
        assert (worked.answer, worked.id, worked.answer_format) == (plain.answer, plain.id, "number")


# Completions SmolLM2-135M wrote for "steps" prompts (T = 0.7, max_tokens = 64; docs/cpu_task.md), with
# the reward the run gives them: the last number decides, wherever the working puts it.
STEPS_COMPLETIONS = [
    (
        (28, 5),
        (
            "To solve 28 + 5, we need to follow the order of the operations of addition and subtraction. "
            "First, we add 28 and 5. \n\nThe answer is 27. So, the solution to the equation 28 + 5 is 33."
        ),
        1.0,
    ),  # a wrong draft, then the right sum last
    (
        (9, 12),
        (
            "To solve the equation 9 + 12, we need to first combine like terms in the parentheses to get rid "
            "of the fraction in the parentheses (9 + 12 = 15).\n\nSo, 9 + 12 = 21.\n\nThis step is a step step"
        ),
        1.0,
    ),  # cut at max_tokens after the answer: still scored
    (
        (28, 5),
        (
            "To solve this, I will first perform the operations of addition and subtraction. \n\n"
            "5 + 2 = 7, and 2 + 7 = 11 \n\nSo the answer is 11"
        ),
        0.0,
    ),
    (
        (44, 18),
        (
            "To solve this, you can start by adding 18 to 44, which equals 62. 18 is the total you add to 44, "
            "so you just add those two numbers together: 18 + 62 = 63.\n\nSo, the answer is"
        ),
        0.0,
    ),  # the right sum mid-way does not count: the last number is 63
    (
        (14, 16),
        (
            "To solve this equation, we need to first find the value of the variable (16) in both the "
            "numerator and the denominator of the fraction 14 + 16."
        ),
        0.0,
    ),  # no answer: 16
]


@pytest.mark.parametrize(("operands", "completion", "reward"), STEPS_COMPLETIONS)
def test_steps_style_completions_are_scored_on_their_last_number(operands, completion, reward):
    a, b = operands
    example = to_example((a, "+", b), "steps")  # the source's own example for that problem
    assert example.prompt == f"What is {a} + {b}? Solve it step by step."
    assert match_reward(completion, example.answer, example.answer_format) == reward


@pytest.mark.parametrize("style", ["chatty", ""])
def test_arithmetic_unknown_prompt_style_is_a_user_error(style):
    with pytest.raises(RetrainError, match=r"\[data\].prompt_style.*'answer', 'steps'"):
        load_dataset(data_cfg(prompt_style=style), eval_cfg(), seed=0)


def test_solve_hand_cases():
    assert [solve(12, "+", 30), solve(3, "-", 10), solve(99, "*", 99)] == [42, -7, 9801]
    assert solve(10**17, "*", 10**17) == 10**34  # Python ints: no int64 overflow


def test_arithmetic_tiny_space_still_disjoint():
    # 1-digit operands cap at 3: 16 problems; 10 held out, train draws only from the other 6.
    train, held = generate(seed=0, n_train=200, n_eval=10, hi=3, operations=("+",))
    assert len(set(held)) == 10 and set(train) <= {(a, "+", b) for a in range(4) for b in range(4)} - set(held)
    assert len(set(train)) == 6  # 200 draws over 6 problems see all of them


@pytest.mark.parametrize(
    ("overrides", "num_examples", "message"),
    [
        ({"operations": ["/"]}, 40, r"\[data\].operations"),
        ({"operations": []}, 40, r"\[data\].operations"),
        ({"operand_digits": 0}, 40, r"\[data\].operand_digits"),
        ({"max_operand": -1}, 40, r"\[data\].max_operand"),
        ({"operand_digits": 1, "max_operand": 2}, 9, "leave none of the 9"),
    ],
)
def test_arithmetic_bad_knobs_are_user_errors(overrides, num_examples, message):
    with pytest.raises(RetrainError, match=message):
        load_dataset(data_cfg(**overrides), eval_cfg(num_examples), seed=0)


# ----------------------------------------------------------------------------------- gsm8k


def test_gsm8k_directory_train_and_test_splits():
    ds = load_dataset(data_cfg(source="gsm8k", path=str(GSM8K_DIR)), eval_cfg(), seed=42)
    assert len(ds.train) == 120 and len(ds.eval) == 40
    first = ds.train[0]
    assert first.prompt.startswith("Natalia sold clips to 48 of her friends in April")
    assert first.prompt.endswith(INSTRUCTION) and first.answer == "72" and first.answer_format == "boxed"
    assert all(e.id.startswith("test-") for e in ds.eval)
    assert {e.prompt for e in ds.eval}.isdisjoint(e.prompt for e in ds.train)
    assert load_dataset(data_cfg(source="gsm8k", path=str(GSM8K_DIR)), eval_cfg(), seed=42).eval == ds.eval


def test_gsm8k_single_file_holds_out_a_seeded_slice():
    cfg = data_cfg(source="gsm8k", path=str(GSM8K_DIR / "test.jsonl"))
    ds = load_dataset(cfg, eval_cfg(), seed=1)
    assert (len(ds.train), len(ds.eval)) == (100 - 40, 40)
    assert {e.id for e in ds.eval}.isdisjoint(e.id for e in ds.train)
    assert ds.train[0].answer == "18"  # Janet's ducks: "#### 18"
    assert load_dataset(cfg, eval_cfg(), seed=1).eval == ds.eval
    assert load_dataset(cfg, eval_cfg(), seed=2).eval != ds.eval


def test_gsm8k_answer_strips_commas_and_takes_the_last_marker(tmp_path):
    path = write_jsonl(
        tmp_path / "g.jsonl",
        [
            {"question": "How much?", "answer": "It is 1,000 + 234 = <<1000+234=1234>>1,234\n#### 1,234"},
            {"question": "Q2", "answer": "#### 5 then fixed\n#### 6"},
            {"question": "Q3", "answer": "#### -3"},
        ],
    )
    ds = load_dataset(data_cfg(source="gsm8k", path=str(path)), eval_cfg(0), seed=0)
    assert [e.answer for e in ds.train] == ["1234", "6", "-3"]
    assert ds.train[0].prompt == "How much?" + INSTRUCTION and ds.eval == []


def test_gsm8k_row_without_marker_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "a", "answer": "#### 1"}, {"question": "b", "answer": "2"}])
    with pytest.raises(RetrainError, match=re.escape(f"{path}:2") + ".*####"):
        load_dataset(data_cfg(source="gsm8k", path=str(path)), eval_cfg(0), seed=0)


@pytest.fixture
def fake_hub(monkeypatch):
    """A stand-in `datasets` module recording each load_dataset call (no network in tests)."""
    calls = []

    def load(name, config=None, split=None):
        calls.append((name, config, split))
        if name == "openai/gsm8k":
            return [{"question": f"{split} q{i}", "answer": f"work\n#### {i},000"} for i in range(5)]
        return [
            {"problem": f"{config} {split} p{i}", "solution": f"so \\boxed{{\\frac{{{i}}}{{2}}}}"} for i in range(2)
        ]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load))
    return calls


def test_gsm8k_from_the_hub_uses_split_and_eval_split(fake_hub):
    ds = load_dataset(data_cfg(source="gsm8k", split="train", eval_split="test"), eval_cfg(3), seed=0)
    assert fake_hub == [("openai/gsm8k", "main", "train"), ("openai/gsm8k", "main", "test")]
    assert [e.answer for e in ds.train] == ["0000", "1000", "2000", "3000", "4000"]
    assert len(ds.eval) == 3 and all(e.prompt.startswith("test q") for e in ds.eval)


@pytest.mark.parametrize("source", ["gsm8k", "math"])
def test_hub_sources_without_datasets_say_how_to_fix(monkeypatch, source):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as if not installed
    with pytest.raises(RetrainError, match=r"pip install 'retrain\[datasets\]'.*\[data\].path"):
        load_dataset(data_cfg(source=source), eval_cfg(), seed=0)


def test_hub_failure_offline_says_how_to_fix(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(RetrainError, match=r"could not load openai/gsm8k.*no network.*\[data\].path"):
        load_dataset(data_cfg(source="gsm8k"), eval_cfg(), seed=0)


# ----------------------------------------------------------------------------------- math


def test_math_local_answers_from_the_last_box_or_answer_field(tmp_path):
    path = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"problem": "Half of one?", "solution": r"It is $\boxed{\frac{1}{2}}$."},
            {"problem": "P2", "solution": r"draft \boxed{3}, final \boxed{\{1,2\}}"},
            {"problem": "P3", "solution": "no box", "answer": " 7 "},
        ],
    )
    ds = load_dataset(data_cfg(source="math", path=str(path)), eval_cfg(0), seed=0)
    assert [e.answer for e in ds.train] == [r"\frac{1}{2}", r"\{1,2\}", "7"]
    assert ds.train[0].prompt == "Half of one?" + INSTRUCTION


def test_math_row_without_boxed_answer_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", ["", {"problem": "p", "solution": r"\boxed{1"}])
    with pytest.raises(RetrainError, match=re.escape(f"{path}:2") + r".*\\boxed"):
        load_dataset(data_cfg(source="math", path=str(path)), eval_cfg(0), seed=0)


def test_math_from_the_hub_concatenates_the_subjects(fake_hub):
    ds = load_dataset(data_cfg(source="math"), eval_cfg(4), seed=0)
    assert len(ds.train) == 7 * 2 and len(ds.eval) == 4
    assert {name for name, _, _ in fake_hub} == {"EleutherAI/hendrycks_math"}
    assert ds.train[1].answer == r"\frac{1}{2}"


# ----------------------------------------------------------------------------------- jsonl


def test_jsonl_rows_formats_and_held_out_slice(tmp_path):
    rows = [{"prompt": f"p{i} \\boxed{{}}", "answer": i} for i in range(10)]
    rows[3]["answer_format"] = "number"
    rows[4]["id"] = "special"
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    ds = load_dataset(data_cfg(source="jsonl", path=str(path)), eval_cfg(3), seed=5)
    everything = ds.train + ds.eval
    assert (len(ds.train), len(ds.eval)) == (7, 3)
    assert sorted(e.answer for e in everything) == sorted(str(i) for i in range(10))  # ints → text
    assert {e.prompt for e in ds.train}.isdisjoint(e.prompt for e in ds.eval)
    by_prompt = {e.prompt: e for e in everything}
    assert by_prompt["p3 \\boxed{}"].answer_format == "number" and by_prompt["p4 \\boxed{}"].id == "special"
    assert by_prompt["p0 \\boxed{}"].id == "d-0"
    assert load_dataset(data_cfg(source="jsonl", path=str(path)), eval_cfg(3), seed=5) == ds


def test_jsonl_directory_uses_split_files(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"prompt": f"t{i}", "answer": "1"} for i in range(4)])
    write_jsonl(tmp_path / "dev.jsonl", [{"prompt": f"d{i}", "answer": "2"} for i in range(6)])
    ds = load_dataset(data_cfg(source="jsonl", path=str(tmp_path), eval_split="dev"), eval_cfg(2), seed=0)
    assert [e.prompt for e in ds.train] == ["t0", "t1", "t2", "t3"]
    assert len(ds.eval) == 2 and all(e.prompt.startswith("d") for e in ds.eval)


def test_train_rows_repeating_an_eval_prompt_are_dropped(tmp_path):
    rows = [{"prompt": "same", "answer": "1"}] * 6 + [{"prompt": f"u{i}", "answer": "1"} for i in range(4)]
    path = write_jsonl(tmp_path / "dup.jsonl", rows)
    for seed in range(5):
        ds = load_dataset(data_cfg(source="jsonl", path=str(path)), eval_cfg(5), seed=seed)
        assert {e.prompt for e in ds.train}.isdisjoint(e.prompt for e in ds.eval)


def test_max_examples_truncates_train_only(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"p{i}", "answer": "1"} for i in range(10)])
    ds = load_dataset(data_cfg(source="jsonl", path=str(path), max_examples=4), eval_cfg(2), seed=0)
    assert len(ds.train) == 4 and len(ds.eval) == 2


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"prompt": "a", "answer": "1"}', '{"prompt": "b", "answer": '], r"d\.jsonl:2: not valid JSON"),
        (['{"prompt": "a", "answer": "1"}', "", "[1, 2]"], r"d\.jsonl:3: expected a JSON object"),
        (['{"prompt": "a"}'], r"d\.jsonl:1: missing key 'answer'"),
        (['{"prompt": "a", "answer": [1]}'], r"d\.jsonl:1: 'answer' must be a string"),
        (['{"prompt": "a", "answer": "1", "answer_format": "latex"}'], r"d\.jsonl:1: answer_format 'latex'"),
        ([], r"d\.jsonl has no rows"),
        # issue #11 item 5: each of these was a traceback
        (
            ['{"prompt": "a", "answer": "1"}', b'{"prompt": "\xff\xfe", "answer": "1"}'],
            r"d\.jsonl:2: not UTF-8 text \(byte 0xff at byte 13 of the line\); save the file as UTF-8",
        ),
        (['{"prompt": "a", "answer": ' + "9" * 5000 + "}"], r"d\.jsonl:1: a number with more than 4300 digits"),
        (['{"prompt": "a", "answer": NaN}'], r"d\.jsonl:1: NaN is not JSON"),
        (['{"prompt": "a", "answer": -Infinity}'], r"d\.jsonl:1: -Infinity is not JSON"),
        (['{"prompt": "a", "answer": 1e999}'], r"d\.jsonl:1: 'answer' is inf"),
        (['{"prompt": "a", "answer": ' + "[" * 100_000 + "]" * 100_000 + "}"], r"d\.jsonl:1: JSON nested too deeply"),
    ],
)
def test_malformed_jsonl_names_file_and_line(tmp_path, lines, message):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines))
    with pytest.raises(RetrainError, match=message):
        load_dataset(data_cfg(source="jsonl", path=str(path)), eval_cfg(0), seed=0)


def test_jsonl_path_problems_name_the_path(tmp_path):
    with pytest.raises(RetrainError, match=r"needs \[data\].path"):
        load_dataset(data_cfg(source="jsonl"), eval_cfg(), seed=0)
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(RetrainError, match=re.escape(repr(str(missing))) + ": no such file"):
        load_dataset(data_cfg(source="jsonl", path=str(missing)), eval_cfg(), seed=0)
    write_jsonl(tmp_path / "other.jsonl", [{"prompt": "a", "answer": "1"}])
    with pytest.raises(RetrainError, match=r"without train.jsonl.*other.jsonl"):
        load_dataset(data_cfg(source="jsonl", path=str(tmp_path)), eval_cfg(), seed=0)


def test_holding_out_everything_is_a_user_error(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"p{i}", "answer": "1"} for i in range(3)])
    with pytest.raises(RetrainError, match=r"num_examples = 3.*nothing to train on"):
        load_dataset(data_cfg(source="jsonl", path=str(path)), eval_cfg(3), seed=0)


# ----------------------------------------------------------------------------------- reasoning_gym, plugins


def test_reasoning_gym_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)
    with pytest.raises(RetrainError, match="pip install reasoning-gym"):
        load_dataset(data_cfg(source="reasoning_gym:basic_arithmetic"), eval_cfg(), seed=0)


def test_reasoning_gym_items_become_boxed_examples(monkeypatch):
    seeds = []

    def create_dataset(task, seed, size):
        if task != "chain_sum":
            raise ValueError(f"Dataset '{task}' not registered")
        seeds.append(seed)
        return [{"question": f"Q{seed}-{i}", "answer": i, "metadata": {}} for i in range(size)]

    monkeypatch.setitem(sys.modules, "reasoning_gym", types.SimpleNamespace(create_dataset=create_dataset))
    ds = load_dataset(data_cfg(source="reasoning_gym:chain_sum", max_examples=5), eval_cfg(2), seed=3)
    assert (len(ds.train), len(ds.eval)) == (5, 2) and len(set(seeds)) == 2  # separate eval stream
    assert ds.train[4].prompt == f"Q{seeds[0]}-4" + INSTRUCTION and ds.train[4].answer == "4"
    with pytest.raises(RetrainError, match="'chain_sm' not registered"):
        load_dataset(data_cfg(source="reasoning_gym:chain_sm"), eval_cfg(), seed=3)
    with pytest.raises(RetrainError, match="name the task"):
        load_dataset(data_cfg(source="reasoning_gym:"), eval_cfg(), seed=3)


@pytest.fixture
def data_plugin(tmp_path, monkeypatch):
    (tmp_path / "my_data.py").write_text(
        textwrap.dedent(
            """
        from retrain.data import Dataset, Example

        def capitals(data_cfg, eval_cfg, seed):
            rows = [("France", "Paris"), ("Peru", "Lima"), ("Kenya", "Nairobi")]
            examples = [Example(f"Capital of {c}?", a, id=c) for c, a in rows]
            return Dataset(train=examples[:2], eval=examples[2:])

        def wrong(data_cfg, eval_cfg, seed):
            return [("q", "a")]
        """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))


def test_plugin_source(data_plugin):
    ds = load_dataset(data_cfg(source="my_data:capitals"), eval_cfg(), seed=0)
    assert [e.answer for e in ds.train] == ["Paris", "Lima"] and [e.id for e in ds.eval] == ["Kenya"]
    with pytest.raises(RetrainError, match="returned list, not a retrain Dataset"):
        load_dataset(data_cfg(source="my_data:wrong"), eval_cfg(), seed=0)
    with pytest.raises(RetrainError, match="has no attribute 'nope'"):
        load_dataset(data_cfg(source="my_data:nope"), eval_cfg(), seed=0)


def test_unknown_source_suggests_the_closest():
    with pytest.raises(RetrainError, match="(?i)did you mean 'arithmetic'"):
        load_dataset(data_cfg(source="arithmetc"), eval_cfg(), seed=0)
    assert set(SOURCES) == {"arithmetic", "gsm8k", "math", "jsonl", "reasoning_gym"}


def test_dataset_is_the_base_type():
    assert isinstance(load_dataset(data_cfg(max_examples=3), eval_cfg(2), seed=0), Dataset)


# ----------------------------------------------------------------------------------- cursor


def test_cursor_epochs_are_permutations_reshuffled_each_epoch():
    cursor = Cursor(50, seed=1)
    epochs = [cursor.next_batch(50) for _ in range(3)]
    assert all(sorted(e) == list(range(50)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    assert epochs == [Cursor(50, seed=1).next_batch(150)[i * 50 : (i + 1) * 50] for i in range(3)]
    assert Cursor(50, seed=2).next_batch(50) != epochs[0]


def test_cursor_without_shuffle_is_in_order_and_wraps():
    cursor = Cursor(3, seed=9, shuffle=False)
    assert cursor.next_batch(7) == [0, 1, 2, 0, 1, 2, 0]
    assert cursor.state_dict() == {"epoch": 2, "position": 1}


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=30),
    seed=st.integers(min_value=-(2**63), max_value=2**63),
    before=st.lists(st.integers(min_value=0, max_value=17), max_size=6),
    after=st.lists(st.integers(min_value=0, max_value=17), max_size=6),
    shuffle=st.booleans(),
)
def test_cursor_restored_mid_epoch_continues_identically(n, seed, before, after, shuffle):
    reference = Cursor(n, seed, shuffle)
    for k in before:
        reference.next_batch(k)
    state = json.loads(json.dumps(reference.state_dict()))  # what a checkpoint stores
    restored = Cursor(n, seed, shuffle)
    restored.load_state_dict(state)
    assert [restored.next_batch(k) for k in after] == [reference.next_batch(k) for k in after]


def test_cursor_rejects_bad_state_and_empty_sets():
    cursor = Cursor(5, seed=0)
    for bad in ({"epoch": 0}, {"epoch": 0, "position": 6}, {"epoch": -1, "position": 0}, "x"):
        with pytest.raises(RetrainError, match="cursor state"):
            cursor.load_state_dict(bad)
    with pytest.raises(RetrainError, match="empty training set"):
        Cursor(0, seed=0)


def test_directory_without_eval_split_file_holds_out_from_train(tmp_path, caplog):
    write_jsonl(tmp_path / "train.jsonl", [{"prompt": f"t{i} \\boxed{{}}", "answer": "1"} for i in range(6)])
    ds = load_dataset(data_cfg(source="jsonl", path=str(tmp_path)), eval_cfg(2), seed=0)
    assert (len(ds.train), len(ds.eval)) == (4, 2)
    assert "test.jsonl not found" in caplog.text


def test_jsonl_warns_when_no_prompt_asks_for_a_box(tmp_path, caplog):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"p{i}", "answer": "1"} for i in range(3)])
    load_dataset(data_cfg(source="jsonl", path=str(path)), eval_cfg(0), seed=0)
    assert "no prompt mentions \\boxed{}" in caplog.text


def test_real_reasoning_gym_when_installed():
    pytest.importorskip("reasoning_gym")
    cfg = data_cfg(source="reasoning_gym:basic_arithmetic", max_examples=20)
    ds = load_dataset(cfg, eval_cfg(5), seed=0)
    assert (len(ds.train), len(ds.eval)) == (20, 5)
    assert ds.train[0].prompt.endswith(INSTRUCTION) and ds.train[0].answer.lstrip("-").isdigit()
    assert load_dataset(cfg, eval_cfg(5), seed=0) == ds
