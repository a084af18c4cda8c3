"""The README's commands keep working: its two set-up commands exist as written, and every verb it
lists answers --help."""

import re
from pathlib import Path

import pytest

from retrain.cli import main

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def test_two_commands_point_at_real_scripts():
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    assert "bash scripts/setup.sh && .venv/bin/retrain" in blocks[0]
    assert blocks[1].strip() == "bash .ci/run"
    assert (ROOT / "scripts" / "setup.sh").is_file() and (ROOT / ".ci" / "run").is_file()
    assert "bash scripts/setup.sh --dev" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize(
    "verb",
    sorted(
        set(re.findall(r"^\| `retrain ([a-z]+)", README, flags=re.M)) | {"plot", "compare", "litmus", "power", "report"}
    ),
)
def test_every_listed_verb_answers_help(verb, capsys):
    assert main([verb, "--help"]) == 0
    assert "usage:" in capsys.readouterr().out
