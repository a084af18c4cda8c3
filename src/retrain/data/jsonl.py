"""Local JSONL files: the `jsonl` source, plus the row reading and held-out splitting every file-backed
source (gsm8k, math) shares.

A local `[data].path` is either
- a directory holding `<split>.jsonl` (train) and `<eval_split>.jsonl` (held-out eval), or
- one JSONL file: then `[eval].num_examples` rows, chosen with the seed, are held out for evaluation
  and never trained on.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from retrain.data.base import Dataset, Example
from retrain.data.cursor import seeded_rng
from retrain.errors import RetrainError

logger = logging.getLogger(__name__)

# (row, "file:line", index) -> Example (id "" = assign one); raises RetrainError naming "file:line".
RowParser = Callable[[dict[str, Any], str, int], Example]

ANSWER_FORMATS = ("boxed", "number")


def _reject_constant(name: str) -> float:
    # Python's json reads NaN / Infinity, which JSON does not have and no answer can be.
    raise ValueError(f"{name} is not JSON (and not a usable value); write it as a string if you mean the text")


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; RetrainError naming file:line for a line that is
    not UTF-8, not JSON (NaN and Infinity included), nested too deep, or holds a number Python will
    not convert (over 4300 digits)."""
    try:
        handle = path.open("rb")
    except OSError as e:
        raise RetrainError(f"cannot read {path}: {e.strerror or e}") from e
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise RetrainError(
                    f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the "
                    "line); save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line, parse_constant=_reject_constant)
            except json.JSONDecodeError as e:
                raise RetrainError(
                    f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno}); each line must be one JSON object"
                ) from None
            except ValueError as e:  # NaN / Infinity (above), or an integer past Python's digit limit
                why = (
                    str(e)
                    if "integer string conversion" not in str(e)
                    else (f"a number with more than {sys.get_int_max_str_digits()} digits; write it as a string")
                )
                raise RetrainError(f"{path}:{lineno}: {why}") from None
            except RecursionError:
                raise RetrainError(f"{path}:{lineno}: JSON nested too deeply to read; flatten the row") from None
            if not isinstance(row, dict):
                raise RetrainError(f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}")
            yield lineno, row


def with_ids(examples: list[Example], prefix: str) -> list[Example]:
    """Examples without an id get `<prefix>-<index>` (ids name an example in logs and eval records)."""
    return [e if e.id else replace(e, id=f"{prefix}-{i}") for i, e in enumerate(examples)]


def parse_file(path: Path, parse_row: RowParser) -> list[Example]:
    """Every row of a JSONL file as an Example (ids `<file stem>-<row index>` unless the row has one).

    An empty file is an error: there would be nothing to train or evaluate on.
    """
    examples = [parse_row(row, f"{path}:{lineno}", i) for i, (lineno, row) in enumerate(read_jsonl(path))]
    if not examples:
        raise RetrainError(f"{path} has no rows")
    return with_ids(examples, path.stem)


def require_str(row: dict[str, Any], key: str, where: str, expected: str) -> str:
    """row[key] as text (numbers are accepted and written as str); RetrainError naming where and key."""
    if key not in row:
        raise RetrainError(f"{where}: missing key {key!r}; each row needs {expected}")
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RetrainError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):  # 1e999 parses as inf
        raise RetrainError(f"{where}: {key!r} is {value}, not a usable value; write it as a string")
    return str(value)


def _choose(n: int, k: int, seed: int, stream: str) -> list[int]:
    """k of range(n) without replacement, drawn with (seed, stream), in ascending order."""
    if k >= n:
        return list(range(n))
    return sorted(int(i) for i in seeded_rng(seed, stream).choice(n, size=k, replace=False))


def sample_examples(examples: list[Example], k: int, seed: int) -> list[Example]:
    """k examples drawn without replacement with the seed (all of them when k ≥ len), in file order."""
    return [examples[i] for i in _choose(len(examples), k, seed, "eval-sample")]


def hold_out(examples: list[Example], k: int, seed: int, where: str) -> Dataset:
    """Split one list into train and a seeded held-out eval of k examples (eval never in train)."""
    if k >= len(examples):
        raise RetrainError(
            f"{where} has {len(examples)} rows but [eval].num_examples = {k} are held out for "
            "evaluation, leaving nothing to train on; lower [eval].num_examples or give a directory "
            "with separate train/test files"
        )
    held = set(_choose(len(examples), k, seed, "held-out"))
    return Dataset(
        train=[e for i, e in enumerate(examples) if i not in held],
        eval=[examples[i] for i in sorted(held)],
    )


def load_local(path: str, split: str, eval_split: str, num_eval: int, seed: int, parse_row: RowParser) -> Dataset:
    """A Dataset from a local path: a directory of `<split>.jsonl` files, or one file (held-out slice)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise RetrainError(f"[data].path = {path!r}: no such file or directory")
    if p.is_file():
        return hold_out(parse_file(p, parse_row), num_eval, seed, str(p))
    train_file = p / f"{split}.jsonl"
    if not train_file.is_file():
        found = sorted(f.name for f in p.glob("*.jsonl")) or "no .jsonl files"
        raise RetrainError(
            f"[data].path = {path!r} is a directory without {train_file.name} (for [data].split = "
            f"{split!r}); found: {found}. Set [data].split or point [data].path at one file"
        )
    train = parse_file(train_file, parse_row)
    eval_file = p / f"{eval_split}.jsonl"
    if not eval_file.is_file():
        logger.warning("%s not found: holding out %d examples of %s for evaluation", eval_file, num_eval, train_file)
        return hold_out(train, num_eval, seed, str(train_file))
    return Dataset(train=train, eval=sample_examples(parse_file(eval_file, parse_row), num_eval, seed))


def jsonl_row(row: dict[str, Any], where: str, index: int) -> Example:
    """`{"prompt", "answer"}` (+ optional `"answer_format"`: "boxed" | "number", `"id"`) → Example.

    The prompt is used verbatim: this source does not add a `\\boxed{}` instruction, so a file for the
    `match`/`math` rewards should ask for one (or set `"answer_format": "number"`).
    """
    expected = '{"prompt": ..., "answer": ...}'
    prompt = require_str(row, "prompt", where, expected)
    answer = require_str(row, "answer", where, expected)
    answer_format = row.get("answer_format", "boxed")
    if answer_format not in ANSWER_FORMATS:
        raise RetrainError(f"{where}: answer_format {answer_format!r} is not one of {list(ANSWER_FORMATS)}")
    return Example(prompt=prompt, answer=answer.strip(), id=str(row.get("id", "")), answer_format=answer_format)


def load_jsonl(data_cfg: Any, eval_cfg: Any, seed: int) -> Dataset:
    """The `jsonl` source: `{"prompt", "answer"}` rows from `[data].path` (required)."""
    if not data_cfg.path:
        raise RetrainError(
            '[data].source = \'jsonl\' needs [data].path: a JSONL file of {"prompt", "answer"} rows '
            "(or a directory with <split>.jsonl files)"
        )
    dataset = load_local(data_cfg.path, data_cfg.split, data_cfg.eval_split, eval_cfg.num_examples, seed, jsonl_row)
    unasked = [e for e in dataset.train if e.answer_format == "boxed" and "\\boxed" not in e.prompt]
    if len(unasked) == len(dataset.train):
        logger.warning(
            "%s: no prompt mentions \\boxed{}, but answers are read from the last \\boxed{} (answer_format "
            '\'boxed\'); ask for it in the prompts or set "answer_format": "number" per row',
            data_cfg.path,
        )
    return dataset
