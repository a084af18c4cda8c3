"""`retrain explain`: what a config would do, without doing it.

    info = explain(load_config("sweep.toml"), Path("sweep.toml"))
    info["num_runs"], info["total_episodes"], info["warnings"]
    print(render_text(info))

Everything here is arithmetic on the config (no model, no torch), so it answers in well under a
second. Episodes are completions: a step samples batch_size x group_size of them, and each is at
most one datum (groups whose rewards all tie contribute none; docs/algorithms.md). Which warnings
apply comes from the registry entries of the chosen variants (what they consume); a plugin
transform or advantage is imported to read its entry, and one that cannot be imported is a warning
here (the run would fail on it).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from retrain.campaign.grid import expand_campaign
from retrain.config import Config, config_to_dict, config_to_toml
from retrain.errors import RetrainError
from retrain.logfiles import LogProblems, read_columns
from retrain.preflight import plugin_paths
from retrain.registry import Variant
from retrain.rl.sepa import linear_lambda
from retrain.rl.transforms import TRANSFORMS, TokenTransform

EMBEDDED_MODEL = "smollm2-135m"
CPU_MAX_LORA_RANK = 64
CPU_MAX_TOKENS = 1024
SEPA_SHORT_LAMBDA = 0.8  # below this final λ, SEPA was barely applied
LITMUS_MIN_SEEDS = 3  # fewer seeds per arm and litmus answers INCONCLUSIVE (docs/analysis.md)


def _cuda_present() -> bool:
    """A cheap guess (no torch import) at whether CUDA is usable here."""
    return Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi") is not None


def runs_on_cpu(cfg: Config, cuda_present: bool) -> bool:
    """Whether the local backend would train on the CPU."""
    if cfg.backend.backend != "local":
        return False
    return cfg.backend.device == "cpu" or (cfg.backend.device == "auto" and not cuda_present)


def final_lambda(cfg: Config) -> float:
    """The linear λ at the last step the run takes (max_steps − 1), by the controller's own formula."""
    return linear_lambda(cfg.training.max_steps - 1, cfg.sepa.steps, cfg.sepa.delay_steps)


def _lambda_falls_short(cfg: Config) -> bool:
    """The ramp is longer than the run, or ends well short of 1.

    The standard profile ends at λ ≈ 0.9 (delay 50 + 500 steps in a 500-step run), "near 1"; a
    campaign shortened to 100 steps with the same ramp ends at about 0.1.
    """
    final = final_lambda(cfg)
    return final < 1 and (cfg.sepa.steps > cfg.training.max_steps or final < SEPA_SHORT_LAMBDA)


def transform_entry(cfg: Config) -> Variant[TokenTransform] | str:
    """The chosen transform's registry entry (a plugin is imported), or why it cannot be read."""
    try:
        return TRANSFORMS.entry(cfg.algorithm.transform_mode)
    except RetrainError as e:
        return str(e)


