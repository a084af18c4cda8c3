"""Reading the JSONL logs a run writes (metrics.jsonl, eval.jsonl, emergence/*.jsonl): bounded,
tolerant of damage, and columnar when only a few keys are needed.

A log can be damaged by a killed writer, a hand edit, a disk error or another tool. Every reader
here follows the same rules, so `report`, `compare`, `litmus`, `plot` and `status` agree:

- **Never read unbounded.** Only regular files are opened (a symlink to /dev/zero, a FIFO or a
  directory is refused without blocking), the file is read in blocks, and a line longer than
  `MAX_LINE_BYTES` is skipped without ever being held in memory.
- **Skip and count.** A line that is not a JSON object, and a value that is not usable, is
  skipped; `LogProblems` counts them by reason and says so once per file (`summary()`, `warn()`).
- **Check values by name** (`check_value`): numbers must be finite and within ±`MAX_ABS` (so sums,
  means and squares stay finite); metrics named `*_rate` or `*_fraction` must lie in [0, 1];
  `FLAG_KEYS` hold true/false and every other key a number (or null: "not logged this step");
  steps must be integers. Strings lose lone surrogates and control characters (`clean_text`).
  Integers longer than 30 digits are read as floats (Python refuses to parse 4,300+ digits).

`read_columns` pulls only the keys asked for. A block whose lines all look like flat JSON
objects (`{...}` one per line, no nested braces) is scanned with numpy: the block's colons once,
then each key's occurrences, the line each is on and its value as arrays (`_KeyScan`; ~10x faster
than `json.loads` per line on metrics rows). Any other block, and one where a line repeats a key
(valid JSON: the last value wins) or puts white space before a colon, is parsed line by line with
`json.loads`. Both paths apply the same checks and give the same columns.

Example::

    problems = LogProblems(path)
    cols = read_columns(path, ["correct_rate", "mean_reward"], problems=problems)
    cols.index            # int64 steps, sorted, one per step (the last row written for a step wins)
    cols.values["correct_rate"]   # float64 aligned with cols.index; NaN = null, missing or skipped
    problems.warn()       # one warning for the whole file, when anything was skipped
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

MAX_LINE_BYTES = 4 << 20  # a metrics row is ~1-2 KB; a generations row with a long completion < 1 MB
BLOCK_BYTES = 8 << 20
MAX_ABS = 1e150  # squares (variances) of numbers up to this stay finite in float64
MAX_INDEX = 2**53  # steps beyond this are not exact in float64
FLAG_KEYS = frozenset(
    {"sepa_gate_open", "loss_is_placeholder", "backend_reports_sync_loss", "correct", "hit_max_tokens"}
)
# Metrics keys that measure wall-clock time: they differ between any two runs of the same computation,
# resumed or not (tests, and `retrain.void`'s identical-metrics check, compare everything else).
TIMING_KEYS = (
    "step_time_s",
    "sample_time_s",
    "weight_sync_time_s",
    "score_time_s",
    "advantage_time_s",
    "train_time_s",
    "eval_time_s",
    "tokens_per_second",
    "bp_throughput",
    "bp_predicted_throughput",
)
MAX_NAMED_LINES = 5  # line numbers named per reason in a summary
_SHORT_TOKEN = 32  # bytes of a value read at once; longer ones one by one (a 5,000-digit integer, a string)


class LogProblemsWarning(UserWarning):
    """Lines or values of a log file were skipped (one warning per file, with counts)."""


class LogProblems:
    """What a reader skipped or repaired in one file, counted by reason, reported once.

    Lines are counted by reason with their first few line numbers; values by (key, reason).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lines: Counter[str] = Counter()
        self.line_numbers: dict[str, list[int]] = {}
        self.values: Counter[tuple[str, str]] = Counter()
        self.repaired: Counter[str] = Counter()  # read, but changed: non-UTF-8 bytes, label characters
        self.unreadable: str | None = None

    def line(self, reason: str, lineno: int | None = None, count: int = 1, linenos=()) -> None:
        """Count `count` skipped lines for `reason`, naming `lineno` / `linenos` (the first few kept)."""
        self.lines[reason] += count
        named = self.line_numbers.setdefault(reason, [])
        new = [lineno] if lineno is not None else list(linenos)
        named.extend(int(x) for x in new[: max(MAX_NAMED_LINES - len(named), 0)])

    def value(self, key: str, reason: str, count: int = 1) -> None:
        if count:
            self.values[(key, reason)] += count

    def repair(self, what: str, count: int = 1) -> None:
        self.repaired[what] += count

    def file(self, reason: str) -> None:
        self.unreadable = reason

    def values_only(self) -> LogProblems:
        """A copy with only the value counts (for a second read of a file whose lines were reported)."""
        out = LogProblems(self.path)
        out.values = Counter(self.values)
        return out

    def __bool__(self) -> bool:
        return bool(self.unreadable or self.lines or self.values or self.repaired)

    def summary(self) -> str | None:
        """One sentence: '<path>: skipped 3 lines (2 malformed JSON: lines 4, 9; ...) and 5 values (...)'."""
        if not self:
            return None
        if self.unreadable:
            return f"{self.path}: {self.unreadable}"
        parts = []
        if self.lines:
            reasons = []
            for reason, n in self.lines.items():
                named = self.line_numbers.get(reason, [])
                where = ""
                if named:
                    more = ", ..." if n > len(named) else ""
                    where = f": line{'s' if n > 1 else ''} {', '.join(map(str, named))}{more}"
                reasons.append(f"{n} {reason}{where}")
            total = sum(self.lines.values())
            parts.append(f"skipped {total} line{'s' if total != 1 else ''} ({'; '.join(reasons)})")
        if self.values:
            by_key: dict[str, list[str]] = {}
            for (key, reason), n in self.values.items():
                by_key.setdefault(key, []).append(f"{n} {reason}")
            total = sum(self.values.values())
            detail = "; ".join(f"{k}: {', '.join(v)}" for k, v in by_key.items())
            parts.append(f"{'skipped ' if not parts else ''}{total} value{'s' if total != 1 else ''} ({detail})")
        text = " and ".join(parts)
        if self.repaired:
            text += ("; " if text else "") + "repaired " + ", ".join(f"{n} {w}" for w, n in self.repaired.items())
        return f"{self.path}: {text}"

    def warn(self, stacklevel: int = 2) -> None:
        text = self.summary()
        if text:
            warnings.warn(text, LogProblemsWarning, stacklevel=stacklevel + 1)


