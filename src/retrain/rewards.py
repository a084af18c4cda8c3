"""Verifiable rewards: extract the model's answer, compare it with the reference, never crash a run.

Built-in rewards, chosen by `[reward].type` (one entry each in `REWARDS`):

- `match`: the answer extracted per the example's `answer_format` ("boxed" = last `\\boxed{...}`,
  "number" = last number in the text) equals the reference after whitespace trim (numbers compare by
  value, so "52.0" matches "52"); 1.0 or 0.0.
- `math`: the extracted answer is symbolically equivalent to the reference (`math-verify`:
  `\\frac{1}{2}` = `0.5`, `2x+1` = `1+2x`); 1.0 or 0.0.
- `custom`: a user function `"module:function"` with the `RewardFn` signature.

Model text is only ever parsed (regex, brace scanning, math-verify's LaTeX grammar), never passed to
`eval`/`exec`. Every reward runs under `[reward].timeout_s`; one that raises, times out, or returns
something that is not a finite number scores 0.0 and is counted (`Scorer.pop_counts`), because one
pathological completion must not end a multi-hour run.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from retrain.errors import ConfigError, RetrainError
from retrain.plugins import import_plugin
from retrain.registry import Registry

if TYPE_CHECKING:  # annotations only: retrain.data imports this module (math answers via extract_boxed)
    from retrain.data.base import Example

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Answer extraction
# ---------------------------------------------------------------------------------------------

_BOXED_RE = re.compile(r"\\boxed\s*\{")


def extract_boxed(text: str) -> str | None:
    """Content of the LAST `\\boxed{...}` in `text`, brace-balanced; None if absent or unbalanced.

    Nested braces are kept (`\\boxed{\\frac{1}{2}}` → `\\frac{1}{2}`), `\\boxed {x}` is accepted, and
    escaped braces `\\{ \\}` (LaTeX set notation) do not count towards the balance. Only the last box is
    considered: if it is unbalanced (a completion cut at max_tokens) the answer is None, not an earlier box,
    because an earlier box is a draft the model went on to revise.
    """
    starts = [m.end() for m in _BOXED_RE.finditer(text)]
    if not starts:
        return None
    start = starts[-1]
    depth = 1
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # skip the escaped character (\{, \}, \\): it is not structure
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
        i += 1
    return None


# A number: optional sign (only when not glued to a preceding word/number, so "3-5" yields "5"),
# either with comma thousands separators ("1,234,567.5") or plain digits, optional decimals.
_NUMBER_RE = re.compile(
    r"(?:(?<![\w)\].])[-−])?"  # sign; U+2212 too, models emit it
    r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
)


def extract_last_number(text: str) -> str | None:
    """The last number in `text` with thousands separators removed ("1,234" → "1234"); None if none.

    Integers, negatives ("-7", also with U+2212 "−7") and decimals ("3.25", ".5") are recognised; the
    value is returned as written otherwise ("52.0" stays "52.0"; `numbers_equal` compares by value).
    """
    matches = _NUMBER_RE.findall(text)
    if not matches:
        return None
    return matches[-1].replace(",", "").replace("−", "-")


def _to_decimal(s: str) -> Decimal | None:
    """`s` as an exact Decimal when it is a plain number ("72", "-3.50", "1,000"), else None."""
    try:
        value = Decimal(s.strip().replace(",", "").replace("−", "-"))
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def numbers_equal(a: str, b: str) -> bool:
    """True iff both strings are plain numbers with the same exact value ("52.0" == "52", "0.50" == ".5").

    Exact decimal comparison, not float: "0.1" and "0.10000000000000001" differ, as they should for
    problems with exact integer answers.
    """
    da, db = _to_decimal(a), _to_decimal(b)
    return da is not None and db is not None and da == db


_EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "boxed": extract_boxed,
    "number": extract_last_number,
}


def extract_answer(completion: str, answer_format: str) -> str | None:
    """The model's answer in `completion` per the example's `answer_format` ("boxed" | "number")."""
    try:
        extractor = _EXTRACTORS[answer_format]
    except KeyError:
        raise RetrainError(
            f"unknown answer_format {answer_format!r}; use one of {sorted(_EXTRACTORS)}"
        ) from None
    return extractor(completion)


# ---------------------------------------------------------------------------------------------
# Reward functions
# ---------------------------------------------------------------------------------------------


@runtime_checkable
class RewardFn(Protocol):
    """A custom reward: `(completion, reference) -> float`, normally in [0, 1] (> 0.5 counts as correct).

    Point `[reward].custom` at it as `"module:function"` (the module is imported with the current
    directory on `sys.path`). It may raise or be slow: that completion then scores 0.0 and the run counts
    it in `reward_failures` / `reward_timeouts`. A working example (`my_rewards.py`):

    >>> def contains_reference(completion: str, reference: str) -> float:
    ...     '''1.0 when the reference appears anywhere after the last "Answer:".'''
    ...     tail = completion.rsplit("Answer:", 1)[-1]
    ...     return 1.0 if reference.strip() in tail else 0.0
    >>> contains_reference("Let me think. Answer: 42", "42")
    1.0
    >>> isinstance(contains_reference, RewardFn)
    True

    ```toml
    [reward]
    type = "custom"
    custom = "my_rewards:contains_reference"
    ```
    """

    def __call__(self, completion: str, reference: str) -> float: ...


def match_reward(completion: str, reference: str, answer_format: str = "boxed") -> float:
    """1.0 iff the extracted answer equals the reference after whitespace trim, else 0.0.

    r = 1[ extract(completion).strip() == reference.strip() ], where for answer_format "number" the
    comparison is by exact value ("52.0" == "52"); a completion with no answer scores 0.0.
    """
    answer = extract_answer(completion, answer_format)
    if answer is None:
        return 0.0
    if answer.strip() == reference.strip():
        return 1.0
    if answer_format == "number" and numbers_equal(answer, reference):
        return 1.0
    return 0.0


class _DropMathVerifyTimeoutWarning(logging.Filter):
    """math-verify warns that its own timeout is off; ours (Scorer) is on, so the warning misleads."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


