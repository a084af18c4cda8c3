"""Verifiable rewards: extract the model's answer, compare it with the reference, never crash a run.

Model output is untrusted input. Built-in rewards, chosen by `[reward].type` (one entry each in
`REWARDS`):

- `match`: the answer extracted per the example's `answer_format` ("boxed" = last `\\boxed{...}`,
  "number" = last number in the text) equals the reference after whitespace trim (numbers compare by
  value, so "52.0" matches "52"); 1.0 or 0.0.
- `math`: the extracted answer, parsed whole as LaTeX, is symbolically equivalent to the reference
  (`math-verify`'s comparison: `\\frac{1}{2}` = `0.5`, `2x+1` = `1+2x`); 1.0 or 0.0. An answer that
  does not parse whole scores 0.0: there is no first-number fallback (`42 + ???` is not 42); nor
  does one that hedges (`7 = 42`, `42 \\approx 7`, `42 \\text{ (or 7)}`: see `hedge`).
- `custom`: a user function `"module:function"` with the `RewardFn` signature.

Model text is only ever parsed (regexes, brace scanning, math-verify's LaTeX grammar), never passed
to `eval`/`exec`; answers longer than `[reward].max_answer_chars` are not parsed at all. Every reward
call runs in a worker process (`retrain.reward_worker`) under `[reward].timeout_s` and
`[reward].memory_mb`, on any thread and for C-level work too; a call that raises, times out, runs out
of memory or returns something that is not a finite number scores 0.0 and is counted
(`Scorer.pop_counts`), because one pathological completion must not end a multi-hour run.
docs/rewards.md has the rules in full.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import pickle
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

from retrain.errors import ConfigError, RetrainError
from retrain.plugins import import_plugin
from retrain.registry import Registry
from retrain.reward_worker import CallResult, Limits, WorkerPool, WorkerStartError

if TYPE_CHECKING:  # annotations only: retrain.data imports this module (math answers via extract_boxed)
    from retrain.data.base import Example

logger = logging.getLogger(__name__)

# Longest answer (characters inside the box, or digits of a number) that is parsed at all. Real
# answers are short (MATH's longest are matrices of ~200 characters); a 10 MB box took 1.4 GB to parse.
MAX_ANSWER_CHARS = 1000

# ---------------------------------------------------------------------------------------------
# Answer extraction
# ---------------------------------------------------------------------------------------------

_BOXED_RE = re.compile(r"\\boxed\s*\{")


def extract_boxed(text: str, max_chars: int | None = None) -> str | None:
    """Content of the LAST `\\boxed{...}` in `text`, brace-balanced; None if absent, unbalanced, or
    longer than `max_chars`.

    Nested braces are kept (`\\boxed{\\frac{1}{2}}` → `\\frac{1}{2}`), `\\boxed {x}` is accepted, and
    escaped braces `\\{ \\}` (LaTeX set notation) do not count towards the balance. Only the last box is
    considered: if it is unbalanced (a completion cut at max_tokens) the answer is None, not an earlier box,
    because an earlier box is a draft the model went on to revise. The scan stops after `max_chars`, so
    a huge box costs no more than a short one.
    """
    last = None
    for last in _BOXED_RE.finditer(text):  # noqa: B007 - only the last match is wanted
        pass
    if last is None:
        return None
    start = last.end()
    close = _closing_brace(text, start, len(text) if max_chars is None else min(len(text), start + max_chars + 1))
    return None if close is None else text[start:close]


def _closing_brace(text: str, start: int, end: int) -> int | None:
    """Index of the `}` that closes the group opened just before `start`, looking no further than
    `end`; None if it is not closed by then. Escaped braces (`\\{`, `\\}`) are content, not structure."""
    depth = 1
    i = start
    while i < end:
        ch = text[i]
        if ch == "\\":
            i += 2  # skip the escaped character (\{, \}, \\): it is not structure
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


# Dashes that mean minus before a number: ASCII hyphen-minus, U+2212 minus, and the dashes models
# and copy-paste produce (‐ ‑ ‒ – — ― ﹘ ﹣ －). One set for `number` answers and for `math`, so "–42"
# is -42 everywhere and never 42.
DASHES = "-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"
_DASH_RE = re.compile(f"[{DASHES[1:]}]")

# A number: ASCII digits, with comma thousands separators ("1,234,567.5") or plain, optional
# decimals and exponent ("2.5e-3"). A dash directly before it is its sign unless the dash is glued to a
# preceding word, number or closing bracket ("3-5" → 5, "answer—42" → 42: operator or punctuation).
# Digits glued to a preceding letter, digit or dot belong to a word ("x2", "CO2", "v1.2"), not a number.
_NUMBER_RE = re.compile(
    rf"(?:(?<![\w)\].])[{DASHES}]|(?<![\w.]))"
    r"(?:[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?|\.[0-9]+)"
    rf"(?:[eE][+{DASHES}]?[0-9]+)?"
)


def extract_last_number(text: str, max_chars: int | None = None) -> str | None:
    """The last number in `text`, thousands separators removed and its sign as "-" ("–1,234" →
    "-1234"); None if there is none or it is longer than `max_chars`.

    Integers, negatives, decimals (".5") and exponents ("1e5") are recognised; units or "%" after the
    number are ignored; the value is returned as written otherwise ("52.0" stays "52.0";
    `numbers_equal` compares by value). Only ASCII digits count.
    """
    last = None
    for last in _NUMBER_RE.finditer(text):  # noqa: B007 - only the last match is wanted
        pass
    if last is None or (max_chars is not None and last.end() - last.start() > max_chars):
        return None
    return _DASH_RE.sub("-", last.group().replace(",", ""))


def _to_decimal(s: str) -> Decimal | None:
    """`s` as an exact Decimal when it is a plain number ("72", "-3.50", "1,000", "1e5"), else None."""
    try:
        value = Decimal(_DASH_RE.sub("-", s.strip().replace(",", "")))
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


_EXTRACTORS: dict[str, Callable[[str, int | None], str | None]] = {
    "boxed": extract_boxed,
    "number": extract_last_number,
}


def extract_answer(completion: str, answer_format: str, max_chars: int | None = None) -> str | None:
    """The model's answer in `completion` per the example's `answer_format` ("boxed" | "number")."""
    try:
        extractor = _EXTRACTORS[answer_format]
    except KeyError:
        raise RetrainError(f"unknown answer_format {answer_format!r}; use one of {sorted(_EXTRACTORS)}") from None
    return extractor(completion, max_chars)


# ---------------------------------------------------------------------------------------------
# Reward functions
# ---------------------------------------------------------------------------------------------


@runtime_checkable
class RewardFn(Protocol):
    """A custom reward: `(completion, reference) -> float`, normally in [0, 1] (> 0.5 counts as correct).

    Point `[reward].custom` at it as `"module:function"` (the module is imported with the current
    directory on `sys.path`, in the reward worker process). It may raise or be slow: that completion then
    scores 0.0 and the run counts it in `reward_failures` / `reward_timeouts`. A working example
    (`my_rewards.py`):

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