# ---------------------------------------------------------------------------------------------
# Values


def is_unit_interval(key: str) -> bool:
    """Rates and fractions (correct_rate, planning_token_fraction, ...) lie in [0, 1]."""
    return key.endswith(("_rate", "_fraction"))


def check_value(key: str, value: Any) -> tuple[float | None, str | None]:
    """(number, None) for a usable value of `key`; (None, None) for null; (None, reason) for a bad one.

    Flags (`FLAG_KEYS`) map true/false to 1.0/0.0; every other key takes a number within ±MAX_ABS,
    in [0, 1] for `*_rate` / `*_fraction`.
    """
    if value is None:
        return None, None
    if key in FLAG_KEYS:
        return (float(value), None) if isinstance(value, bool) else (None, "not true/false")
    if isinstance(value, bool):
        return None, "true/false where a number belongs"
    if not isinstance(value, int | float):
        return None, "not a number"
    v = float(value)
    if not math.isfinite(v):
        return None, "NaN or infinite"
    if abs(v) > MAX_ABS:
        return None, f"beyond ±{MAX_ABS:g}"
    if is_unit_interval(key) and not 0.0 <= v <= 1.0:
        return None, "outside [0, 1]"
    return v, None


def _check_array(key: str, v: np.ndarray, problems: LogProblems) -> np.ndarray:
    """The numeric checks of `check_value` on parsed numbers; bad ones become NaN (counted)."""
    bad = ~np.isfinite(v)
    problems.value(key, "NaN or infinite", int(bad.sum()))
    with np.errstate(invalid="ignore"):
        big = np.abs(v) > MAX_ABS
        problems.value(key, f"beyond ±{MAX_ABS:g}", int(big.sum()))
        bad |= big
        if is_unit_interval(key):
            out = ((v < 0) | (v > 1)) & ~bad
            problems.value(key, "outside [0, 1]", int(out.sum()))
            bad |= out
    return np.where(bad, np.nan, v)


def clean_text(text: str) -> tuple[str, bool]:
    """(text with every character that is not printable replaced by U+FFFD, whether any was).

    A label with a lone surrogate (valid JSON: "\\ud800") cannot be printed, written as UTF-8 or
    drawn; a control character garbles a terminal. Both, and separators other than the space, are
    not printable (`str.isprintable`).
    """
    if text.isprintable():
        return text, False
    return "".join(ch if ch.isprintable() else "\ufffd" for ch in text), True


