"""Planning-token detection: strategic grams → mask_T through character offsets (docs/algorithms.md)."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrain.errors import RetrainError
from retrain.rl.planning import (
    DEFAULT_STRATEGIC_GRAMS,
    _compiled,
    find_planning_phrases,
    planning_mask,
)


def _tokens(*pieces):
    """Text and (start, end) offsets from a list of token strings (like a tokenizer's offsets)."""
    offsets, pos = [], 0
    for p in pieces:
        offsets.append((pos, pos + len(p)))
        pos += len(p)
    return "".join(pieces), offsets


def test_default_grams_are_the_spec_list_in_order():
    assert DEFAULT_STRATEGIC_GRAMS == (
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


def test_marks_exactly_the_gram_tokens():
    text, offsets = _tokens("5", " .", " Wait", " let", " me", " check", " the", " sum")
    # "Wait let me check" matches both "wait let me" and "let me check"; the "5" and "." before
    # and the "the sum" after are not planning tokens.
    assert planning_mask(text, offsets) == [0, 0, 1, 1, 1, 1, 0, 0]


def test_case_insensitive_and_word_boundaries():
    text, offsets = _tokens("NOTICE", " THAT", " x")
    assert planning_mask(text, offsets) == [1, 1, 0]
    # "denotice that" is not "notice that": the gram must start on a word boundary.
    text, offsets = _tokens("denotice", " that")
    assert planning_mask(text, offsets) == [0, 0]
    # "the keys" does not contain "the key is"; "notice thatch" does not contain "notice that".
    assert find_planning_phrases("the keys is fine; notice thatch") == []


def test_subword_tokens_overlapping_a_gram_are_marked():
    # "let me thinking" is not "let me think": the gram must end on a word boundary.
    text, offsets = _tokens("Let", " me", " th", "ink", "ing")
    assert planning_mask(text, offsets) == [0, 0, 0, 0, 0]
    # A token straddling the gram's end ("k." covers the k of "think") is marked; the next is not.
    text, offsets = _tokens("let", " me", " thin", "k.", " So")
    assert planning_mask(text, offsets) == [1, 1, 1, 1, 0]


def test_zero_length_spans_never_match():
    text = "let me check"
    offsets = [(0, 3), (3, 3), (3, 6), (6, 12), (12, 12)]
    assert planning_mask(text, offsets) == [1, 0, 1, 1, 0]


def test_separators_and_apostrophes():
    assert find_planning_phrases("Wait, let me redo it") == ["wait let me"]
    assert find_planning_phrases("I should double-check.") == ["double check"]
    assert find_planning_phrases("That’s not right.") == ["that's not right"]
    assert find_planning_phrases("the key\ninsight is") == ["the key insight"]
    assert find_planning_phrases("wait. let me") == []  # a sentence break is not a separator


def test_find_planning_phrases_order_and_uniqueness():
    text = "Notice that x. Let me check. Notice that y. Wait let me think"
    assert find_planning_phrases(text) == ["notice that", "let me check", "wait let me", "let me think"]
    assert find_planning_phrases("nothing here") == []


def test_custom_grams():
    grams = ["hmm", "so the answer"]
    text, offsets = _tokens("Hmm", ",", " so", " the", " answer", " is", " 4")
    assert planning_mask(text, offsets, grams) == [1, 0, 1, 1, 1, 0, 0]
    assert find_planning_phrases(text, grams) == ["hmm", "so the answer"]
    assert planning_mask(text, offsets, []) == [0] * 7
    # Regex metacharacters in a gram are literal.
    assert find_planning_phrases("is x (y)? yes", ["(y)?"]) == ["(y)?"]


def test_empty_gram_is_a_user_error():
    with pytest.raises(RetrainError, match="empty gram"):
        planning_mask("abc", [(0, 3)], ["let me", "  "])


def test_patterns_are_compiled_once_per_gram_list():
    _compiled.cache_clear()
    for _ in range(3):
        planning_mask("let me check", [(0, 12)])
        find_planning_phrases("let me check")
    info = _compiled.cache_info()
    assert info.misses == 1 and info.hits == 5


words_st = st.lists(
    st.sampled_from(["let", "me", "check", "wait", "the", "key", "is", "x", "=", "2", ",", "\n"]),
    max_size=30,
)


@settings(max_examples=100, deadline=None)
@given(words_st)
def test_mask_agrees_with_a_per_character_reference(words):
    # Reference: mark characters covered by any match of any gram (one regex per gram, scanned at
    # every start so overlapping matches count), then a token is planning iff it covers one.
    text, offsets = _tokens(*[w if i == 0 else " " + w for i, w in enumerate(words)])
    covered = [False] * len(text)
    for gram in DEFAULT_STRATEGIC_GRAMS:
        pattern = re.compile(
            r"(?<!\w)" + r"[\s,;:\-–—]+".join(re.escape(w).replace("'", "['’]") for w in gram.split()) + r"(?!\w)",
            re.IGNORECASE,
        )
        for start in range(len(text)):
            m = pattern.match(text, start)
            if m:
                for i in range(m.start(), m.end()):
                    covered[i] = True
    expected = [int(any(covered[s:e])) for s, e in offsets]
    assert planning_mask(text, offsets) == expected
    assert len(planning_mask(text, offsets)) == len(offsets)