def match_reward(
    completion: str, reference: str, answer_format: str = "boxed", max_answer_chars: int = MAX_ANSWER_CHARS
) -> float:
    """1.0 iff the extracted answer equals the reference after whitespace trim, else 0.0.

    r = 1[ extract(completion).strip() == reference.strip() ], where for answer_format "number" the
    comparison is by exact value ("52.0" == "52", "–42" == "-42"); a completion with no answer, or an
    answer longer than `max_answer_chars`, scores 0.0.
    """
    answer = extract_answer(completion, answer_format, max_answer_chars)
    if answer is None:
        return 0.0
    if answer.strip() == reference.strip():
        return 1.0
    if answer_format == "number" and numbers_equal(answer, reference):
        return 1.0
    return 0.0


class _DropMathVerifyTimeoutWarning(logging.Filter):
    """math-verify warns that its own timeout is off; ours (the reward worker) is on, so it misleads."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


_math_verify: Any = None


def _load_math_verify() -> Any:
    """Import math-verify once (0.3 s), lazily so runs with `match` never pay for sympy."""
    global _math_verify
    if _math_verify is None:
        try:
            import math_verify  # type: ignore[import-untyped]
        except ImportError as e:
            raise RetrainError("[reward].type = 'math' needs math-verify: pip install math-verify") from e
        for name in ("math_verify.parser", "math_verify.grader"):
            logging.getLogger(name).addFilter(_DropMathVerifyTimeoutWarning())
        _math_verify = math_verify
    return _math_verify


def parse_math(text: str) -> list[Any] | None:
    """`[sympy expression, normalised LaTeX]` when `text` parses WHOLE as LaTeX, else None (see
    `_parse_math`). Cached: a group's completions often repeat an answer, and the LaTeX grammar costs
    tens of milliseconds a parse (sympy objects are immutable, so sharing them is safe)."""
    parsed = _parse_math_cached(text)
    return list(parsed) if parsed is not None else None


@functools.lru_cache(maxsize=2048)
def _parse_math_cached(text: str) -> tuple[Any, ...] | None:
    parsed = _parse_math(text)
    return tuple(parsed) if parsed is not None else None


def _parse_math(text: str) -> list[Any] | None:
    """`[sympy expression, normalised LaTeX]` when `text` parses WHOLE as LaTeX, else None.

    Normalisation is math-verify's (`\\left`, `\\dfrac`, `\\text{ cm}` units, `\\%`, `\\$`, ...), plus
    every dash in `DASHES` read as a minus, `\\phantom{...}` (invisible) dropped and one trailing
    sentence period dropped ("42." → 42). Then the LaTeX grammar (latex2sympy, an ANTLR parser: no
    `eval`) must accept all of it: anything it rejects, or that is too deeply nested for it (a 1,000-term
    sum), is unparseable. math-verify's own `parse` is not used because it searches the text for
    something parseable and falls back to the first number it finds (`42 + ???` → 42), and its
    plain-expression path runs sympy's `parse_expr` (`eval`).
    """
    mv = _load_math_verify()
    from latex2sympy2_extended.latex2sympy2 import latex2sympy, normalize_latex  # type: ignore[import-untyped]
    from math_verify.grader import should_treat_as_complex  # type: ignore[import-untyped]

    text = _INVISIBLE_RE.sub("", _DASH_RE.sub("-", text)).strip()
    if text.endswith(".") and not text.endswith("\\."):
        text = text[:-1]
    normalized = normalize_latex(text, _latex_normalization(mv)).strip()
    if not normalized:
        return None
    try:
        expr = latex2sympy(
            normalized,
            is_real=not should_treat_as_complex(normalized),
            convert_degrees=False,
            normalization_config=None,
        )
    except Exception:  # the grammar rejected it (incl. RecursionError): unparseable
        return None
    return [expr, normalized]


# `\phantom{42}` typesets nothing (only its width): invisible text is not an answer.
_INVISIBLE_RE = re.compile(r"\\[hv]?phantom\s*\{[^{}]*\}")


@functools.cache
def _latex_normalization(mv: Any) -> Any:
    return mv.LatexExtractionConfig().normalization_config


@functools.lru_cache(maxsize=4096)
def _parse_reference(reference: str) -> tuple[Any, ...]:
    """A reference is scored against every completion of its group and at every eval: parse it
    once (sympy parsing is the slow part, and it would otherwise eat each completion's time limit).
    The worker process lives across steps, so the cache does too. () when it does not parse."""
    return tuple(parse_math(reference) or ())


def _number_as_latex(number: str) -> str:
    """An extracted plain number ("-1.5e-3") as LaTeX the grammar reads ("-1.5\\times 10^{-3}")."""
    mantissa, e, exponent = number.lower().partition("e")
    return f"{mantissa}\\times 10^{{{exponent}}}" if e else number


def math_reward(
    completion: str, reference: str, answer_format: str = "boxed", max_answer_chars: int = MAX_ANSWER_CHARS
) -> float:
    """1.0 iff the extracted answer is mathematically equivalent to the reference (math-verify), else 0.0.

    r = 1[ verify(parse(reference), parse(extract(completion))) ]: symbolic (sympy) equivalence, so
    `\\frac{1}{2}` = `0.5`, `2x+1` = `1+2x`, `10\\%` = `0.1`; numbers agree when equal after rounding to
    6 decimals (math-verify's rule). An exact string match short-cuts to 1.0. No answer, an answer
    longer than `max_answer_chars`, one that does not parse whole (`parse_math`), or one that hedges
    against a reference that is a value (`hedge`: `7 = 42`, `42 \\approx 7`, `42 \\text{ (or 7)}`) scores 0.0.
    """
    answer = extract_answer(completion, answer_format, max_answer_chars)
    if answer is None:
        return 0.0
    if answer.strip() == reference.strip():
        return 1.0
    gold = _parse_reference(reference)
    if answer_format == "number":
        answer = _number_as_latex(answer)
    pred = parse_math(answer)
    if not gold or pred is None:
        return 0.0
    if not _is_relation(reference, gold[0]) and hedge(answer, pred[0]) is not None:
        return 0.0
    return 1.0 if _load_math_verify().verify(list(gold), pred, timeout_seconds=None) else 0.0


# What an answer may say besides its value, for a reference that is a value (not an equation or an
# inequality, which math-verify compares relation to relation). math-verify is lenient in ways a
# policy learns to exploit: it compares `7 = 42` by its right-hand side, the grammar reads `42 \approx 7`
# as 42 and `7 \equiv 42` as 7 = 42, and the normalisation drops a trailing `\text{...}` whole, meant
# for units (`42 \text{ (or 7)}` was 42). docs/rewards.md, "Relations and words".

# Relations the grammar reads as something else, or as `=`: any of them in an answer is a hedge.
_HEDGING_RELATION_RE = re.compile(
    r"\\(?:approx\w*|thickapprox|equiv|in|ni|notin|sim\w*|backsim\w*|eqsim|cong|doteq\w*|propto|asymp|"
    r"coloneqq|eqqcolon|triangleq)(?![A-Za-z])|~\s*=|:="
)
# Text-mode commands: what they hold is words, not mathematics.
_TEXT_COMMAND_RE = re.compile(r"\\(?:text(?:rm|bf|it|sf|tt|up|normal)?|mbox|hbox|math(?:rm|it|bf|sf|tt))\s*\{")
# A unit: one to three words of letters (`cm`, `dollars`, `square units`, `km per hour`) ...
_UNIT_RE = re.compile(r"[A-Za-z]{1,20}(?: +[A-Za-z]{1,20}){0,2}")
# ... none of which qualifies the number instead of naming what it counts.
QUALIFIERS = frozenset(
    "about above almost and approx approximately around at below between but circa close either estimate "
    "estimated guess if ish least less likely maybe minus more most nearly neither nor not or over perhaps "
    "plus possibly probably roughly some than to under unless up".split()
)


def hedge(answer: str, expr: Any) -> str | None:
    """Why `answer` (parsed whole as `expr`, see `parse_math`) does not state one value, or None when it
    does. The rule for a reference that is a value:

    - a relation states a value only as `symbol = value` (`x = 42`, `\\theta = \\frac{1}{2}`): one `=`
      whose left side is a single symbol. Any other relation (`7 = 42`, `42 = 42`, `x + 1 = 42`,
      `a = 7 = 42`, `<`, `\\neq`, `\\approx`, `\\equiv`, `\\in`, ...) is a hedge;
    - text (`\\text{...}`, `\\textbf`, `\\mbox`, `\\mathrm`, ...) is a unit (one to three words of letters,
      none of them in `QUALIFIERS`: `42 \\text{ cm}`, `24 \\text{ square units}`) or the whole answer
      (`\\text{42}`, read by the grammar); anything else in text (`42 \\text{ (or 7)}`,
      `42 \\text{ or more}`) is a hedge.

    >>> hedge("x = 42", parse_math("x = 42")[0]) is None
    True
    >>> hedge("7 = 42", parse_math("7 = 42")[0])
    'a relation other than symbol = value'
    >>> hedge(r"42 \\text{ (or 7)}", parse_math(r"42 \\text{ (or 7)}")[0])
    "text that is not a unit: ' (or 7)'"
    """
    if _HEDGING_RELATION_RE.search(answer) or answer.count("=") > 1:
        return "a relation other than symbol = value"
    value = expr.rhs if _is_equation_of_symbol(expr) else expr
    if _has_relation(value):
        return "a relation other than symbol = value"
    whole = answer.strip()
    for command in _TEXT_COMMAND_RE.finditer(whole):
        close = _closing_brace(whole, command.end(), len(whole))
        if command.start() == 0 and close == len(whole) - 1:
            continue  # the whole answer is text: the grammar reads it (`\\text{42}`)
        content = None if close is None else whole[command.end() : close]
        if content is None or not _is_unit(content):
            return f"text that is not a unit: {content!r}"
    return None


def _is_unit(text: str) -> bool:
    words = text.split()
    return not words or (
        _UNIT_RE.fullmatch(" ".join(words)) is not None and not any(w.lower() in QUALIFIERS for w in words)
    )


def _is_equation_of_symbol(expr: Any) -> bool:
    import sympy

    return isinstance(expr, sympy.Eq) and isinstance(expr.lhs, sympy.Symbol)


def _has_relation(expr: Any) -> bool:
    """A relation or a logical combination of them anywhere in `expr` (a set of equations included)."""
    from sympy.core.relational import Relational
    from sympy.logic.boolalg import BooleanFunction

    atoms = getattr(expr, "atoms", None)
    return isinstance(expr, Relational | BooleanFunction) or bool(atoms and atoms(Relational, BooleanFunction))


def _is_relation(reference: str, gold: Any) -> bool:
    """The reference is an equation, an inequality or another relation (`y = 2x + 1`, `x \\le 3`)."""
    return "=" in reference or _HEDGING_RELATION_RE.search(reference) is not None or _has_relation(gold)


# ---------------------------------------------------------------------------------------------
# What runs in the worker: picklable reward callables (completion, reference, answer_format) -> float
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltinReward:
    """`match` or `math` with its answer-length cap; pickled by name into the reward worker."""

    name: str
    max_answer_chars: int = MAX_ANSWER_CHARS

    def __call__(self, completion: str, reference: str, answer_format: str) -> float:
        fn = match_reward if self.name == "match" else math_reward
        return fn(completion, reference, answer_format, self.max_answer_chars)

    def warm_up(self) -> None:
        """Pay the imports and the LaTeX grammar's first parse before the first timed call."""
        if self.name == "math":
            _load_math_verify()
            parse_math("\\frac{1}{2}")


@dataclass(frozen=True)
class CustomReward:
    """A user `RewardFn` named `"module:function"`; the worker imports it the way the parent did."""

    spec: str

    def __call__(self, completion: str, reference: str, answer_format: str) -> float:
        return self.function()(completion, reference)

    def function(self) -> RewardFn:
        return _custom_function(self.spec)

    def warm_up(self) -> None:
        self.function()


@functools.cache
def _custom_function(spec: str) -> RewardFn:
    return load_custom_reward(spec)


def load_custom_reward(spec: str) -> RewardFn:
    """The user's `RewardFn` named by `"module:function"`, through the one plugin loader
    (`retrain.plugins`: current directory on the import path); RetrainError naming the problem."""
    return import_plugin(spec, "[reward].custom")


# ---------------------------------------------------------------------------------------------
# Scorer
# ---------------------------------------------------------------------------------------------


class Scorer:
    """Scores completions with one reward in worker processes, counting failures instead of raising.

    `reward` is a picklable `(completion, reference, answer_format) -> float` (`BuiltinReward`,
    `CustomReward`, or any module-level function). `failures` / `timeouts` are totals since creation;
    `pop_counts()` returns those since the last pop (the run logs them per step). A reward that raises,
    runs out of memory, returns NaN/inf or a non-number is a failure; one that runs past `timeout_s` is a
    timeout; both score 0.0. `score_batch` sends a whole step in one round trip; `calls` also returns
    each call's time and peak memory. Close it (or use `with`) to stop the workers at once; they also
    stop when it is garbage-collected and at exit.

        with Scorer(BuiltinReward("math"), timeout_s=5.0) as scorer:
            scorer.score(r"so \\boxed{\\frac{1}{2}}", example)   # 1.0 when example.answer is "0.5"
    """

    def __init__(
        self,
        reward: Callable[[str, str, str], float],
        *,
        timeout_s: float = 5.0,
        memory_mb: int = 1024,
        workers: int = 1,
        name: str = "match",
    ):
        self.name = name
        self.timeout_s = timeout_s
        self.failures = 0
        self.timeouts = 0
        self.last_error: str | None = None
        self.peak_mb: float | None = None  # the highest per-call peak RSS of a worker so far (MB)
        self._popped_failures = 0
        self._popped_timeouts = 0
        self._count_lock = threading.Lock()
        try:
            self._pool = WorkerPool(reward, Limits(timeout_s=timeout_s, memory_mb=memory_mb), workers)
        except (pickle.PicklingError, AttributeError, TypeError) as e:
            raise RetrainError(
                f"reward {name!r} cannot be sent to the reward worker process ({e}); it must be a "
                "module-level function or class instance (lambdas and closures cannot be)"
            ) from e

    def score(self, completion: str, example: Example) -> float:
        """The reward of `completion` for `example`, a finite float; 0.0 on failure or timeout."""
        return self.score_batch([completion], [example])[0]

    def score_batch(self, completions: Sequence[str], examples: Sequence[Example]) -> list[float]:
        """`score` for many completions in one round trip to the workers (a step's whole batch)."""
        return [call.value for call in self.calls(completions, examples)]

    def calls(self, completions: Sequence[str], examples: Sequence[Example]) -> list[CallResult]:
        """Each call's value, status, time and peak memory (`retrain.reward_worker.CallResult`)."""
        if len(completions) != len(examples):
            raise ValueError(f"{len(completions)} completions for {len(examples)} examples")
        items = [(c, ex.answer, ex.answer_format) for c, ex in zip(completions, examples, strict=True)]
        try:
            results = self._pool.run(items)
        except WorkerStartError as e:
            raise RetrainError(f"reward {self.name!r}: {e}") from e
        with self._count_lock:  # several threads may score through one Scorer
            self._count(results, examples)
        return results

    def _count(self, results: list[CallResult], examples: Sequence[Example]) -> None:
        for call, example in zip(results, examples, strict=True):
            if call.peak_mb is not None and (self.peak_mb is None or call.peak_mb > self.peak_mb):
                self.peak_mb = call.peak_mb
            if call.status == "timeout":
                self.timeouts += 1
                self._note(call.detail, example)
            elif call.status != "ok":
                self.failures += 1
                self._note(call.detail, example)

    def pop_counts(self) -> dict[str, int]:
        """`{"reward_failures", "reward_timeouts"}` since the previous call (per-step metrics)."""
        with self._count_lock:
            counts = {
                "reward_failures": self.failures - self._popped_failures,
                "reward_timeouts": self.timeouts - self._popped_timeouts,
            }
            self._popped_failures, self._popped_timeouts = self.failures, self.timeouts
        return counts

    @property
    def pool(self) -> WorkerPool:
        """The worker processes (pids, resting size `base_mb`, `start_s`, `respawns`)."""
        return self._pool

    def close(self) -> None:
        """Stop the worker processes now (a later call starts nothing: create a new Scorer)."""
        self._pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _note(self, message: str, example: Example) -> None:
        first = self.last_error is None
        self.last_error = f"reward {self.name!r} {message} (example {example.id or '?'})"
        if first:  # the first one with detail; later ones only in the per-step counts
            logger.warning("%s; scored 0.0, counted, run continues", self.last_error)


# ---------------------------------------------------------------------------------------------
# The registry: [reward].type -> the reward the workers run
# ---------------------------------------------------------------------------------------------

WorkerReward = Callable[[str, str, str], float]  # picklable (completion, reference, answer_format) -> r
RewardFactory = Callable[[Any], WorkerReward]  # the [reward] table -> the reward the workers run

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


def _max_answer_chars(reward_cfg: Any) -> int:
    return int(getattr(reward_cfg, "max_answer_chars", MAX_ANSWER_CHARS))


# The factories return picklable objects, not lambdas: the reward runs in a worker process.


@REWARDS.register(
    "match", summary="the extracted answer equals the reference after whitespace trim", check=_custom_unused
)
def _match(reward_cfg: Any) -> WorkerReward:
    return BuiltinReward("match", _max_answer_chars(reward_cfg))


@REWARDS.register(
    "math",
    summary="the answer, parsed whole as LaTeX, is equivalent to the reference (math-verify)",
    check=_custom_unused,
)
def _math(reward_cfg: Any) -> WorkerReward:
    if importlib.util.find_spec("math_verify") is None:
        # Checked here (without importing sympy into the training process): fail at start-up.
        raise RetrainError("[reward].type = 'math' needs math-verify: pip install math-verify")
    return BuiltinReward("math", _max_answer_chars(reward_cfg))


@REWARDS.register(
    "custom",
    summary="[reward].custom = 'module:function' (completion, reference) -> float",
    check=lambda cfg: custom_reward_problems(cfg.reward),
)
def _custom(reward_cfg: Any) -> WorkerReward:
    problems = custom_reward_problems(reward_cfg)
    if problems:
        raise ConfigError(problems, source="make_scorer")
    load_custom_reward(reward_cfg.custom)  # a bad path is a config error here, not in the worker
    return CustomReward(reward_cfg.custom)


def make_scorer(reward_cfg: Any) -> Scorer:
    """The Scorer for a `[reward]` table (`type`, `custom`, `timeout_s`, `max_answer_chars`,
    `memory_mb`, `workers`); its worker processes start now, in the background."""
    reward = REWARDS.resolve(reward_cfg.type)(reward_cfg)
    name = reward_cfg.custom if reward_cfg.type == "custom" else reward_cfg.type
    return Scorer(
        reward,
        name=name,
        timeout_s=float(reward_cfg.timeout_s),
        memory_mb=int(getattr(reward_cfg, "memory_mb", 1024)),
        workers=int(getattr(reward_cfg, "workers", 1)),
    )