def _parse_int(text: str) -> int | float:
    # json.loads refuses integers of 4,300+ digits (ValueError for the whole line); as a float the
    # value is kept (and a huge one is then rejected by the magnitude check, not the whole row).
    return int(text) if len(text) <= 30 else float(text)


# ---------------------------------------------------------------------------------------------
# Bounded reading


def _open_regular(path: Path, problems: LogProblems):
    """A binary file object for `path`, or None (counted) when it is not a regular file.

    O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
    FileNotFoundError is left to the caller, which knows whether a missing file is an error.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise
    except OSError as err:
        problems.file(f"cannot be read ({err.strerror or err}); not read")
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        problems.file("not a regular file (a device, pipe or directory); not read")
        return None
    return os.fdopen(fd, "rb")


def _human(n: int) -> str:
    return f"{n >> 20} MiB" if n % (1 << 20) == 0 else f"{n} bytes"


def iter_blocks(
    path: str | Path, problems: LogProblems, max_line_bytes: int = MAX_LINE_BYTES, block_bytes: int = BLOCK_BYTES
) -> Iterator[tuple[int, memoryview]]:
    """(line number of the first line, whole lines each ending in \\n) over the file, block by block.

    Each block is a view into one reused buffer, valid until the next block is produced (no
    allocation per block: on a loaded machine the page faults of a fresh 8 MiB buffer per block
    cost as much as scanning it). Memory stays at block_bytes + max_line_bytes: a line still
    unfinished after max_line_bytes is counted and dropped as the rest of it streams past. Lines
    longer than the cap that fit in one block are left to the block parsers (which check lengths).
    """
    f = _open_regular(Path(path), problems)
    if f is None:
        return
    buf = bytearray(block_bytes + max_line_bytes + 1)
    view = memoryview(buf)
    with f:
        lineno, have, skipping = 1, 0, False  # have: bytes of an unfinished line kept at buf[:have]
        while got := f.readinto(view[have : have + block_bytes]):
            if skipping:
                nl = buf.find(b"\n", 0, got)
                if nl < 0:
                    continue
                got -= nl + 1
                buf[:got] = buf[nl + 1 : nl + 1 + got]
                skipping, lineno = False, lineno + 1
            end = have + got
            cut = buf.rfind(b"\n", 0, end) + 1
            if cut:
                yield lineno, view[:cut]
                lineno += int(np.count_nonzero(np.frombuffer(buf, np.uint8, cut) == ord("\n")))
            have = end - cut
            if have > max_line_bytes:
                problems.line(f"longer than {_human(max_line_bytes)}", lineno)
                have, skipping = 0, True
            elif have and cut:
                buf[:have] = buf[cut:end]
        if have and not skipping:
            buf[have] = ord("\n")
            yield lineno, view[: have + 1]


def _parse_line(raw: bytes, lineno: int, problems: LogProblems) -> dict | None:
    """One line as a dict, or None (counted): not UTF-8 is repaired, anything not an object skipped."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "replace")
        problems.repair("lines with bytes that are not UTF-8 (read as U+FFFD)")
    try:
        row = json.loads(text, parse_int=_parse_int)
    except RecursionError:
        problems.line("nested too deeply", lineno)
        return None
    except ValueError:
        problems.line("malformed JSON", lineno)
        return None
    if not isinstance(row, dict):
        problems.line("not a JSON object", lineno)
        return None
    return row


def _block_rows(
    block: memoryview, first: int, max_line_bytes: int, problems: LogProblems
) -> Iterator[tuple[int, dict]]:
    """(line number, row) of every JSON-object line of one block (`iter_blocks`), parsed by json.loads."""
    for i, raw in enumerate(bytes(block).split(b"\n")[:-1]):
        if not raw.strip():
            continue
        if len(raw) > max_line_bytes:
            problems.line(f"longer than {_human(max_line_bytes)}", first + i)
            continue
        row = _parse_line(raw, first + i, problems)
        if row is not None:
            yield first + i, row


def _iter_rows(
    path: str | Path, problems: LogProblems, max_line_bytes: int, block_bytes: int = BLOCK_BYTES
) -> Iterator[tuple[int, dict]]:
    for first, block in iter_blocks(path, problems, max_line_bytes, block_bytes):
        yield from _block_rows(block, first, max_line_bytes, problems)


