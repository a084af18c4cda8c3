"""A reward module that imports in the training process but not in a reward worker (`python -c`)."""

import sys

if sys.argv[:1] == ["-c"]:
    raise ImportError("this module refuses to load in a reward worker")


def always(completion: str, reference: str) -> float:
    return 1.0
