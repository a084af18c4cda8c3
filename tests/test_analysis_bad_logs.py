"""Analysis and `retrain status` on damaged logs: every bad input is skipped and counted, nothing crashes.

Each case damages one run (`maxrl+gtpo_sepa_s1`) of a small campaign the way a crashed writer, a
hand edit or another tool can: non-finite or absurd numbers, a NaN step, 5,000-digit integers,
deeply nested JSON, a label with a lone surrogate, bytes that are not UTF-8, a string or a list
where a number belongs, metrics.jsonl linked to /dev/zero, a line longer than the reader's cap.
The verbs must exit normally, print ONE warning for the damaged file (counts, not one line per
value) and compute their numbers from the values that are left.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from fixtures_analysis import run_cli, write_campaign
from hypothesis import given, settings
from hypothesis import strategies as st

from retrain.analysis.load import load_run

HICRA, SEPA = "maxrl+gtpo_hicra", "maxrl+gtpo_sepa"
VICTIM = f"{SEPA}_s1"
SRC = Path(__file__).resolve().parents[1] / "src"
LONG = 5 * 1024 * 1024  # longer than the readers' 4 MiB line cap


@pytest.fixture(scope="module")
def clean_campaign(tmp_path_factory) -> Path:
    return write_campaign(
        tmp_path_factory.mktemp("bad") / "campaign_bad",
        conditions=(HICRA, SEPA),
        seeds=(1, 2, 3),
        num_steps=10,
        lifts={SEPA: 0.1},
        squeeze=False,
        eval_every=5,
    )


def _set(line: str, key: str, raw: str) -> str:
    """The JSON line with `key`'s value replaced by the raw JSON text `raw`."""
    new, n = re.subn(rf'"{key}": [^,}}]*', f'"{key}": {raw}'.replace("\\", "\\\\"), line)
    assert n == 1, (key, line)
    return new


def _value_at_9(key: str, raw: str):
    return lambda lines: [_set(line, key, raw) if i == 9 else line for i, line in enumerate(lines)]