def clean_row(row: dict, problems: LogProblems) -> dict:
    """The row with bad top-level values set to None and strings cleaned (`check_value`, `clean_text`).

    Nested values (another tool's lists or objects) are kept as they are.
    """
    out = {}
    for key, value in row.items():
        if isinstance(key, str):
            key, changed = clean_text(key)
            if changed:
                problems.repair("keys with characters that cannot be shown")
        if isinstance(value, str):
            value, changed = clean_text(value)
            if changed:
                problems.repair(f"{key} values with characters that cannot be shown")
        elif isinstance(value, int | float) and not isinstance(value, bool):  # bools are left as written
            number, reason = check_value(key, value)
            if reason:
                problems.value(key, reason)
                value = None
            elif isinstance(value, float):
                value = number
        out[key] = value
    return out


def read_rows(
    path: str | Path, *, problems: LogProblems | None = None, max_line_bytes: int = MAX_LINE_BYTES
) -> list[dict]:
    """Every JSON-object line of `path` as a cleaned dict (`clean_row`), in file order.

    Blank lines are ignored; bad lines and values are counted in `problems` (warned about here when
    no `problems` is passed). A missing file raises FileNotFoundError.
    """
    own = problems is None
    problems = problems if problems is not None else LogProblems(path)
    rows = [clean_row(row, problems) for _, row in _iter_rows(path, problems, max_line_bytes)]
    if own:
        problems.warn(stacklevel=2)
    return rows


def first_row(path: str | Path, problems: LogProblems, max_lines: int = 100) -> dict:
    """The first JSON-object line among the first `max_lines` lines, cleaned; {} when none (or no file).

    Reads small blocks: this is the header of a file that may hold a million rows.
    """
    try:
        for lineno, row in _iter_rows(path, problems, MAX_LINE_BYTES, block_bytes=64 << 10):
            if lineno > max_lines:
                break
            return clean_row(row, problems)
    except FileNotFoundError:
        pass
    return {}


def read_json_object(path: str | Path, problems: LogProblems, max_bytes: int = 64 << 20) -> dict | None:
    """The JSON object in `path` (manifest.json, run.json), or None (counted) when it is not a regular
    file, larger than `max_bytes`, not UTF-8, malformed, too deeply nested or not an object.
    A missing file raises FileNotFoundError."""
    f = _open_regular(Path(path), problems)
    if f is None:
        return None
    with f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        problems.file(f"larger than {_human(max_bytes)}; not read")
        return None
    try:
        doc = json.loads(data.decode("utf-8"), parse_int=_parse_int)
    except RecursionError:
        problems.file("nested too deeply; not read")
        return None
    except ValueError as err:  # UnicodeDecodeError is a ValueError
        problems.file(f"not valid JSON ({err}); not read")
        return None
    if not isinstance(doc, dict):
        problems.file("not a JSON object; not read")
        return None
    return doc


# ---------------------------------------------------------------------------------------------
# Columns


@dataclass
class Columns:
    """Columns of a JSONL log keyed by an integer index (step): one entry per index value.

    index: int64, sorted, unique (the last row written for an index value wins, as a resumed run's
    rows replace the ones after its checkpoint). values[key]: float64 aligned with index, NaN where
    the row had null, no such key, or a skipped value; flags are 1.0 / 0.0.
    """

    index: np.ndarray
    values: dict[str, np.ndarray]


_BLANK = np.zeros(256, bool)  # white space as the regex `\s` has it
_BLANK[list(b" \t\n\r\f\v")] = True
_TOKEN_END = _BLANK.copy()  # where a value in a flat object ends
_TOKEN_END[[ord(","), ord("}")]] = True


class _KeyScan:
    """Finds one key's values in a block of flat JSON objects without a regex pass per key.

    Every key of a flat object ends in `":` (the block's colons are found once, for all keys), so an
    occurrence of `"key"` is a key ending there whose last 8 bytes, read as one little-endian word,
    match (`word`, under `mask` for keys shorter than 8 bytes); the other bytes are then compared on
    those few. `regex` reads the value of an occurrence the vectorised reading cannot (see
    `_value_tokens`). A quote inside a string is escaped (`\\"`), so `"key":` there cannot match the
    closing quote, and a backslash before the opening quote means a longer key (`"x\\"key":`).
    """

    def __init__(self, key: str):
        self.needle = json.dumps(key).encode()  # the key as the writer spells it (quotes, escapes)
        tail = self.needle[-8:]
        self.word = np.uint64(int.from_bytes(tail.rjust(8, b"\0"), "little"))
        self.mask = np.uint64(((1 << (8 * len(tail))) - 1) << (8 * (8 - len(tail))))
        self.regex = re.compile(re.escape(self.needle) + rb":\s*([^,}\s]*)")

    def find(self, buf: np.ndarray, quotes: np.ndarray, words: np.ndarray) -> np.ndarray:
        """The closing quote of every occurrence of the key, ascending. `quotes`: the closing quote of
        every key in the block; `words`: the 8 bytes ending at each (garbage where a quote is < 7)."""
        size = len(self.needle)
        at = quotes[((words & self.mask) == self.word) | (quotes < 7)]
        at = at[at >= size]  # room for the key and the byte before it
        for j, byte in enumerate(self.needle[:-1]):
            at = at[buf[at - size + 1 + j] == byte]
        found: np.ndarray = at[buf[at - size] != ord("\\")]
        return found