def run_warnings(cfg: Config, on_cpu: bool) -> list[str]:
    """Likely mistakes in one run's config (legal, but probably not what was meant)."""
    t, out = cfg.training, []
    transform = cfg.algorithm.transform_mode
    entry = transform_entry(cfg)
    if isinstance(entry, str):
        out.append(f"{entry} (the run would stop here)")
    consumes = entry.consumes if not isinstance(entry, str) else frozenset()
    if t.group_size == 1:
        out.append(
            "group_size = 1: every group is uninformative (one reward cannot differ from itself), so no step ever trains"
        )
    if "sepa_lambda" in consumes:
        if cfg.sepa.delay_steps >= t.max_steps:
            out.append(
                f"sepa.delay_steps = {cfg.sepa.delay_steps} >= max_steps = {t.max_steps}: SEPA never starts, "
                f"so {transform} runs with λ = 0 throughout"
            )
        elif cfg.sepa.schedule == "linear" and _lambda_falls_short(cfg):
            out.append(
                f"sepa.delay_steps + sepa.steps = {cfg.sepa.delay_steps + cfg.sepa.steps} > max_steps = {t.max_steps}: "
                f"λ never reaches 1 (about {final_lambda(cfg):.3g} at the last step, {t.max_steps - 1}); "
                f"set sepa.steps <= {t.max_steps - 1 - cfg.sepa.delay_steps}"
            )
    if "planning_mask" in consumes and not cfg.planning.strategic_grams:
        out.append(f"planning.strategic_grams is empty: no planning tokens, so {transform} has nothing to act on")
    if "alpha" in consumes and cfg.hicra.alpha == 0:
        out.append(f"hicra.alpha = 0: HICRA adds nothing, so {transform} trains exactly like gtpo")
    if "beta" in consumes and cfg.gtpo.beta == 0:
        out.append("gtpo.beta = 0: GTPO weights are uniform (no uncertainty reweighting)")
    if cfg.model.name == EMBEDDED_MODEL and t.temperature >= 1:
        out.append(f"temperature = {t.temperature} on {EMBEDDED_MODEL}: at 1.0 this model mostly babbles; 0.7 works")
    if on_cpu and cfg.model.lora_rank > CPU_MAX_LORA_RANK:
        out.append(f"lora_rank = {cfg.model.lora_rank} on CPU: slow for no measured gain; try 16-32")
    if on_cpu and t.max_tokens > CPU_MAX_TOKENS:
        out.append(
            f"max_tokens = {t.max_tokens} on CPU: sampling that long takes minutes per step; the quickstart uses 32"
        )
    if t.save_every == 0 or t.save_every > t.max_steps:
        out.append(
            "no intermediate checkpoint (save_every = 0 or > max_steps): an interrupted run restarts from step 0"
        )
    if cfg.eval.every > t.max_steps:
        out.append(f"eval.every = {cfg.eval.every} > max_steps: held-out evaluation runs only at the end")
    if cfg.logging.wandb_project and importlib.util.find_spec("wandb") is None:
        out.append("logging.wandb_project is set but wandb is not installed: pip install 'retrain[wandb]'")
    if cfg.backend.backend == "tinker":
        from retrain.backends import tinker  # the SDK itself is not imported

        out += tinker.run_warnings(cfg)
        if importlib.util.find_spec("tinker") is None:
            out.append(f'backend = "tinker" but the Tinker SDK is not installed: {tinker.INSTALL}')
    return out


def _campaign_warnings(cfg: Config) -> list[str]:
    assert cfg.campaign is not None
    out = []
    if len(cfg.campaign.seeds) < LITMUS_MIN_SEEDS:
        out.append(
            f"{len(cfg.campaign.seeds)} seed(s) per condition: litmus needs >= {LITMUS_MIN_SEEDS} and will say "
            "INCONCLUSIVE; 3 seeds validate a setup, 8 make a standard campaign"
        )
    if cfg.campaign.executor == "ray" and importlib.util.find_spec("ray") is None:
        out.append("executor = \"ray\" but ray is not installed: pip install 'retrain[ray]'")
    return out


TAIL_STEPS = 50  # estimates come from a prior run's last steps (its current speed, not its warm-up)


def _tail_columns(log_dir: str | Path, keys: list[str]) -> dict[str, np.ndarray]:
    """The last `TAIL_STEPS` steps of `keys` in a prior run's metrics.jsonl ({} when there is none).

    Read with the analysis reader (retrain/logfiles.py): a damaged log (torn rows, NaN, huge
    numbers, a symlink to /dev/zero) gives skipped values and one warning, never a traceback."""
    path = Path(log_dir) / "metrics.jsonl"
    if not path.is_file():
        return {}
    problems = LogProblems(path)
    cols = read_columns(path, keys, problems=problems)
    problems.warn()
    return {k: v[-TAIL_STEPS:] for k, v in cols.values.items()}


def _median_positive(values: np.ndarray | None) -> float | None:
    """Median of the finite positive entries (a null, missing or skipped value is NaN), or None."""
    if values is None:
        return None
    values = values[np.isfinite(values) & (values > 0)]
    return float(np.median(values)) if values.size else None


