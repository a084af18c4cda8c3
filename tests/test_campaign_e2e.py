"""Campaigns end to end on the tiny random model: layout, manifest, per-run logs, every executor,
kill + resume, the guide's analysis snippets, wandb naming, auto-squeeze.

All campaigns here are 2 conditions x 2 seeds x 3 steps (1 condition for Ray) of batch 2 x group 4.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from runutil import read_jsonl, tiny_campaign_base, without_timing

from retrain.campaign.manifest import read_manifest
from retrain.campaign.runner import resume_campaign, run_campaign
from retrain.config import load_config

TESTS_DIR = Path(__file__).parent
STEPS = 3
CONDITIONS = ["grpo+none", "maxrl+gtpo_sepa~sepa.steps=2"]
NAMES = [f"{c}_s{s}" for c in CONDITIONS for s in (11, 12)]

CAMPAIGN_TOML = (
    tiny_campaign_base(1)
    + """
[campaign]
seeds = {seeds}
max_steps = {steps}
executor = "{executor}"
max_workers = 2
log_root = "{root}"

[[campaign.conditions]]
advantage_mode = "grpo"
transform_mode = "none"
{more_conditions}
[squeeze]
min_variance_retention = 0.9
"""
)
SEPA_CONDITION = """
[[campaign.conditions]]
advantage_mode = "maxrl"
transform_mode = "gtpo_sepa"
"sepa.steps" = 2
"""


def write_campaign(tmp_path: Path, executor: str = "sequential", seeds=(11, 12), sepa=True, extra="") -> Path:
    path = tmp_path / f"{executor}.toml"
    path.write_text(
        CAMPAIGN_TOML.format(
            seeds=list(seeds),
            steps=STEPS,
            executor=executor,
            root=(tmp_path / "logs").as_posix(),
            more_conditions=SEPA_CONDITION if sepa else "",
        )
        + extra
    )
    return path


def the_campaign(tmp_path: Path) -> Path:
    (campaign,) = (tmp_path / "logs").glob("campaign_*")
    return campaign


@pytest.fixture(autouse=True)
def _plugins_importable_in_children(monkeypatch):
    """Child processes (processes/Ray executors) must import the test reward plugin, as a user's would."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The campaign run in-process, sequentially, without interruption."""
    tmp = tmp_path_factory.mktemp("reference")
    path = write_campaign(tmp)
    assert run_campaign(load_config(path), str(path)) == 0
    return the_campaign(tmp)


def metrics_by_run(campaign: Path) -> dict[str, list[dict]]:
    return {d.name: read_jsonl(d / "metrics.jsonl") for d in sorted((campaign / "runs").iterdir())}


def test_sequential_layout_manifest_and_logs(reference: Path):
    assert {p.name for p in reference.iterdir()} == {"campaign.toml", "manifest.json", "runs", ".retrain.lock"}
    doc = read_manifest(reference)
    assert doc["conditions"] == CONDITIONS and doc["seeds"] == [11, 12] and doc["max_steps"] == STEPS
    assert [r["name"] for r in doc["runs"]] == NAMES
    for r in doc["runs"]:
        run_dir = reference / r["log_dir"]
        assert r["state"] == "completed" and r["returncode"] == 0
        for rel in (
            "config.toml",
            "config.json",
            "run.json",
            "metrics.jsonl",
            "trainer_state.json",
            "emergence/steps.jsonl",
            "emergence/generations.jsonl",
            "adapter/final/adapter_model.safetensors",
        ):
            assert (run_dir / rel).exists(), (r["name"], rel)
        assert (reference / r["adapter_dir"] / "final" / "adapter_config.json").exists()  # own adapter dir
        info = json.loads((run_dir / "run.json").read_text())
        assert (info["status"], info["step"], info["condition"], info["seed"]) == (
            "completed",
            STEPS - 1,
            r["condition"],
            r["seed"],
        )
        cfg = load_config(run_dir / "config.toml")
        assert cfg.training.max_steps == STEPS and cfg.training.seed == r["seed"]
        assert cfg.sepa.steps == (2 if "sepa" in r["condition"] else 500)
    # auto-squeeze on the first completed run (rank 4 adapter → table of ranks 1, 2, 4)
    squeeze = doc["squeeze"]
    assert squeeze["run"] == NAMES[0] and squeeze["source_rank"] == 4
    assert [row["rank"] for row in squeeze["table"]] == [1, 2, 4] and squeeze["recommended_rank"] in (1, 2, 4)
    assert squeeze["table"][-1]["mean"] == pytest.approx(1.0)