_math_verify: Any = None


def _load_math_verify() -> Any:
    """Import math-verify once (0.3 s), lazily so runs with `match` never pay for sympy."""
    global _math_verify
    if _math_verify is None:
        try:
            import math_verify
        except ImportError as e:
            raise RetrainError(
                "[reward].type = 'math' needs math-verify: pip install math-verify"
            ) from e
        for name in ("math_verify.parser", "math_verify.grader"):
            logging.getLogger(name).addFilter(_DropMathVerifyTimeoutWarning())
        _math_verify = math_verify
    return _math_verify


def _parse_math(mv: Any, expression: str) -> list:
    """Parse one answer expression with math-verify's LaTeX grammar and its number/expression regexes.

    The text is wrapped in `$...$` so math-verify reads it as one math expression (without it, "2x+1"
    extracts just "2"). math-verify's own timeout is off (None): it is `signal.alarm` with whole seconds,
    raises in non-main threads, returns False on timeout (so a timeout could not be counted), and its
    `alarm(0)` would cancel the Scorer's timer; the Scorer's limit covers parse and verify together.
    """
    configs = [mv.LatexExtractionConfig(), mv.ExprExtractionConfig()]
    return mv.parse(f"${expression}$", extraction_config=configs, parsing_timeout=None)


@functools.lru_cache(maxsize=4096)
def _parse_reference(reference: str) -> tuple:
    """A reference is scored against every completion of its group and at every eval: parse it
    once (sympy parsing is the slow part, and it would otherwise eat each completion's time limit)."""
    return tuple(_parse_math(_load_math_verify(), reference))