def _bytes_lines(lines: list[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


# name -> (damage(lines) -> lines | bytes, which rows of the victim's window [8, 10) keep their correct_rate)
CASES = {
    "nan-correct_rate": (_value_at_9("correct_rate", "NaN"), [8]),
    "infinity-correct_rate": (_value_at_9("correct_rate", "-Infinity"), [8]),
    "1e308-correct_rate": (_value_at_9("correct_rate", "1e308"), [8]),
    "nan-step": (_value_at_9("step", "NaN"), [8]),
    "5000-digit-int-value": (_value_at_9("correct_rate", "9" * 5000), [8]),
    "5000-digit-int-step": (_value_at_9("step", "1" * 5000), [8]),
    "string-for-number": (_value_at_9("correct_rate", '"0.5"'), [8]),
    "list-for-number": (_value_at_9("correct_rate", "[0.5, 1]"), [8]),
    "deeply-nested-json": (
        lambda lines: (
            lines[:5] + ['{"step": 5, "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "[" * 100_000] + lines[5:]
        ),
        [8, 9],
    ),
    "lone-surrogate-label": (
        lambda lines: [_set(line, "condition", '"maxrl+gtpo_sepa\\ud800"') for line in lines],
        [8, 9],
    ),
    "non-utf-8-bytes": (
        lambda lines: (
            _bytes_lines(lines).replace(
                b'"step": 9, "condition": "maxrl+gtpo_sepa"', b'"step": 9, "condition": "maxrl\xff\xfe"'
            )
            + b"\x80\x81 not json\n"
        ),
        [8, 9],
    ),
    "endless-line": (lambda lines: _bytes_lines(lines) + b'{"step": 10, "pad": "' + b"x" * LONG, [8, 9]),
    "dev-zero": (None, None),
}


def damage(run_dir: Path, case: str) -> None:
    """Apply one case's damage to `run_dir`/metrics.jsonl (a 10-step maxrl+gtpo_sepa run)."""
    metrics = run_dir / "metrics.jsonl"
    fn, _ = CASES[case]
    if fn is None:
        metrics.unlink()
        metrics.symlink_to("/dev/zero")
        return
    out = fn(metrics.read_text().splitlines())
    metrics.write_bytes(out if isinstance(out, bytes) else _bytes_lines(out))


@pytest.fixture(scope="module")
def damaged_root(clean_campaign, tmp_path_factory) -> Path:
    """logs/<case>/: one copy of the clean campaign per case, its run maxrl+gtpo_sepa_s1 damaged."""
    root = tmp_path_factory.mktemp("damaged") / "logs"
    for case in CASES:
        shutil.copytree(clean_campaign, root / case)
        damage(root / case / "runs" / VICTIM, case)
        (root / case / "manifest.json").write_text(
            json.dumps(
                {
                    "conditions": [HICRA, SEPA],
                    "seeds": [1, 2, 3],
                    "max_steps": 10,
                    "runs": [
                        {"name": f"{c}_s{s}", "condition": c, "seed": s, "log_dir": f"runs/{c}_s{s}"}
                        for c in (HICRA, SEPA)
                        for s in (1, 2, 3)
                    ],
                }
            )
        )
    return root


def expected_window_mean(clean: Path, case: str) -> float | None:
    keep = CASES[case][1]
    if keep is None:
        return None
    rows = [json.loads(line) for line in (clean / "runs" / VICTIM / "metrics.jsonl").read_text().splitlines()]
    return sum(rows[i]["correct_rate"] for i in keep) / len(keep)


def metrics_warnings(err: str, run_dir: Path) -> list[str]:
    path = str(run_dir / "metrics.jsonl")
    return [line for line in err.splitlines() if line.startswith("retrain: warning:") and path in line]


@pytest.mark.parametrize("case", list(CASES))
def test_compare_and_litmus_skip_and_count(clean_campaign, damaged_root, tmp_path, capsys, case):
    runs = damaged_root / case / "runs"
    arms = ["--baseline", str(runs / f"{HICRA}_s*"), "--candidate", str(runs / f"{SEPA}_s*")]
    out = tmp_path / "sig.json"
    assert run_cli(["compare", *arms, "--resamples", "200", "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    warned = metrics_warnings(err, runs / VICTIM)
    assert len(warned) == 1, err  # one summary for the damaged file
    values = json.loads(out.read_text())["seed_level"]["correct_rate"]["runs"]["candidate"]
    expected = expected_window_mean(clean_campaign, case)
    if expected is None:  # not a regular file: the run is left out
        assert VICTIM not in values and "not a regular file" in warned[0]
    else:
        assert values[VICTIM] == pytest.approx(expected)
    assert run_cli(["litmus", *arms, "--profile", "smoke"]) in (0, 1, 2)
    assert "Traceback" not in capsys.readouterr().err


def test_status_survives_every_case(damaged_root):
    """`retrain status` over all the damaged campaigns at once, in a child with a 2 GiB address-space
    cap: an unbounded read (of /dev/zero) fails there instead of taking the machine's memory."""

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, "-m", "retrain", "status", str(damaged_root), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        preexec_fn=limit,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    campaigns = {c["name"]: c for c in json.loads(proc.stdout)["campaigns"]}
    assert set(campaigns) == set(CASES)
    for case, camp in campaigns.items():
        victim = next(r for r in camp["runs"] if r["name"] == VICTIM)
        rate = victim["correct_rate"]
        assert rate is None or 0 <= rate <= 1, case
        if case == "dev-zero":
            assert "not a regular file" in victim["log_problems"] and victim["steps_done"] == 0
            continue
        assert victim["steps_done"] == (9 if case.endswith("-step") else 10), case  # a row without a step is skipped
        assert victim["log_problems"].startswith(str(damaged_root / case / "runs" / VICTIM / "metrics.jsonl")), case
    # the rich table renders every damaged label and value
    text = subprocess.run(
        [sys.executable, "-m", "retrain", "status", str(damaged_root)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        preexec_fn=limit,
    )
    assert text.returncode == 0, text.stderr[-3000:]
    assert text.stdout.count("warning: ") == len(CASES)


@pytest.mark.slow
def test_report_and_plot_survive_every_case_at_once(clean_campaign, tmp_path, capsys):
    """One campaign with every kind of damage, each in its own run (seed i of maxrl+gtpo_sepa)."""
    seeds = list(range(1, len(CASES) + 1))
    camp = write_campaign(
        tmp_path / "campaign_all",
        conditions=(HICRA, SEPA),
        seeds=seeds,
        num_steps=10,
        lifts={SEPA: 0.1},
        squeeze=False,
        eval_every=5,
    )
    victims = {case: camp / "runs" / f"{SEPA}_s{seed}" for case, seed in zip(CASES, seeds, strict=True)}
    for case, run_dir in victims.items():
        damage(run_dir, case)
    assert run_cli(["report", str(camp), "--resamples", "200", "--baseline", HICRA]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    data = json.loads((camp / "report" / "report.json").read_text())
    for case, run_dir in victims.items():
        assert len(metrics_warnings(err, run_dir)) == 1, case  # once on the terminal
        assert sum(str(run_dir / "metrics.jsonl") in w for w in data["warnings"]) == 1, case  # once in the page
    html = (camp / "report" / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 4  # curves x2, mechanism, held-out accuracy
    assert "maxrl+gtpo_sepa\ufffd" in html  # the lone-surrogate label, shown
    assert run_cli(["plot", str(camp)]) == 0
    err = capsys.readouterr().err
    assert all(len(metrics_warnings(err, run_dir)) == 1 for run_dir in victims.values())
    assert run_cli(["plot", str(camp), "--metric", "eval_correct_rate"]) == 0
    assert (camp / "plots" / "eval_correct_rate.png").is_file()


# ---------------------------------------------------------------------------------------------
# The reader itself (imported in each test so the cases above also run against older code)


def test_one_summary_per_file_with_counts(tmp_path):
    from retrain.logfiles import LogProblems, read_columns, read_rows  # noqa: F401

    path = tmp_path / "metrics.jsonl"
    rows = [{"step": i, "correct_rate": 0.5, "mean_reward": 0.1} for i in range(200)]
    text = [json.dumps(r) for r in rows]
    for i in range(100):
        text[i] = text[i].replace('"correct_rate": 0.5', '"correct_rate": NaN')
    text[150] = text[150].replace('"mean_reward": 0.1', '"mean_reward": "high"')
    text += ["garbage"] * 7 + ['{"step": 3.5}']
    path.write_text("\n".join(text) + "\n")
    problems = LogProblems(path)
    cols = read_columns(path, ["correct_rate", "mean_reward"], problems=problems)
    assert len(cols.index) == 200 and int((cols.values["correct_rate"] == 0.5).sum()) == 100
    summary = problems.summary()
    assert summary == (
        f"{path}: skipped 8 lines (7 malformed JSON: lines 201, 202, 203, 204, 205, ...; 1 without an "
        f"integer step: line 208) and 101 values (correct_rate: 100 NaN or infinite; mean_reward: 1 "
        f"not a number)"
    )
    with pytest.warns(UserWarning) as caught:
        problems.warn()
    assert len(caught) == 1


def test_values_are_checked_by_name(tmp_path):
    from retrain.logfiles import LogProblems, read_columns, read_rows  # noqa: F401

    path = tmp_path / "m.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"step": 0, "correct_rate": 1.5, "loss": -3.0, "sepa_gate_open": True, "planning_token_fraction": -0.1},
                {
                    "step": 1,
                    "correct_rate": 1.0,
                    "loss": 1e200,
                    "sepa_gate_open": False,
                    "planning_token_fraction": 0.0,
                },
                {"step": 2, "correct_rate": True, "loss": None, "sepa_gate_open": 1, "planning_token_fraction": 0.2},
            ]
        )
        + "\n"
    )
    problems = LogProblems(path)
    cols = read_columns(path, ["correct_rate", "loss", "sepa_gate_open", "planning_token_fraction"], problems=problems)
    v = {k: [None if np.isnan(x) else x for x in a.tolist()] for k, a in cols.values.items()}
    assert cols.index.tolist() == [0, 1, 2]
    assert v == {
        "correct_rate": [None, 1.0, None],
        "loss": [-3.0, None, None],
        "sepa_gate_open": [1.0, 0.0, None],
        "planning_token_fraction": [None, 0.0, 0.2],
    }
    summary = problems.summary()
    assert "skipped 5 values (correct_rate: " in summary
    assert "1 outside [0, 1]" in summary and "1 true/false where a number belongs" in summary
    assert "loss: 1 beyond ±1e+150" in problems.summary()
    assert "sepa_gate_open: 1 not true/false" in problems.summary()


def test_fast_and_line_by_line_paths_agree(tmp_path):
    from retrain.logfiles import LogProblems, read_columns, read_rows  # noqa: F401

    """A clean block goes through the key scanner; a block with one odd line through json.loads per line.
    Both give the same columns."""
    rows = [
        {
            "step": i,
            "condition": "c",
            "correct_rate": i / 100,
            "eval_correct_rate": None if i % 3 else 0.25,
            "sepa_gate_open": i > 4,
        }
        for i in range(50)
    ]
    clean, odd = tmp_path / "clean.jsonl", tmp_path / "odd.jsonl"
    clean.write_text("".join(json.dumps(r) + "\n" for r in rows))
    odd.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 60, "nested": {"correct_rate": 9}}\n')
    keys = ["correct_rate", "eval_correct_rate", "sepa_gate_open", "absent"]
    a, b = read_columns(clean, keys), read_columns(odd, keys)
    assert a.index.tolist() == list(range(50)) and b.index.tolist() == [*range(50), 60]
    for k in keys:
        assert a.values[k].tolist() == pytest.approx(b.values[k][:50].tolist(), nan_ok=True), k
    assert b.values["correct_rate"][-1] != b.values["correct_rate"][-1]  # the nested key is not the metric


def test_a_repeated_key_reads_as_json_does(tmp_path):
    """JSON allows a key twice in one object and json.loads keeps the last value. The key scanner must not
    count matches per block and hand them out in order: here that put 0.9 on step 1."""
    from retrain.logfiles import read_columns

    path = tmp_path / "m.jsonl"
    path.write_text('{"step":0,"correct_rate":0.1,"correct_rate":0.9}\n{"step":1}\n{"step":2,"correct_rate":0.3}\n')
    cols = read_columns(path, ["correct_rate"])
    assert cols.index.tolist() == [0, 1, 2]
    assert [None if np.isnan(x) else x for x in cols.values["correct_rate"].tolist()] == [0.9, None, 0.3]
    path.write_text('{"step":0,"step":5,"v":1}\n{"step":1,"v":2}\n')  # the index repeated too
    cols = read_columns(path, ["v"])
    assert cols.index.tolist() == [1, 5] and cols.values["v"].tolist() == [2.0, 1.0]


def test_space_before_the_colon_is_json_too(tmp_path):
    """`{"step" : 0}` is valid JSON (another tool's writer, a hand edit); the scanner used to find no step
    in such rows and skip every one of them."""
    from retrain.logfiles import LogProblems, read_columns

    path = tmp_path / "m.jsonl"
    path.write_text('{"step" : 0, "correct_rate" :0.5}\n{"step"\t: 1, "correct_rate" : 0.25}\n')
    problems = LogProblems(path)
    cols = read_columns(path, ["correct_rate"], problems=problems)
    assert not problems, problems.summary()
    assert cols.index.tolist() == [0, 1] and cols.values["correct_rate"].tolist() == [0.5, 0.25]


_KEYS = ("step", "a_rate", "b", "bb", "x_b", 'q"b', "long_key_name_b")
_value = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.floats(0, 1),
    st.booleans(),
    st.integers(10**40, 10**41),
    st.sampled_from(['"b": 7', "a : b", '"b"', 'x\\"b":', "12:30", "b\\"]),
)
_pair = st.tuples(st.sampled_from(_KEYS), _value)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.lists(_pair, max_size=6), min_size=1, max_size=12), sep=st.sampled_from([":", ": ", ":  ", " : "])
)
def test_the_key_scanner_agrees_with_json_loads(tmp_path_factory, lines, sep):
    """Any block of flat objects (keys repeated or missing in any line, look-alike keys, strings that
    hold colons, quotes and keys, long numbers, any spacing): the columns are what json.loads (the last
    value of a repeated key wins) and `check_value` make of each line."""
    from retrain.logfiles import check_value, read_columns

    path = tmp_path_factory.mktemp("scan") / "m.jsonl"
    text = "".join("{" + ", ".join(f"{json.dumps(k)}{sep}{json.dumps(v)}" for k, v in pairs) + "}\n" for pairs in lines)
    path.write_text(text)
    keys = ["a_rate", "b", 'q"b']
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cols = read_columns(path, keys)
    want: dict[int, dict[str, float | None]] = {}
    for line in text.splitlines():
        row = json.loads(line)
        step, _ = check_value("step", row.get("step"))
        if step is None or step != int(step) or not 0 <= step < 2**53:
            continue
        want[int(step)] = {k: check_value(k, row.get(k))[0] for k in keys}
    assert cols.index.tolist() == sorted(want)
    got = {
        int(s): {k: None if np.isnan(v[i]) else float(v[i]) for k, v in cols.values.items()}
        for i, s in enumerate(cols.index.tolist())
    }
    assert got == want


def test_the_key_scanner_reads_clean_blocks_itself(tmp_path):
    """Clean rows (compact or json.dumps spacing, long values, the last value at the block's very end)
    are read by the scanner, not handed to json.loads, and give the same columns."""
    from retrain.logfiles import LogProblems, _fast_block, _KeyScan, _slow_block

    rows = [{"step": i, "v": i / 7, "big": 10**40 + i, "s": "a:b", "flag": i % 2 == 0, "t": None} for i in range(40)]
    keys = ["step", "v", "big", "flag", "t", "absent"]
    for text in (
        "".join(json.dumps(r) + "\n" for r in rows),
        "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows),
    ):
        block = memoryview(bytearray(text.encode()))
        fast = _fast_block(block, keys, {k: _KeyScan(k) for k in keys}, 1 << 20, LogProblems("m"))
        slow, _ = _slow_block(block, 1, keys, 1 << 20, LogProblems("m"))
        assert fast is not None
        for k in keys:
            assert fast[k].tolist() == pytest.approx(slow[k].tolist(), nan_ok=True), k


def test_last_row_per_step_wins(tmp_path):
    from retrain.logfiles import LogProblems, read_columns, read_rows  # noqa: F401

    path = tmp_path / "m.jsonl"
    path.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [{"step": 0, "v": 1.0}, {"step": 1, "v": 2.0}, {"step": 0, "v": 10.0}, {"step": 2, "v": None}]
        )
    )
    cols = read_columns(path, ["v"])
    assert cols.index.tolist() == [0, 1, 2]
    assert cols.values["v"].tolist()[:2] == [10.0, 2.0]