def test_guide_snippets_read_the_campaign_as_written(reference: Path):
    """The plot_campaign / compare_entropy loops of docs/research-guide.md, verbatim in spirit."""
    by_condition = defaultdict(list)
    for run_dir in sorted((reference / "runs").iterdir()):
        with open(run_dir / "metrics.jsonl") as f:
            metrics = [json.loads(line) for line in f if line.strip()]
        for m in metrics:
            assert {"condition", "step", "correct_rate", "exec_entropy_var"} <= set(m)
        assert [m["step"] for m in metrics] == list(range(STEPS))
        by_condition[metrics[0]["condition"]].append(metrics)
    assert sorted(by_condition) == sorted(CONDITIONS)
    assert all(len(runs) == 2 for runs in by_condition.values())
    assert {m[0]["seed"] for m in by_condition["grpo+none"]} == {11, 12}


def test_status_of_a_finished_campaign(reference: Path):
    from retrain.campaign.status import collect

    (c,) = collect(reference.parent)["campaigns"]
    assert c["state"] == "done" and c["counts"] == {"done": 4}
    cell = c["matrix"]["grpo+none"]["11"]
    assert cell["steps_done"] == STEPS and cell["max_steps"] == STEPS and cell["state"] == "done"
    assert cell["correct_rate"] == read_jsonl(reference / "runs/grpo+none_s11/metrics.jsonl")[-1]["correct_rate"]


@pytest.mark.slow
def test_processes_executor_matches_sequential(tmp_path: Path, reference: Path):
    path = write_campaign(tmp_path, "processes")
    assert run_campaign(load_config(path), str(path)) == 0
    campaign = the_campaign(tmp_path)
    doc = read_manifest(campaign)
    assert doc["executor"] == "processes"
    for r in doc["runs"]:
        assert r["state"] == "completed" and r["returncode"] == 0
        assert r["stdout"] == f"{r['log_dir']}/stdout.log" and r["stderr"] == f"{r['log_dir']}/stderr.log"
        assert "Training complete" in (campaign / r["stdout"]).read_text()
    got, want = metrics_by_run(campaign), metrics_by_run(reference)
    assert list(got) == list(want)
    for name in got:  # the executor does not change what a run computes
        assert [r["step"] for r in got[name]] == list(range(STEPS))
        assert _close(without_timing(got[name]), without_timing(want[name])), name