def estimate_step_time_s(log_dir: str | Path) -> float | None:
    """Median `step_time_s` over a prior run's last steps (its metrics.jsonl), or None."""
    return _median_positive(_tail_columns(log_dir, ["step_time_s"]).get("step_time_s"))


def tokens_per_step(cfg: Config, log_dir: str | Path | None) -> dict[str, Any]:
    """What one step moves, in tokens (what a hosted service such as Tinker bills).

    sampled_max: batch_size x group_size x max_tokens (every completion runs to max_tokens);
    measured, from a prior run in log_dir (medians over its last rows): `sampled` completion tokens
    (mean_completion_tokens x batch x group) and `prompt_and_completion`, the prompt + completion
    tokens of every completion, which is what the training forward passes cover at most.
    """
    t = cfg.training
    out: dict[str, Any] = {"sampled_max": t.batch_size * t.group_size * t.max_tokens, "measured": None}
    keys = ["mean_completion_tokens", "batch_size", "group_size", "tokens_per_second", "step_time_s"]
    c = _tail_columns(log_dir, keys) if log_dir else {}
    sampled = _median_positive(c["mean_completion_tokens"] * c["batch_size"] * c["group_size"]) if c else None
    processed = _median_positive(c["tokens_per_second"] * c["step_time_s"]) if c else None
    if sampled is not None or processed is not None:
        out["measured"] = {"sampled": sampled, "prompt_and_completion": processed, "from": str(log_dir)}
    return out


def explain(cfg: Config, config_path: str | Path | None, cuda_present: bool | None = None) -> dict[str, Any]:
    """The dry-run summary as one JSON-able dict (what `retrain explain --json` prints)."""
    cuda = _cuda_present() if cuda_present is None else cuda_present
    datums_per_step = cfg.training.batch_size * cfg.training.group_size
    info: dict[str, Any] = {
        "kind": cfg.kind,
        "config_path": str(config_path) if config_path is not None else None,
        "config": config_to_dict(cfg),
        "datums_per_step": datums_per_step,
        "estimated_wall_time_s": None,
        "estimated_step_time_s": None,
        "backend": {"name": cfg.backend.backend, "settings": _backend_settings(cfg)},
        "tokens_per_step": tokens_per_step(cfg, cfg.resolved_log_dir if cfg.kind == "run" else None),
    }
    if cfg.kind == "campaign":
        specs = expand_campaign(cfg)
        runs = [
            {"name": s.name, "condition": s.label, "seed": s.seed, "max_steps": s.config.training.max_steps,
             "episodes": s.config.training.max_steps * datums_per_step}
            for s in specs
        ]  # fmt: skip
        labels = list(dict.fromkeys(s.label for s in specs))
        assert cfg.campaign is not None
        info["seeds"] = list(cfg.campaign.seeds)
        info["log_dir"] = f"{cfg.campaign.log_root}/campaign_<YYYYmmdd_HHMMSS>"
        warnings = _merge_condition_warnings(
            {s.label: run_warnings(s.config, runs_on_cpu(s.config, cuda)) for s in specs}
        ) + _campaign_warnings(cfg)
    elif cfg.kind == "run":
        runs = [{"name": cfg.run_name, "condition": cfg.condition, "seed": cfg.training.seed,
                 "max_steps": cfg.training.max_steps, "episodes": cfg.training.max_steps * datums_per_step}]  # fmt: skip
        labels = [cfg.condition]
        info["seeds"] = [cfg.training.seed]
        info["log_dir"] = cfg.resolved_log_dir
        warnings = run_warnings(cfg, runs_on_cpu(cfg, cuda))
        entry = transform_entry(cfg)
        if not isinstance(entry, str):
            info["transform_consumes"] = sorted(entry.consumes)
        step_time = estimate_step_time_s(cfg.resolved_log_dir)
        if step_time is not None:
            info["estimated_step_time_s"] = step_time
            info["estimated_wall_time_s"] = step_time * cfg.training.max_steps
    else:  # a standalone squeeze trains nothing
        runs, labels, warnings = [], [], []
        assert cfg.squeeze is not None
        if not cfg.squeeze.adapter_path:
            warnings.append(
                "[squeeze] without [campaign] is a standalone squeeze (it trains nothing) and needs "
                "adapter_path; add [campaign] to squeeze a campaign's first run, or remove [squeeze] to train"
            )
        info["seeds"] = []
        info["log_dir"] = None
    steps = [r["max_steps"] for r in runs]
    info.update(
        conditions=labels,
        runs=runs,
        num_runs=len(runs),
        steps_per_run=steps[0] if steps and len(set(steps)) == 1 else None,
        total_steps=sum(steps),
        episodes_per_run=runs[0]["episodes"] if runs and len({r["episodes"] for r in runs}) == 1 else None,
        total_episodes=sum(r["episodes"] for r in runs),
        warnings=warnings,
        plugins=plugin_paths(cfg),
    )
    if cfg.backpressure.enabled and runs:
        info["warnings"].append(
            "backpressure is enabled: batch_size changes during the run, so episode counts are nominal"
        )
    return info