def _value_tokens(
    block: memoryview, buf: np.ndarray, at: np.ndarray, scan: _KeyScan
) -> tuple[np.ndarray, dict[int, bytes]]:
    """The raw value after each `"key":` whose closing quote is at `at`, as `S{_SHORT_TOKEN}` tokens
    (zero-padded; what the regex `[^,}\\s]*` would take), and {i: whole token} for the ones a window of
    _SHORT_TOKEN bytes cannot give: longer values (a 5,000-digit integer, a long string), more than
    one space after the colon, a value too near the end of the block for a whole window."""
    width = _SHORT_TOKEN
    start = at + 2
    start += buf[start] == ord(" ")  # json.dumps writes `": `
    if len(buf) >= width:
        windows = np.ndarray((len(buf) - width + 1,), f"S{width}", buffer=block, strides=(1,))
        tokens = windows[np.minimum(start, len(buf) - width)]  # a copy: one window per value
    else:
        tokens = np.zeros(len(at), f"S{width}")
    u8 = tokens.view(np.uint8).reshape(len(at), width)
    stop = _TOKEN_END[u8]
    length = np.where(stop.any(axis=1), stop.argmax(axis=1), width)
    u8[np.arange(width) >= length[:, None]] = 0
    odd = (length == width) | _BLANK[buf[start]] | (start > len(buf) - width)
    # Each position is a key the scan found, so the key's regex matches there.
    whole = {
        i: cast("re.Match[bytes]", scan.regex.match(block, at[i] - len(scan.needle) + 1))[1]
        for i in np.flatnonzero(odd).tolist()
    }
    return tokens, whole


def _tokens_to_numbers(key: str, tokens: np.ndarray, whole: dict[int, bytes], problems: LogProblems) -> np.ndarray:
    """Raw JSON value tokens → float64 (NaN: null or bad, counted), per the `check_value` rules.

    `tokens`: fixed-width (a JSON number or literal is at most 24 characters); `whole`: the full
    token of each one read one by one instead (see `_value_tokens`).
    """
    n = len(tokens)
    out = np.full(n, np.nan)
    done = np.zeros(n, bool)
    for i, tok in whole.items():
        value, reason = _slow_token(key, tok)
        out[i] = np.nan if value is None else value
        if reason:
            problems.value(key, reason)
        done[i] = True
    null, true, false = tokens == b"null", tokens == b"true", tokens == b"false"
    true &= ~done
    false &= ~done
    rest = ~(null | true | false | done)
    if key in FLAG_KEYS:
        out[true], out[false] = 1.0, 0.0
        problems.value(key, "not true/false", int(rest.sum()))
        return out
    problems.value(key, "true/false where a number belongs", int((true | false).sum()))
    if rest.any():
        sub = tokens[rest]
        try:
            vals = _check_array(key, sub.astype(np.float64), problems)
        except ValueError:  # something that is not a number among them: one by one
            vals = np.full(len(sub), np.nan)
            for i, tok in enumerate(sub.tolist()):
                value, reason = _slow_token(key, tok)
                if reason:
                    problems.value(key, reason)
                elif value is not None:
                    vals[i] = value
        out[rest] = vals
    return out


def _slow_token(key: str, tok: bytes) -> tuple[float | None, str | None]:
    """One raw token through json.loads and `check_value`."""
    try:
        value = json.loads(tok.decode("utf-8", "replace"), parse_int=_parse_int)
    except (ValueError, RecursionError):
        return None, "not a number"
    return check_value(key, value)


