"""Docs are checked against the code: every metric the trainer writes is documented."""

from pathlib import Path

import pytest
from runutil import read_jsonl

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_every_metric_key_is_documented(tmp_path):
    from runutil import write_tiny_config

    from retrain.config import load_config
    from retrain.run import train

    log_dir = tmp_path / "run"
    assert train(load_config(write_tiny_config(tmp_path / "c.toml", log_dir, steps=2))) == 0
    doc = (ROOT / "docs" / "metrics.md").read_text()
    keys = set().union(*(row.keys() for row in read_jsonl(log_dir / "metrics.jsonl")))
    missing = sorted(k for k in keys if f"`{k}`" not in doc)
    assert not missing, f"document these metrics in docs/metrics.md: {missing}"


def test_the_examples_in_design_md_run():
    """docs/design.md's `>>>` examples (the value check shared by the config and SEPAController) hold."""
    import doctest

    result = doctest.testfile(str(ROOT / "docs" / "design.md"), module_relative=False)
    assert result.failed == 0 and result.attempted >= 2