def _close(a, b, tol=1e-4) -> bool:
    """Equal rows, floats within `tol` (children run with fewer CPU threads: summation order differs)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= tol * max(1.0, abs(a), abs(b))
    return a == b


@pytest.mark.slow
def test_ray_executor_local_cluster(tmp_path: Path):
    pytest.importorskip("ray")
    path = write_campaign(tmp_path, "ray", sepa=False)
    assert run_campaign(load_config(path), str(path)) == 0
    campaign = the_campaign(tmp_path)
    doc = read_manifest(campaign)
    assert [r["name"] for r in doc["runs"]] == ["grpo+none_s11", "grpo+none_s12"]
    for r in doc["runs"]:
        assert r["state"] == "completed"
        assert [m["step"] for m in read_jsonl(campaign / r["log_dir"] / "metrics.jsonl")] == list(range(STEPS))
        assert "Training complete" in (campaign / r["stdout"]).read_text()
    import ray

    assert not ray.is_initialized()


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert proc.poll() is None, "the campaign ended before it could be stopped"
        assert time.time() < deadline, "timed out waiting for the campaign"
        time.sleep(0.01)  # tiny runs take ~0.1 s a step: poll fast to kill mid-run


def _rows(path: Path) -> int:
    try:
        return sum(1 for line in path.read_text().splitlines() if line.strip())
    except OSError:
        return 0


def _assert_complete_and_equal(campaign: Path, reference: Path) -> None:
    got, want = metrics_by_run(campaign), metrics_by_run(reference)
    assert list(got) == list(want)
    for name, rows in got.items():
        assert [r["step"] for r in rows] == list(range(STEPS)), name  # none lost, none duplicated
        assert _close(without_timing(rows), without_timing(want[name])), name
    assert [r["state"] for r in read_manifest(campaign)["runs"]] == ["completed"] * len(NAMES)


@pytest.mark.slow
def test_sigkilled_campaign_resumes_to_the_uninterrupted_result(tmp_path: Path, reference: Path):
    path = write_campaign(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "retrain", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        # Kill while the second run is mid-way: the first completed, the second has logged a step.
        _wait_for(
            lambda: (
                any((tmp_path / "logs").glob("campaign_*/runs/grpo+none_s12/metrics.jsonl"))
                and _rows(next((tmp_path / "logs").glob("campaign_*/runs/grpo+none_s12/metrics.jsonl"))) >= 1
            ),
            proc,
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    campaign = the_campaign(tmp_path)
    states = {r["name"]: r["state"] for r in read_manifest(campaign)["runs"]}
    assert states["grpo+none_s11"] == "completed" and states[NAMES[3]] == "pending"
    # Usually killed mid-run; on a fast machine s12's three tiny steps can finish between two polls.
    assert states["grpo+none_s12"] in ("running", "completed")

    from retrain.campaign.status import collect

    if states["grpo+none_s12"] == "running":
        (c,) = collect(campaign.parent)["campaigns"]
        assert c["matrix"]["grpo+none"]["12"]["state"] == "stale"  # its process is gone

    assert resume_campaign(campaign) == 0
    _assert_complete_and_equal(campaign, reference)
    assert read_manifest(campaign)["squeeze"]["run"] == "grpo+none_s11"


@pytest.mark.slow
def test_ctrl_c_on_processes_campaign_then_retrain_resume(tmp_path: Path, reference: Path):
    path = write_campaign(tmp_path, "processes")
    proc = subprocess.Popen(
        [sys.executable, "-m", "retrain", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _wait_for(lambda: any(_rows(p) >= 1 for p in (tmp_path / "logs").glob("campaign_*/runs/*/metrics.jsonl")), proc)
        proc.send_signal(signal.SIGINT)  # to the runner only: it must stop its children itself
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    campaign = the_campaign(tmp_path)
    assert "retrain resume" in out
    doc = read_manifest(campaign)
    assert "running" not in {r["state"] for r in doc["runs"]}
    # Runs in flight get a grace second to stop on their own; tiny runs may finish in it, so the
    # campaign is left with interrupted and/or pending runs, never all completed.
    assert {"interrupted", "pending"} & {r["state"] for r in doc["runs"]}
    for r in doc["runs"]:  # no child outlived the runner
        info_path = campaign / r["log_dir"] / "run.json"
        if info_path.exists():
            info = json.loads(info_path.read_text())
            assert info["status"] in ("interrupted", "completed"), info

    done = subprocess.run(
        [sys.executable, "-m", "retrain", "resume", str(campaign)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    _assert_complete_and_equal(campaign, reference)


class FakeWandb:
    """Stands in for the `wandb` module: records every `init` and what each run logs."""

    class Run:
        def __init__(self, kwargs):
            self.kwargs, self.logged, self.summary, self.finished = kwargs, [], {}, False

        def define_metric(self, *args, **kwargs):
            pass

        def log(self, data, step=None):
            self.logged.append(data)

        def finish(self):
            self.finished = True

    class Table:
        def __init__(self, columns, data):
            self.columns, self.data = columns, data

    def __init__(self):
        import importlib.machinery

        self.__spec__ = importlib.machinery.ModuleSpec("wandb", None)  # libraries probe sys.modules["wandb"]
        self.runs: list[FakeWandb.Run] = []

    def init(self, **kwargs):
        self.runs.append(self.Run(kwargs))
        return self.runs[-1]


@pytest.mark.slow
def test_wandb_names_groups_and_tags_per_run_and_squeeze_run(tmp_path: Path, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    path = write_campaign(tmp_path, seeds=(11,), extra='\n[logging]\nwandb_project = "sweep"\nwandb_mode = "offline"\n')
    assert run_campaign(load_config(path), str(path)) == 0
    runs = {r.kwargs["name"]: r for r in fake.runs}
    assert set(runs) == {f"{label}_s11" for label in CONDITIONS} | {"squeeze-analysis"}
    for label in CONDITIONS:  # "group by condition" in the wandb UI gives one line per condition
        kw = runs[f"{label}_s11"].kwargs
        assert kw["project"] == "sweep" and kw["group"] == label and kw["tags"][:2] == [label, "seed11"]
        assert kw["config"]["condition"] == label and kw["config"]["seed"] == 11
        assert [d["step"] for d in runs[f"{label}_s11"].logged] == list(range(STEPS))
        assert "train/rewards/correct_rate" in runs[f"{label}_s11"].logged[0]
    squeeze = runs["squeeze-analysis"]
    assert squeeze.finished and squeeze.kwargs["project"] == "sweep"
    assert (
        squeeze.summary["squeeze/recommended_rank"]
        == read_manifest(the_campaign(tmp_path))["squeeze"]["recommended_rank"]
    )