def _fast_block(
    block: memoryview, keys: list[str], scans: dict[str, _KeyScan], max_line_bytes: int, problems: LogProblems
) -> dict[str, np.ndarray] | None:
    """Columns of a block whose lines are all one flat JSON object each; None to fall back.

    keys[0] is the index: its bad values are not counted here (the caller counts the rows).
    """
    buf = np.frombuffer(block, np.uint8)
    ends = np.flatnonzero(buf == ord("\n"))
    n = len(ends)
    if n == 0 or np.count_nonzero(buf == ord("{")) != n:  # one object per line and none nested
        return None
    starts = np.empty_like(ends)
    starts[0], starts[1:] = 0, ends[:-1] + 1
    if (ends - starts > max_line_bytes).any() or (buf[starts] != ord("{")).any() or (buf[ends - 1] != ord("}")).any():
        return None
    colons = np.flatnonzero(buf == ord(":"))  # never at 0: the block starts with "{"
    before = buf[colons - 1]
    if _BLANK[before].any():  # `"step" : 0` is JSON too, but a layout this scan does not read
        return None
    quotes = colons[before == ord('"')] - 1  # the closing quote of every key (and of `\":` in strings)
    if len(buf) >= 8:
        words = np.ndarray((len(buf) - 7,), "<u8", buffer=block, strides=(1,))[np.maximum(quotes - 7, 0)]
    else:
        words = np.zeros(len(quotes), np.uint64)
    out = {}
    for key in keys:
        counted = problems if key != keys[0] else LogProblems(problems.path)
        at = scans[key].find(buf, quotes, words)
        # Each value is placed by the line it is on: as many values as lines does not mean one per
        # line, since JSON allows a key twice in an object (json.loads keeps the last).
        line_of = np.searchsorted(ends, at)
        if (np.diff(line_of) == 0).any():
            return None  # a key twice in one line: json.loads decides which value counts
        values = _tokens_to_numbers(key, *_value_tokens(block, buf, at, scans[key]), counted)
        if len(at) == n:  # one in every line
            out[key] = values
        else:
            out[key] = np.full(n, np.nan)
            out[key][line_of] = values
    return out


def _slow_block(
    block: memoryview, first: int, keys: list[str], max_line_bytes: int, problems: LogProblems
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Columns of a block parsed line by line with json.loads, and the line number of each row."""
    cols: dict[str, list[float]] = {k: [] for k in keys}
    linenos = []
    for lineno, row in _block_rows(block, first, max_line_bytes, problems):
        linenos.append(lineno)
        for key in keys:
            value, reason = check_value(key, row.get(key))
            if reason and key != keys[0]:  # a bad index: counted per row by the caller
                problems.value(key, reason)
            cols[key].append(np.nan if value is None else value)
    return {k: np.array(v, dtype=np.float64) for k, v in cols.items()}, np.array(linenos, dtype=np.int64)


def read_columns(
    path: str | Path,
    keys: list[str],
    *,
    index: str = "step",
    min_index: int = 0,
    problems: LogProblems | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Columns:
    """Only `keys` (and the `index` key) of every row of `path`, as aligned float64 arrays.

    Rows whose index is not an integer in [min_index, 2**53) are skipped and counted. A missing
    file raises FileNotFoundError; a device or FIFO gives empty columns (counted in `problems`).
    """
    own = problems is None
    problems = problems if problems is not None else LogProblems(path)
    keys = list(dict.fromkeys([index, *keys]))
    scans = {k: _KeyScan(k) for k in keys}
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    lineno_parts = []
    for first, block in iter_blocks(path, problems, max_line_bytes):
        cols = _fast_block(block, keys, scans, max_line_bytes, problems)
        if cols is not None:
            linenos = first + np.arange(len(cols[index]), dtype=np.int64)
        else:
            cols, linenos = _slow_block(block, first, keys, max_line_bytes, problems)
        for k in keys:
            parts[k].append(cols[k])
        lineno_parts.append(linenos)
    values = {k: np.concatenate(v) if v else np.empty(0) for k, v in parts.items()}
    idx = values.pop(index)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(idx) & (idx == np.floor(idx)) & (idx >= min_index) & (idx < MAX_INDEX)
    if not ok.all():
        problems.line(
            f"without an integer {index}",
            count=int((~ok).sum()),
            linenos=np.concatenate(lineno_parts)[~ok][:MAX_NAMED_LINES].tolist(),
        )
    idx = idx[ok].astype(np.int64)
    # the last row written for an index value wins: unique over the reversed order keeps the last one
    rev = idx[::-1]
    uniq, first_in_rev = np.unique(rev, return_index=True)
    take = len(idx) - 1 - first_in_rev
    out = Columns(index=uniq, values={k: v[ok][take] for k, v in values.items()})
    if own:
        problems.warn(stacklevel=2)
    return out
