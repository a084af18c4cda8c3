"""Plugins the run tests load by dotted path, as a user's own module would be."""


def digit_fraction(completion: str, reference: str) -> float:
    """A dense reward a random tiny model can climb: the share of characters that are digits."""
    if not completion:
        return 0.0
    return sum(ch.isdigit() for ch in completion) / len(completion)


def has_digit(completion: str, reference: str) -> float:
    """1 when the completion holds any digit: a random tiny model's samples are often, not always, correct."""
    return float(any(ch.isdigit() for ch in completion))