def math_reward(completion: str, reference: str, answer_format: str = "boxed") -> float:
    """1.0 iff the extracted answer is mathematically equivalent to the reference (math-verify), else 0.0.

    r = 1[ verify(parse(reference), parse(extract(completion))) ]: symbolic (sympy) equivalence, so
    `\\frac{1}{2}` = `0.5`, `2x+1` = `1+2x`, `10\\%` = `0.1`. An exact string match short-cuts to 1.0;
    a completion with no answer, or one math-verify cannot parse, scores 0.0.
    """
    answer = extract_answer(completion, answer_format)
    if answer is None:
        return 0.0
    if answer.strip() == reference.strip():
        return 1.0
    mv = _load_math_verify()
    gold = _parse_reference(reference)
    pred = _parse_math(mv, answer)
    if not gold or not pred:
        return 0.0
    return 1.0 if mv.verify(list(gold), pred, timeout_seconds=None) else 0.0


# ---------------------------------------------------------------------------------------------
# Custom rewards ("module:function")
# ---------------------------------------------------------------------------------------------


def load_custom_reward(spec: str) -> RewardFn:
    """The user's `RewardFn` named by `"module:function"`, through the one plugin loader
    (`retrain.plugins`: current directory on the import path); RetrainError naming the problem."""
    return import_plugin(spec, "[reward].custom")  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Time limit
# ---------------------------------------------------------------------------------------------


class _RewardTimeout(BaseException):
    # BaseException, so a reward's own `except Exception:` cannot swallow the time limit.
    pass


def _call_with_signal_timeout(fn: Callable[[], float], timeout_s: float) -> float:
    """Run fn under a SIGALRM interval timer (main thread only; interrupts pure-Python sympy loops)."""

    def on_alarm(signum, frame):
        raise _RewardTimeout

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            return fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        # Separate finally: if the alarm fires just as fn returns, the handler is still restored.
        signal.signal(signal.SIGALRM, previous)


def _call_with_thread_timeout(fn: Callable[[], float], timeout_s: float) -> float:
    """Run fn in a daemon thread and stop waiting after timeout_s (used off the main thread).

    Python cannot kill a thread: a timed-out reward keeps running in the background until it returns,
    but its result is discarded and the run goes on.
    """
    box: dict[str, Any] = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the caller's thread below
            box["error"] = e

    worker = threading.Thread(target=target, name="retrain-reward", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise _RewardTimeout
    if "error" in box:
        raise box["error"]
    return box["value"]


def call_with_timeout(fn: Callable[[], float], timeout_s: float) -> float:
    """fn() limited to timeout_s seconds (≤ 0: no limit); raises _RewardTimeout when cut.

    On the main thread of a POSIX process with no interval timer already armed, a SIGALRM timer (exact,
    cheap, really stops the work); elsewhere a waiting thread.
    """
    if timeout_s <= 0:
        return fn()
    on_main = threading.current_thread() is threading.main_thread()
    if on_main and hasattr(signal, "setitimer") and signal.getitimer(signal.ITIMER_REAL)[0] == 0:
        return _call_with_signal_timeout(fn, timeout_s)
    return _call_with_thread_timeout(fn, timeout_s)


# ---------------------------------------------------------------------------------------------
# Scorer
# ---------------------------------------------------------------------------------------------

ExampleReward = Callable[[str, "Example"], float]
RewardFactory = Callable[[Any], ExampleReward]  # the [reward] table -> the reward of one completion

REWARDS: Registry[RewardFactory] = Registry("reward", "[reward].type")


def _custom_unused(cfg: Any) -> list[str]:
    if not cfg.reward.custom:
        return []
    return [f'[reward].custom: is set but type = "{cfg.reward.type}" ignores it; set type = "custom" or remove custom']


def custom_reward_problems(reward_cfg: Any) -> list[str]:
    """The rule for type = "custom", shared by the config check and `make_scorer`'s Python API."""
    if reward_cfg.custom:
        return []
    return ['[reward].custom: required when type = "custom"; set custom = "my_module:my_reward"']


# The factories return module-level functions (or partials of them), not lambdas, so a reward can
# be pickled into a worker process.


def _match_example(completion: str, example: Example) -> float:
    return match_reward(completion, example.answer, example.answer_format)


def _math_example(completion: str, example: Example) -> float:
    return math_reward(completion, example.answer, example.answer_format)


def _custom_example(fn: RewardFn, completion: str, example: Example) -> float:
    return fn(completion, example.answer)


@REWARDS.register("match", summary="the extracted answer equals the reference after whitespace trim", check=_custom_unused)
def _match(reward_cfg: Any) -> ExampleReward:
    return _match_example


@REWARDS.register("math", summary="symbolic equivalence through math-verify", check=_custom_unused)
def _math(reward_cfg: Any) -> ExampleReward:
    _load_math_verify()  # fail at start-up, not at the first scored completion
    return _math_example


@REWARDS.register("custom", summary="[reward].custom = 'module:function' (completion, reference) -> float",
                  check=lambda cfg: custom_reward_problems(cfg.reward))
def _custom(reward_cfg: Any) -> ExampleReward:
    problems = custom_reward_problems(reward_cfg)
    if problems:
        raise ConfigError(problems, source="make_scorer")
    return functools.partial(_custom_example, load_custom_reward(reward_cfg.custom))


def _as_float(value: Any) -> float | None:
    """A reward's return value as a float: bools, ints, floats, numpy/torch scalars; None for anything else.

    Strings are refused even when numeric ("1.0"): returning text is a bug in the reward to surface.
    """
    if isinstance(value, str | bytes) or not hasattr(value, "__float__"):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):  # e.g. a multi-element array
        return None


