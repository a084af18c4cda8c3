"""Planning tokens: tokens inside a "strategic gram" such as "let me check" (docs/algorithms.md).

Grams are matched in the decoded completion text, case-insensitively and on word boundaries; a
token is a planning token when its character span (from the tokenizer's offsets) overlaps a match.
Mapping through offsets, rather than re-joining token strings, marks exactly the gram's tokens:
never the tokens before or after it.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Sequence

from retrain.errors import RetrainError

DEFAULT_STRATEGIC_GRAMS: tuple[str, ...] = (
    "wait let me",
    "let me think",
    "on second thought",
    "let me check",
    "let me verify",
    "is this right",
    "double check",
    "try another approach",
    "go back and",
    "start over",
    "that's not right",
    "that doesn't work",
    "another way to",
    "or we could",
    "what if we",
    "notice that",
    "the key is",
    "the key insight",
)


GRAM_SEPARATOR = r"[\s,;:\-–—]+"  # between a gram's words (`retrain grams mine` splits text the same way)


def _gram_regex(gram: str) -> str:
    r"""Regex for one gram: word boundaries at both ends, loose separators between its words.

    "that's not right" → (?<!\w)that['’]s[\s,;:\-–—]+not[\s,;:\-–—]+right(?!\w)

    Lookarounds instead of \b so a gram that starts or ends with punctuation still needs a
    non-word neighbour. Between words any run of whitespace, commas, colons, semicolons or dashes
    matches, because models write "Wait, let me", "double-check" and wrap lines inside phrases;
    either apostrophe matches because they write "that’s" as often as "that's".
    """
    words = gram.split()
    escaped = ["".join("['’]" if ch in "'’" else re.escape(ch) for ch in w) for w in words]
    return r"(?<!\w)" + GRAM_SEPARATOR.join(escaped) + r"(?!\w)"


@functools.lru_cache(maxsize=32)
def _compiled(grams: tuple[str, ...]) -> tuple[tuple[str, re.Pattern[str]], ...]:
    """One compiled pattern per gram, built once per gram list.

    One pattern per gram (not one alternation) so overlapping grams all match: in
    "wait let me check" both "wait let me" and "let me check" are found.
    """
    out = []
    for gram in grams:
        if not gram.strip():
            raise RetrainError(
                "[planning].strategic_grams contains an empty gram; remove it or write a phrase such as 'let me check'"
            )
        out.append((gram, re.compile(_gram_regex(gram), re.IGNORECASE)))
    return tuple(out)


def _patterns(grams: Sequence[str] | None) -> tuple[tuple[str, re.Pattern[str]], ...]:
    return _compiled(DEFAULT_STRATEGIC_GRAMS if grams is None else tuple(grams))


def _matched_spans(text: str, grams: Sequence[str] | None) -> list[tuple[int, int]]:
    """Character spans [start, end) of every gram match, merged and sorted."""
    spans = sorted(m.span() for _, pattern in _patterns(grams) for m in pattern.finditer(text))
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def planning_mask(text: str, offsets: Sequence[tuple[int, int]], grams: Sequence[str] | None = None) -> list[int]:
    """mask_T for one completion: 1 on planning tokens, 0 elsewhere.

        mask_t = 1  ⇔  start_t < end_t  and  ∃ match [s, e):  start_t < e  and  s < end_t

    `offsets` are the tokens' (start, end) character spans in `text` (the tokenizer's offsets).
    Zero-length spans (special tokens, empty pieces) never match. `grams=None` uses
    `DEFAULT_STRATEGIC_GRAMS`; an empty list marks nothing.
    """
    spans = _matched_spans(text, grams)
    if not spans:
        return [0] * len(offsets)
    span_ends = [e for _, e in spans]  # merged spans are disjoint, so their ends are sorted too
    mask_T = []
    for start, end in offsets:
        i = bisect.bisect_right(span_ends, start)  # first span ending after this token starts
        hit = start < end and i < len(spans) and spans[i][0] < end
        mask_T.append(1 if hit else 0)
    return mask_T


def find_planning_phrases(text: str, grams: Sequence[str] | None = None) -> list[str]:
    """The grams that occur in `text`, each once, in order of first occurrence (for generations.jsonl).

    Same matching as `planning_mask`; the gram is returned as written in the gram list.
    """
    first_at = {}
    for gram, pattern in _patterns(grams):
        m = pattern.search(text)
        if m is not None:
            first_at[gram] = m.start()
    return sorted(first_at, key=lambda g: first_at[g])