def test_long_lines_are_skipped_without_being_held(tmp_path):
    import tracemalloc

    from retrain.logfiles import LogProblems, read_columns, read_rows  # noqa: F401

    path = tmp_path / "m.jsonl"
    with open(path, "wb") as f:
        f.write(b'{"step": 0, "v": 1}\n')
        f.write(b'{"step": 1, "v": "' + b"x" * (24 << 20) + b'"}\n')  # 24 MiB line
        f.write(b'{"step": 2, "v": 3}\n')
        f.write(b"y" * (24 << 20))  # and a last line that never ends
    problems = LogProblems(path)
    tracemalloc.start()
    try:
        cols = read_columns(path, ["v"], problems=problems, max_line_bytes=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert cols.index.tolist() == [0, 2] and cols.values["v"].tolist() == [1.0, 3.0]
    assert "2 longer than 1 MiB: lines 2, 4" in problems.summary()
    assert peak < 40 << 20, peak  # blocks of a few MiB, never a whole line


def test_device_and_fifo_are_not_read(tmp_path):
    from retrain.logfiles import LogProblems, read_columns, read_rows  # noqa: F401

    link = tmp_path / "metrics.jsonl"
    link.symlink_to("/dev/zero")
    problems = LogProblems(link)
    assert read_rows(link, problems=problems) == []
    assert "not a regular file" in problems.summary()
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    problems = LogProblems(fifo)
    assert len(read_columns(fifo, ["v"], problems=problems).index) == 0  # returns at once, no writer needed
    assert "not a regular file" in problems.summary()


def test_labels_lose_lone_surrogates_and_control_characters(tmp_path):
    d = tmp_path / "x_s1"
    d.mkdir()
    (d / "metrics.jsonl").write_text('{"step": 0, "condition": "a\\ud800b\\u0007", "seed": 1, "correct_rate": 0.5}\n')
    with pytest.warns(UserWarning, match="condition"):
        run = load_run(d)
    assert run.condition == "a\ufffdb\ufffd"
    run.condition.encode("utf-8")  # printable, writable


def test_parallel_loading_gives_the_same_runs_and_one_warning_per_file(damaged_root, monkeypatch):
    """Big campaigns load in worker processes; the runs and the warnings are those of a serial load."""
    from retrain.analysis import load as load_mod

    camp = damaged_root / "nan-correct_rate"
    with pytest.warns(UserWarning) as serial_warnings:
        serial = load_mod.load_campaign_runs(camp)
    monkeypatch.setattr(load_mod, "PARALLEL_MIN_BYTES", 0)
    assert load_mod._workers(load_mod.campaign_run_dirs(camp)) >= (2 if len(os.sched_getaffinity(0)) > 1 else 1)
    with pytest.warns(UserWarning) as parallel_warnings:
        parallel = load_mod.load_campaign_runs(camp)
    assert [str(w.message) for w in serial_warnings] == [str(w.message) for w in parallel_warnings]
    assert len(serial_warnings) == 1
    for a, b in zip(serial, parallel, strict=True):
        assert (a.name, a.condition, a.seed, a.step_S.tolist()) == (b.name, b.condition, b.seed, b.step_S.tolist())
        assert a.columns.keys() == b.columns.keys()
        for k in a.columns:
            assert np.array_equal(a.columns[k], b.columns[k], equal_nan=True), k