@dataclass
class Scorer:
    """Scores completions with one reward function, time-limited, counting failures instead of raising.

    `failures` / `timeouts` are totals since creation; `pop_counts()` returns those since the last pop
    (the run logs them per step). A reward that raises, returns NaN/inf, or returns a non-number is a
    failure; one that runs past `timeout_s` is a timeout; both score 0.0.
    """

    reward: ExampleReward
    timeout_s: float = 5.0
    name: str = "match"
    failures: int = field(default=0, init=False)
    timeouts: int = field(default=0, init=False)
    last_error: str | None = field(default=None, init=False)
    _popped_failures: int = field(default=0, init=False, repr=False)
    _popped_timeouts: int = field(default=0, init=False, repr=False)

    def score(self, completion: str, example: Example) -> float:
        """The reward of `completion` for `example`, a finite float; 0.0 on failure or timeout."""
        try:
            value = call_with_timeout(lambda: self.reward(completion, example), self.timeout_s)
        except _RewardTimeout:
            self.timeouts += 1
            self._note(f"timed out after {self.timeout_s:g} s", example)
            return 0.0
        except Exception as e:
            return self._fail(f"raised {type(e).__name__}: {e}", example)
        number = _as_float(value)
        if number is None:
            return self._fail(f"returned {type(value).__name__} {value!r}, not a number", example)
        if not math.isfinite(number):
            return self._fail(f"returned {number}", example)
        return number

    def pop_counts(self) -> dict[str, int]:
        """`{"reward_failures", "reward_timeouts"}` since the previous call (per-step metrics)."""
        counts = {
            "reward_failures": self.failures - self._popped_failures,
            "reward_timeouts": self.timeouts - self._popped_timeouts,
        }
        self._popped_failures, self._popped_timeouts = self.failures, self.timeouts
        return counts

    def _fail(self, message: str, example: Example) -> float:
        self.failures += 1
        self._note(message, example)
        return 0.0

    def _note(self, message: str, example: Example) -> None:
        first = self.last_error is None
        self.last_error = f"reward {self.name!r} {message} (example {example.id or '?'})"
        if first:  # the first one with detail; later ones only in the per-step counts
            logger.warning("%s; scored 0.0, counted, run continues", self.last_error)


def make_scorer(reward_cfg: Any) -> Scorer:
    """The Scorer for a `[reward]` table (`type`, `custom`, `timeout_s`)."""
    reward = REWARDS.resolve(reward_cfg.type)(reward_cfg)
    name = reward_cfg.custom if reward_cfg.type == "custom" else reward_cfg.type
    return Scorer(reward, timeout_s=float(reward_cfg.timeout_s), name=name)