def _backend_settings(cfg: Config) -> list[list[str]]:
    """[settings, what the backend does with them]: the tinker backend lists what reaches the service."""
    if cfg.backend.backend == "tinker":
        from retrain.backends.tinker import settings_used

        return [list(pair) for pair in settings_used(cfg)]
    return []


def probe_warnings(cfg: Config, num_prompts: int = 4, probe=None) -> tuple[list[dict[str, Any]], list[str]]:
    """Sample the base model (`retrain grams check`'s probe) for each distinct model/task/gram setting of the
    conditions that use planning tokens; warn where the planning-token fraction is ≈ 0 (the SEPA vs HICRA
    comparison would be void). Returns (probe reports, warnings). `probe` replaces the sampler in tests."""
    from retrain.void import planning_void_warning

    if probe is None:
        from retrain.grams.probe import probe_planning as probe
    if cfg.kind == "campaign":
        configs = [(s.label, s.config) for s in expand_campaign(cfg)]
    elif cfg.kind == "run":
        configs = [(cfg.condition, cfg)]
    else:
        return [], []
    settings: dict[str, tuple[list[str], Config]] = {}
    for label, run_cfg in configs:
        entry = transform_entry(run_cfg)
        if isinstance(entry, str) or "planning_mask" not in entry.consumes:
            continue
        key = json.dumps(
            [
                run_cfg.model.name,
                config_to_dict(run_cfg)["data"],
                list(run_cfg.planning.strategic_grams),
                run_cfg.training.max_tokens,
                run_cfg.training.temperature,
                run_cfg.training.seed,
            ]
        )
        labels, _ = settings.setdefault(key, ([], run_cfg))
        if label not in labels:
            labels.append(label)
    reports, warnings = [], []
    for labels, run_cfg in settings.values():
        report = probe(run_cfg, num_prompts=num_prompts)
        report["conditions"] = labels
        reports.append(report)
        warning = planning_void_warning(
            f"{', '.join(labels)} (probe of {report['completions']} base-model completions)",
            report["planning_token_fraction"],
        )
        if warning:
            warnings.append(warning)
    return reports, warnings


def _merge_condition_warnings(by_label: dict[str, list[str]]) -> list[str]:
    """One line per distinct warning; prefixed with the conditions it concerns unless it is all."""
    owners: dict[str, list[str]] = {}
    for label, messages in by_label.items():
        for message in messages:
            if label not in owners.setdefault(message, []):
                owners[message].append(label)
    return [msg if len(labels) == len(by_label) else f"{', '.join(labels)}: {msg}" for msg, labels in owners.items()]


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(round(seconds)), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h {m:02d}m" if hours else f"{m}m {s:02d}s"


