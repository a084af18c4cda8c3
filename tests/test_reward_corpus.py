"""The reward regression corpus (tests/reward_corpus.py, ~3,600 adversarial cases) through `match` and
`math`: 0 crashes, 0 wrong-correct, the controls right, every call within its limit + 0.5 s and its
memory limit, on and off the main thread.

Half the cases (even indices) are scored from the main thread and half from a second thread, at the
same time, each through its own Scorers: both paths see every family. Cases built to hit the time limit
(`Case.slow`) run under SLOW_LIMIT_S, to keep the test short; the rest under the default 5 s, so a loaded
machine cannot turn a control into a timeout. Time and memory per call are the worker's own measurements
(`CallResult.seconds` from the parent's clock, `peak_mb` from the worker's peak-RSS counter), not a timing
of the test.
"""

from __future__ import annotations

import threading
import time

import pytest
from reward_corpus import Case, corpus

from retrain.data.base import Example
from retrain.rewards import BuiltinReward, Scorer

TIMEOUT_S = 5.0  # the [reward].timeout_s default
SLOW_LIMIT_S = 1.0
MEMORY_MB = 512
SLACK_MB = 64  # resident pages that are not data (code pages touched for the first time, stacks)

CASES = corpus()


def _score(kind: str, cases: list[Case], out: dict, key: str) -> None:
    """out[key] = [(case, CallResult, limit_s, base_mb)], wall seconds."""
    start = time.perf_counter()
    rows = []
    for limit_s in (TIMEOUT_S, SLOW_LIMIT_S):
        part = [c for c in cases if c.slow == (limit_s == SLOW_LIMIT_S)]
        examples = [Example(prompt="q", answer=c.reference, id=c.family, answer_format=c.answer_format) for c in part]
        with Scorer(BuiltinReward(kind), timeout_s=limit_s, memory_mb=MEMORY_MB, name=kind) as scorer:
            results = scorer.calls([c.completion for c in part], examples)
            rows += [(c, r, limit_s, scorer.pool.base_mb) for c, r in zip(part, results, strict=True)]
    out[key] = rows, time.perf_counter() - start


@pytest.fixture(scope="module", params=["match", "math"])
def scored(request, tmp_path_factory):
    """(kind, [(case, CallResult, thread, base_mb)]) for the whole corpus."""
    kind = request.param
    cwd = tmp_path_factory.mktemp(f"corpus_{kind}")
    mp = pytest.MonkeyPatch()
    mp.chdir(cwd)  # injections try `touch PWNED` here
    try:
        evens, odds = CASES[0::2], CASES[1::2]
        out: dict = {}
        worker = threading.Thread(target=_score, args=(kind, odds, out, "thread"))
        worker.start()
        _score(kind, evens, out, "main")
        worker.join()
    finally:
        mp.undo()
    assert not (cwd / "PWNED").exists(), "model text was executed"
    rows = []
    for thread in ("main", "thread"):
        part, wall = out[thread]
        print(
            f"\n{kind} {thread}: {len(part)} cases in {wall:.1f} s; worker rests at {part[0][3]:.0f} MB; "
            f"peak per call {max(r.peak_mb or 0 for _, r, _, _ in part):.0f} MB; "
            f"slowest {max(r.seconds for _, r, _, _ in part):.2f} s; "
            f"timeouts {sum(r.status == 'timeout' for _, r, _, _ in part)}"
        )
        rows += [(c, r, thread, limit_s, base_mb) for c, r, limit_s, base_mb in part]
    return kind, rows


def _show(rows) -> str:
    return "\n".join(
        f"  [{t}] {c.family}/{c.verdict} {c.completion[-80:]!r} vs {c.reference[:30]!r} ({c.answer_format}) -> {r}"
        for c, r, t, *_ in rows[:20]
    )


def test_corpus_is_big_and_has_controls():
    assert len(CASES) >= 2000
    verdicts = {c.verdict for c in CASES}
    assert {"wrong", "exact", "right"} <= verdicts
    assert sum(c.verdict == "exact" for c in CASES) >= 300  # a scorer that always says 0 fails


@pytest.mark.slow
def test_no_wrong_answer_scores_correct(scored):
    kind, rows = scored
    bad = [row for row in rows if row[0].verdict == "wrong" and row[1].value > 0.5]
    assert not bad, f"{kind}: {len(bad)} wrong answers scored correct:\n{_show(bad)}"


@pytest.mark.slow
def test_right_answers_score_correct(scored):
    kind, rows = scored
    must = {"exact"} if kind == "match" else {"exact", "right"}
    missed = [row for row in rows if row[0].verdict in must and row[1].value != 1.0]
    assert not missed, f"{kind}: {len(missed)} right answers scored 0:\n{_show(missed)}"


@pytest.mark.slow
def test_no_call_crashes_and_only_bombs_time_out(scored):
    kind, rows = scored
    crashed = [row for row in rows if row[1].status == "failed"]
    assert not crashed, f"{kind}: built-in reward failed:\n{_show(crashed)}"
    if kind == "match":  # match never parses: nothing may come near the limit
        assert not [row for row in rows if row[1].status == "timeout"]


@pytest.mark.slow
def test_every_call_within_its_limits(scored):
    kind, rows = scored
    slow = [row for row in rows if row[1].seconds > row[3] + 0.5]
    assert not slow, f"{kind}: calls over their limit + 0.5 s:\n{_show(slow)}"
    measured = [row for row in rows if row[1].peak_mb is not None]
    assert len(measured) >= 0.99 * len(rows)  # the worker measures (Linux /proc), so the bound is real
    heavy = [row for row in measured if row[1].peak_mb - row[4] > MEMORY_MB + SLACK_MB]
    assert not heavy, f"{kind}: calls over {MEMORY_MB} MB:\n{_show(heavy)}"
    assert {row[2] for row in rows} == {"main", "thread"}
