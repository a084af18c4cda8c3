"""A transform added as a plugin in ONE file goes through config load, `retrain explain` and a tiny
run, handed exactly the knobs it asks for (its keyword-only parameters): never λ unless it asks."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from runutil import read_jsonl, write_tiny_config

from retrain.cli import main
from retrain.config import load_config
from retrain.run import train

PLUGIN = textwrap.dedent('''
    """My transforms: one function each, nothing else to register."""

    def planning_boost(advantage, h, planning_mask, *, beta):
        """Planning tokens get 2A, the others A·(1 + β)."""
        return [2.0 * advantage if m else advantage * (1.0 + beta) for m in planning_mask]

    def lambda_scaled(advantage, h, planning_mask, *, sepa_lambda):
        """A·(1 + λ) on every token."""
        return [advantage * (1.0 + sepa_lambda)] * len(h)
''')


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    (tmp_path / "my_transforms.py").write_text(PLUGIN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "my_transforms", raising=False)
    yield tmp_path
    sys.modules.pop("my_transforms", None)


def _explain(capsys, path: Path) -> dict:
    assert main(["explain", "--json", str(path)]) == 0
    return json.loads(capsys.readouterr().out)


def test_explain_reads_what_a_plugin_transform_consumes(plugin_dir, capsys):
    boost = write_tiny_config(plugin_dir / "boost.toml", plugin_dir / "b", transform="my_transforms:planning_boost")
    info = _explain(capsys, boost)
    assert info["transform_consumes"] == ["beta"]
    assert not any("λ" in w or "my_transforms" in w for w in info["warnings"])  # no λ: no SEPA ramp warning
    scaled = write_tiny_config(
        plugin_dir / "scaled.toml",
        plugin_dir / "s",
        transform="my_transforms:lambda_scaled",
        extra="\n[gtpo]\nbeta = 0.0\n",
    )
    info = _explain(capsys, scaled)
    assert info["transform_consumes"] == ["sepa_lambda"]
    assert not any("gtpo.beta = 0" in w for w in info["warnings"])  # it does not use β
    missing = write_tiny_config(plugin_dir / "missing.toml", plugin_dir / "m", transform="my_transforms:nope")
    info = _explain(capsys, missing)
    assert any("has no attribute 'nope'" in w and "the run would stop here" in w for w in info["warnings"])


@pytest.mark.slow
def test_a_plugin_transform_runs_and_is_never_handed_lambda(plugin_dir):
    cfg = load_config(
        write_tiny_config(plugin_dir / "c.toml", plugin_dir / "run", steps=3, transform="my_transforms:planning_boost")
    )
    assert cfg.algorithm.transform_mode == "my_transforms:planning_boost"
    assert cfg.sepa.steps == 3 and cfg.sepa.delay_steps == 0  # gtpo_sepa would get λ = step / 3
    assert train(cfg) == 0
    rows = read_jsonl(plugin_dir / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert all(r["sepa_lambda"] == 0.0 for r in rows)
    assert all(r["post_exec_entropy_var"] == r["exec_entropy_var"] for r in rows)  # nothing pooled
    assert sum(r["num_datums"] for r in rows) > 0 and any(r["loss"] is not None for r in rows)
    assert rows[0]["condition"] == "maxrl+my_transforms:planning_boost"


def test_the_contributing_example_is_one_function_and_one_entry():
    """The "Adding a transform" snippet in CONTRIBUTING.md registers and computes what it says."""
    from retrain.registry import Registry
    from retrain.rl import transforms

    text = (Path(__file__).resolve().parents[1] / "CONTRIBUTING.md").read_text(encoding="utf-8")
    code = text.split("### A transform", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    fresh = Registry(
        "transform",
        "[algorithm].transform_mode",
        transforms.transform_variant,
        validate_entry=transforms.TRANSFORMS.validate_entry,
    )
    exec(code, {**vars(transforms), "TRANSFORMS": fresh})  # noqa: S102 -- as if written in rl/transforms.py
    entry = fresh.entry("gtpo_plan_only")
    assert entry.consumes == {"beta", "planning_mask"}
    # h = [1, 3], mean 2, β = 0.5: w = [0.75, 1.25]; only the planning token keeps its credit
    assert entry.load()(1.0, [1.0, 3.0], [0, 1], beta=0.5) == [0.0, 1.25]
