"""Plugins the run tests load by dotted path, as a user's own module would be."""


def digit_fraction(completion: str, reference: str) -> float:
    """A dense reward a random tiny model can climb: the share of characters that are digits."""
    if not completion:
        return 0.0
    return sum(ch.isdigit() for ch in completion) / len(completion)


def has_digit(completion: str, reference: str) -> float:
    """1 when the completion holds any digit: a random tiny model's samples are often, not always, correct."""
    return float(any(ch.isdigit() for ch in completion))


class ScriptedBackend:
    """A Backend plugin (`[backend] backend = "retrain_test_plugins:ScriptedBackend"`) whose every group is
    the same fixed completions, one token per whitespace-delimited word (trailing spaces included), so
    planning-token arithmetic can be checked by hand. It never learns; train_step only counts tokens."""

    reports_sync_loss = True
    preserves_token_advantages = True
    TEXTS = (
        "Let me check: 2 + 3 = 5. \\boxed{5}",
        "The answer is \\boxed{6}",
        "Wait, let me think again. \\boxed{5}",
        "5",
    )

    def __init__(self, cfg):
        self.cfg = cfg

    @staticmethod
    def completion(text: str):
        import re

        from retrain.backends.base import Completion

        offsets = [m.span() for m in re.finditer(r"\S+\s*", text)]
        return Completion(
            prompt_ids=[1, 2],
            token_ids=list(range(3, 3 + len(offsets))),
            logprobs=[-1.0] * len(offsets),
            text=text,
            offsets=offsets,
            hit_max_tokens=False,
        )

    def sample(self, prompts, n, params):
        return [[self.completion(self.TEXTS[i % len(self.TEXTS)]) for i in range(n)] for _ in prompts]

    def train_step(self, datums, lr):
        from retrain.backends.base import TrainResult

        return TrainResult(loss=0.0, num_tokens=sum(len(d.completion_ids) for d in datums))

    def save(self, path):
        import os

        os.makedirs(path, exist_ok=True)

    def load(self, path):
        pass