def render_text(info: dict[str, Any], cfg: Config) -> str:
    """The human-readable explanation: resolved TOML, then the numbers, then warnings."""
    source = info["config_path"] or "built-in quickstart"
    lines = [
        f"# retrain explain: {source} ({info['kind']})",
        "# resolved config:",
        "",
        config_to_toml(cfg).rstrip(),
        "",
    ]
    lines.append("# summary")
    if info["kind"] == "squeeze":
        assert cfg.squeeze is not None
        lines += [f"#   squeeze {cfg.squeeze.adapter_path}: analysis only" if not cfg.squeeze.output_path
                  else f"#   squeeze {cfg.squeeze.adapter_path} -> {cfg.squeeze.output_path}"]  # fmt: skip
        lines += [f"#   - {w}" for w in info["warnings"]]
        return "\n".join(lines) + "\n"
    t = cfg.training
    rows = [
        ("condition(s)", ", ".join(info["conditions"])),
        (
            "datums/step",
            f"{info['datums_per_step']} ({t.batch_size} prompts x {t.group_size} completions; uninformative groups add none)",
        ),
        ("steps per run", str(info["steps_per_run"]) if info["steps_per_run"] is not None else "varies"),
        ("episodes per run", str(info["episodes_per_run"]) if info["episodes_per_run"] is not None else "varies"),
    ]
    if info["kind"] == "campaign":
        n_cond, n_seeds = len(info["conditions"]), len(info["seeds"])
        rows += [
            ("runs", f"{n_cond} condition(s) x {n_seeds} seed(s) = {info['num_runs']}"),
            ("total steps", str(info["total_steps"])),
            ("total episodes", str(info["total_episodes"])),
        ]
    if "transform_consumes" in info:
        rows.append(("transform uses", ", ".join(info["transform_consumes"]) or "no knobs"))
    tokens = info["tokens_per_step"]
    measured = tokens["measured"]
    rows.append(
        (
            "tokens/step",
            f"<= {tokens['sampled_max']:,} sampled ({t.batch_size} x {t.group_size} x max_tokens {t.max_tokens})"
            + (
                f"; measured {measured['sampled']:,.0f} sampled, {measured['prompt_and_completion']:,.0f} prompt + completion"
                if measured and measured["sampled"] and measured["prompt_and_completion"]
                else ""
            ),
        )
    )
    rows.append(("log dir", str(info["log_dir"])))
    if info["estimated_wall_time_s"] is not None:
        rows.append(
            (
                "est. wall time",
                f"{_duration(info['estimated_wall_time_s'])} (median step {info['estimated_step_time_s']:.1f}s from {info['log_dir']}/metrics.jsonl)",
            )
        )
    width = max(len(k) for k, _ in rows)
    lines += [f"#   {k:<{width}}  {v}" for k, v in rows]
    if info["backend"]["settings"]:
        lines += ["", f"# backend {info['backend']['name']}: what each setting does"]
        lines += [f"#   {what}\n#       -> {how}" for what, how in info["backend"]["settings"]]
    if info["kind"] == "campaign":
        lines += ["", "# run matrix (condition x seed)"]
        width = max(len(c) for c in info["conditions"])
        for label in info["conditions"]:
            seeds = " ".join(str(r["seed"]) for r in info["runs"] if r["condition"] == label)
            lines.append(f"#   {label:<{width}}  seeds {seeds}")
    if info.get("plugins"):
        lines += [
            "",
            "# plugins: Python code this config imports and runs with your permissions, as",
            "# `python FILE.py` would; run only configs whose plugins you trust",
        ]
        lines += [f"#   {p['key']} = {p['path']}" for p in info["plugins"]]
    for report in info.get("probe", []):
        hits = [g for g, h in sorted(report["gram_hits"].items(), key=lambda gh: -gh[1]) if h]
        matched = ", ".join(repr(g) for g in hits) if hits else "none"
        lines += [
            "",
            (
                f"# planning probe ({', '.join(report['conditions'])}): {report['prompts']} prompts x "
                f"{report['samples_per_prompt']} base-model completions"
            ),
            (
                f"#   planning_token_fraction {report['planning_token_fraction']:.4f} "
                f"({report['planning_tokens']} of {report['tokens']} tokens); grams matched: {matched}"
            ),
        ]
    lines += ["", "# warnings" if info["warnings"] else "# warnings: none"]
    lines += [f"#   - {w}" for w in info["warnings"]]
    return "\n".join(lines) + "\n"
