"""Configuration: one typed model per TOML table, loading, overrides and validation.

A config is a TOML file; every table maps to one frozen pydantic model below and every key has a
one-line `description` that doubles as the reference docs (`config_reference_markdown`) and the
comments of `retrain init`. Defaults are the research guide's standard profile (Qwen3-4B, MATH,
maxrl + gtpo_sepa, 500 steps, 8 prompts x 16 completions); `quickstart_config()` is the built-in
CPU profile used when there is no TOML at all.

    cfg = load_config("retrain.toml", ["--training.lr", "1e-4", "--seed", "7"])
    cfg.training.lr, cfg.condition            # 0.0001, "maxrl+gtpo_sepa"
    cfg.with_overrides({"sepa.steps": 100})   # a validated copy

Every problem (unknown table or key, wrong type, out of range, TOML syntax, bad override,
cross-field inconsistency) is collected and raised together as one `ConfigError`, each problem
reading like `[training].lr: must be > 0, got -1`. Pydantic's own wording never reaches the user.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import annotated_types
import tomli_w
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from retrain.rl.planning import DEFAULT_STRATEGIC_GRAMS  # SPEC §3.4: one list, owned by planning.py
from retrain.backends.base import LOCAL_OPTIONS
from retrain.errors import ConfigError

DEFAULT_CONFIG_FILE = "retrain.toml"
MAX_SEED = 2**32 - 1  # numpy's seeding range; torch accepts it too

# `module:function` or `package.module.attr`: how plugins (advantage/transform fns, data sources,
# backends, custom rewards) are named in TOML. Resolved lazily by whoever uses them.
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_PLUGIN_RE = re.compile(rf"{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*|{_IDENT}(\.{_IDENT})+")
_CALLABLE_RE = re.compile(rf"{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*")
_DEVICE_RE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")

DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


DEFAULT_CAMPAIGN_SEEDS = [42, 101, 202, 303, 404, 505, 606, 707]

# SPEC §5: the conditions a campaign runs when it lists none.
ABLATION_CONDITIONS = [
    ("grpo", "none"),
    ("maxrl", "none"),
    ("maxrl", "gtpo"),
    ("maxrl", "gtpo_hicra"),
    ("maxrl", "gtpo_sepa"),
]

# The built-in CPU quickstart, as overrides on the standard profile. The one place these numbers
# live: `quickstart_config()` and `retrain init --template quickstart` both read it. SPEC §11:
# SmolLM2-135M learns 2-operand addition (held-out 0.35 -> 0.70 in 40 steps at ~10 s/step).
QUICKSTART_OVERRIDES: dict[str, Any] = {
    "model.name": "smollm2-135m",
    "model.lora_rank": 16,
    "model.lora_alpha": 32,
    "algorithm.advantage_mode": "maxrl",
    "algorithm.transform_mode": "gtpo_sepa",
    "training.seed": 42,
    "training.max_steps": 40,
    "training.batch_size": 2,
    "training.group_size": 8,
    "training.max_tokens": 32,
    "training.temperature": 0.7,  # at 1.0 this model mostly babbles (SPEC §11)
    "training.lr": 1e-4,
    "training.save_every": 20,
    "sepa.steps": 40,
    "sepa.delay_steps": 5,
    "sepa.warmup": 10,
    "data.source": "arithmetic",
    "data.max_operand": 50,
    "data.operations": ["+"],
    "eval.every": 5,
    "eval.num_examples": 40,
    "logging.log_dir": "logs/quickstart",
}

# Short CLI aliases for the overrides people type most (SPEC §1).
ALIASES = {
    "seed": "training.seed",
    "max-steps": "training.max_steps",
    "lr": "training.lr",
    "wandb-project": "logging.wandb_project",
}

# Keys a campaign condition may not override: the grid sets them itself (grid.expand_campaign).
_GRID_OWNED_KEYS = {
    "algorithm.advantage_mode": "put advantage_mode directly in the condition",
    "algorithm.transform_mode": "put transform_mode directly in the condition",
    "training.seed": "seeds come from [campaign].seeds",
    "training.max_steps": "every run of a campaign has the same length; set [campaign].max_steps",
    "logging.condition": "the condition label is derived from the condition",
    "logging.log_dir": "the campaign places each run under runs/<condition>_s<seed>",
}


# ---------------------------------------------------------------------------------------------
# Field helpers
# ---------------------------------------------------------------------------------------------


def _choice(default: Any, choices: Sequence[str], description: str, *, plugin: bool = False, **kw: Any) -> Any:
    """A string field from a closed set that also accepts a plugin path when `plugin`.

    Closed sets without plugins are `Literal`s; this is for the ones a user can extend.
    """
    extra = {"choices": list(choices), "plugin": plugin}
    return Field(default, description=description, json_schema_extra=extra, **kw)


def _fmt_choices(choices: Sequence[str], plugin: bool) -> str:
    listed = ", ".join(repr(c) for c in choices)
    return f"{listed} or a plugin path 'module:function'" if plugin else listed


class _Table(BaseModel):
    """Base of every table: strict types, unknown keys rejected, immutable."""

    # strict: "false" is not a bool and 1.5 is not an int (an int is still fine for a float).
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _check_choice(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        extra = field.json_schema_extra if field else None
        if not isinstance(extra, dict) or "choices" not in extra or not isinstance(value, str):
            return value
        choices, plugin = extra["choices"], bool(extra["plugin"])
        if value in choices or (plugin and _PLUGIN_RE.fullmatch(value)):
            return value
        raise ValueError(f"must be one of {_fmt_choices(choices, plugin)}, got {value!r}{_suggest(value, choices)}")


def _suggest(word: str, options: Sequence[str], quote: bool = True) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    if not close:
        return ""
    return f"; did you mean {close[0]!r}?" if quote else f"; did you mean {close[0]}?"


# ---------------------------------------------------------------------------------------------
# The tables (SPEC §2)
# ---------------------------------------------------------------------------------------------


class ModelConfig(_Table):
    """The policy model and its LoRA adapter."""

    name: str = Field(
        "Qwen/Qwen3-4B-Instruct-2507",
        min_length=1,
        description="Hugging Face model id or local path; 'smollm2-135m' is the embedded CPU model",
    )
    revision: str = Field("", description="model revision (branch, tag or commit); '' = the default branch")
    lora_rank: int = Field(32, ge=1, description="LoRA rank r")
    lora_alpha: float = Field(0, ge=0, description="LoRA alpha; 0 = 2 x lora_rank")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES),
        min_length=1,
        description="modules that get a LoRA adapter (default: all attention and MLP projections)",
    )

    @property
    def alpha(self) -> float:
        """The effective LoRA alpha: `lora_alpha`, or 2·rank when it is 0."""
        return self.lora_alpha or 2.0 * self.lora_rank


class AlgorithmConfig(_Table):
    """Credit assignment: episode advantages, then token-level transforms."""

    advantage_mode: str = _choice(
        "maxrl", ["grpo", "maxrl"], "episode advantages: grpo (r - mean) or maxrl ((r - mean) / mean)", plugin=True
    )
    transform_mode: str = _choice(
        "gtpo_sepa",
        ["none", "gtpo", "gtpo_hicra", "gtpo_sepa"],
        "token-level advantage transform applied after the episode advantage",
        plugin=True,
    )
    uncertainty_kind: Literal["surprisal", "predictive_variance", "shannon_entropy"] = Field(
        "surprisal", description="per-token uncertainty h_t used by the GTPO weights and SEPA pooling"
    )


class TrainingConfig(_Table):
    """The RL loop: sizes, sampling, optimiser and loss."""

    seed: int = Field(42, ge=0, le=MAX_SEED, description="seed for data order, sampling and LoRA init")
    max_steps: int = Field(500, ge=1, description="optimizer steps in the run")
    batch_size: int = Field(8, ge=1, description="prompts per step")
    group_size: int = Field(16, ge=1, description="completions sampled per prompt (a group)")
    max_tokens: int = Field(10240, ge=1, description="maximum completion length in tokens")
    temperature: float = Field(0.7, gt=0, description="sampling temperature (the loss uses the same scaling)")
    top_p: float = Field(1.0, ge=0, le=1, description="nucleus sampling mass; 1 = off")
    lr: float = Field(4e-5, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    clip_eps: float = Field(0.0, ge=0, description="PPO ratio clip epsilon; 0 = no clipping")
    clip_eps_high: float = Field(0.0, ge=0, description="upper clip epsilon; 0 = same as clip_eps")
    kl_beta: float = Field(0.0, ge=0, description="weight of the k3 KL to the base model; 0 = no reference term")
    loss_agg: Literal["token_mean", "seq_mean"] = Field(
        "token_mean", description="token_mean: mean over all completion tokens; seq_mean: mean of per-sequence means"
    )
    grad_clip_norm: float = Field(1.0, ge=0, description="gradient norm clip; 0 = off")
    save_every: int = Field(20, ge=0, description="checkpoint every N steps; 0 = only the final adapter")


class GTPOConfig(_Table):
    """GTPO: reweight token advantages by relative uncertainty."""

    beta: float = Field(0.1, ge=0, description="strength of w_t = max(0, 1 + beta (h_t / mean(h) - 1)); 0 = uniform")


class HICRAConfig(_Table):
    """HICRA: amplify advantages on planning tokens."""

    alpha: float = Field(0.2, ge=0, description="planning-token boost A_t += alpha |A_t|; 0 = plain GTPO")


class SEPAConfig(_Table):
    """SEPA: pool execution-token uncertainty with a strength lambda that ramps 0 -> 1."""

    steps: int = Field(500, ge=0, description="steps for the linear lambda ramp (after delay_steps); 0 = lambda stays 0")
    schedule: Literal["linear", "auto"] = Field(
        "linear", description="linear ramp, or auto (variance-driven, never below the linear ramp)"
    )
    delay_steps: int = Field(50, ge=0, description="steps before the linear ramp starts")
    correct_rate_gate: float = Field(
        0.1, ge=0, le=1, description="lambda stays 0 until a batch's correct_rate reaches this; 0 = open from the start"
    )
    ema_decay: float = Field(0.99, ge=0, lt=1, description="auto schedule: EMA decay of the execution-uncertainty variance")
    var_threshold: float = Field(0.2, gt=0, description="auto schedule: lambda_auto = 1 - min(ema/var_0/var_threshold, 1), so it starts rising once the variance falls below this fraction of var_0")
    warmup: int = Field(50, ge=0, description="auto schedule: observations before the reference variance is fixed")


class PlanningConfig(_Table):
    """Planning-token detection (strategic grams)."""

    strategic_grams: list[str] = Field(
        default_factory=lambda: list(DEFAULT_STRATEGIC_GRAMS),
        description="phrases marking planning tokens (case-insensitive, whole words)",
    )

    @field_validator("strategic_grams")
    @classmethod
    def _non_blank(cls, grams: list[str]) -> list[str]:
        if any(not g.strip() for g in grams):
            raise ValueError("contains an empty phrase; remove it")
        return grams


class DataConfig(_Table):
    """The task: where prompts and reference answers come from."""

    source: str = _choice(
        "math",
        ["arithmetic", "math", "gsm8k", "jsonl"],
        "where examples come from; also 'reasoning_gym:<task>' with the reasoning-gym extra",
        plugin=True,
    )
    path: str = Field("", description="file or directory for jsonl (rows {prompt, answer}) or a local math/gsm8k copy")
    split: str = Field("train", min_length=1, description="split drawn for training")
    eval_split: str = Field("test", min_length=1, description="held-out split for evaluation")
    max_examples: int = Field(0, ge=0, description="use at most N training examples; 0 = all")
    shuffle: bool = Field(True, description="shuffle the training order (seeded by training.seed)")
    operand_digits: int = Field(2, ge=1, le=9, description="arithmetic: digits per operand")
    max_operand: int = Field(0, ge=0, description="arithmetic: largest operand; 0 = 10**operand_digits - 1")
    operations: list[Literal["+", "-", "*"]] = Field(
        default_factory=lambda: ["+"], min_length=1, description="arithmetic: operations to draw from"
    )

    @field_validator("operations")
    @classmethod
    def _unique_operations(cls, ops: list[str]) -> list[str]:
        if len(set(ops)) != len(ops):
            raise ValueError(f"lists an operation twice: {ops}; list each once")
        return ops


class RewardConfig(_Table):
    """How a completion is scored against the reference answer."""

    type: Literal["match", "math", "custom"] = Field(
        "match", description="match: last \\boxed{} equals the answer; math: symbolic equivalence; custom: your function"
    )
    custom: str = Field("", description="for type = 'custom': 'module:function' taking (completion, reference) -> float")
    timeout_s: float = Field(5.0, gt=0, description="time limit per reward call, any reward type (a timeout scores 0 and is counted)")

    @field_validator("custom")
    @classmethod
    def _callable_path(cls, path: str) -> str:
        if path and not _CALLABLE_RE.fullmatch(path):
            raise ValueError(f"must look like 'module:function', got {path!r}")
        return path


class BackendConfig(_Table):
    """The model runtime that samples and trains."""

    backend: str = _choice("local", ["local", "tinker"], "local (transformers + peft), tinker, or a plugin path", plugin=True)
    device: str = Field("auto", description="where the local backend runs: auto | cpu | cuda | cuda:N")
    dtype: Literal["auto", "float32", "bfloat16"] = Field("auto", description="weights dtype; auto = bfloat16 on CUDA, float32 on CPU")
    options: dict[str, Any] = Field(
        default_factory=dict, description="backend-specific table; local reads micro_batch_size (default 8) and max_sample_rows (default 256)"
    )

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if not _DEVICE_RE.fullmatch(device):
            raise ValueError(f"must be auto, cpu, cuda or cuda:N, got {device!r}")
        return device


class InferenceConfig(_Table):
    """Where sampling happens for the local backend."""

    engine: Literal["hf", "openai"] = Field(
        "hf", description="hf: in-process transformers; openai: an OpenAI-compatible server (vllm serve --enable-lora)"
    )
    url: str = Field("", description="base URL of the openai engine, e.g. http://localhost:8000/v1")


class BackpressureConfig(_Table):
    """Adaptive batch size from a USL throughput fit."""

    enabled: bool = Field(False, description="adapt batch_size to the measured throughput curve")
    warmup_steps: int = Field(10, ge=0, description="steps sweeping batch sizes before the first fit")
    ema_decay: float = Field(0.9, ge=0, lt=1, description="EMA decay of measured / predicted throughput (the memory_bound test)")
    throttle_margin: float = Field(0.85, gt=0, le=1, description="throttle above this fraction of the optimal p*")
    increase_margin: float = Field(0.5, gt=0, le=1, description="increase only below this fraction of p* (hysteresis)")
    min_batch_size: int = Field(1, ge=1, description="smallest batch_size backpressure may choose")
    max_batch_size: int = Field(64, ge=1, description="largest batch_size backpressure may choose")


class LoggingConfig(_Table):
    """Where logs go: run directory, wandb, generations."""

    log_dir: str = Field("", description="run directory; '' = logs/<condition>_s<seed>")
    condition: str = Field("", description="condition label in logs; '' = <advantage_mode>+<transform_mode>")
    wandb_project: str = Field("", description="wandb project; '' = no wandb")
    wandb_entity: str = Field("", description="wandb entity (team or user); '' = your default")
    wandb_group: str = Field("", description="wandb group; '' = the condition label")
    wandb_tags: list[str] = Field(default_factory=list, description="extra wandb tags (condition and seed are always added)")
    wandb_mode: Literal["online", "offline", "disabled"] = Field("online", description="wandb mode")
    log_generations: bool = Field(True, description="write sampled completions to emergence/generations.jsonl")
    generations_per_prompt: int = Field(1, ge=1, description="completions logged per prompt group")


class EvalConfig(_Table):
    """Held-out greedy evaluation."""

    every: int = Field(0, ge=0, description="evaluate every N steps and at the end; 0 = off")
    num_examples: int = Field(40, ge=1, description="held-out examples per evaluation")
    max_tokens: int = Field(0, ge=0, description="completion length for evaluation; 0 = training.max_tokens")


class ConditionConfig(_Table):
    """One campaign condition: the two modes plus any dotted overrides ("sepa.steps" = 100)."""

    advantage_mode: str = _choice(..., ["grpo", "maxrl"], "episode advantage mode of this condition", plugin=True)
    transform_mode: str = _choice(
        ..., ["none", "gtpo", "gtpo_hicra", "gtpo_sepa"], "transform mode of this condition", plugin=True
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description='any other key is a dotted override of this condition\'s runs, e.g. "sepa.steps" = 100',
    )

    @model_validator(mode="before")
    @classmethod
    def _collect_overrides(cls, data: Any) -> Any:
        """TOML puts `"sepa.steps" = 100` beside the modes; an unquoted `sepa.steps = 100`
        arrives as a nested table. Both become `overrides["sepa.steps"]`."""
        if not isinstance(data, dict):
            return data
        known = {"advantage_mode", "transform_mode", "overrides"}
        out = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known}
        if extra:
            given = out.get("overrides", {})
            if not isinstance(given, dict):
                return data  # let the type error surface at `overrides`
            out["overrides"] = {**given, **_flatten(extra)}
        return out

    @model_serializer(mode="wrap")
    def _inline_overrides(self, handler: Any) -> dict[str, Any]:
        """Serialise back to the TOML shape, overrides beside the modes."""
        out = handler(self)
        out.update(out.pop("overrides", {}))
        return out


class CampaignConfig(_Table):
    """A campaign: conditions x seeds, each a full run."""

    seeds: list[int] = Field(default_factory=lambda: list(DEFAULT_CAMPAIGN_SEEDS), description="one run per seed per condition")
    max_steps: int = Field(0, ge=0, description="steps per run; 0 = training.max_steps")
    conditions: list[ConditionConfig] = Field(
        default_factory=list,
        description="[[campaign.conditions]] tables; none = the 5-condition ablation",
    )
    executor: Literal["sequential", "processes", "ray"] = Field(
        "sequential", description="sequential in this process, local processes, or Ray tasks"
    )
    max_workers: int = Field(0, ge=0, description="runs at once for processes/ray; 0 = auto")
    ray_address: str = Field("", description="Ray cluster address; '' = start a local Ray")
    log_root: str = Field("logs", min_length=1, description="campaign dirs go to <log_root>/campaign_<YYYYmmdd_HHMMSS>")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds:
            raise ValueError("must list at least one seed, e.g. seeds = [42, 101, 202]")
        bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
        if bad:
            raise ValueError(f"seeds must be in 0..{MAX_SEED}, got {bad}")
        dupes = sorted({s for s in seeds if seeds.count(s) > 1})
        if dupes:
            raise ValueError(f"lists seed(s) {dupes} more than once; each seed once")
        return seeds


class SqueezeConfig(_Table):
    """LoRA-Squeeze: how much rank a trained adapter really uses."""

    min_variance_retention: float = Field(0.95, gt=0, le=1, description="recommend the smallest rank keeping this much variance")
    target_ranks: list[int] = Field(default_factory=list, description="ranks to tabulate; [] = powers of two up to the source rank")
    adapter_path: str = Field("", description="adapter to analyse (standalone squeeze only; campaigns use their first run)")
    compress_to: int = Field(0, ge=0, description="rank to compress to when output_path is set; 0 = the recommended rank")
    output_path: str = Field("", description="write the compressed adapter here; '' = analyse only")

    @field_validator("target_ranks")
    @classmethod
    def _positive_ranks(cls, ranks: list[int]) -> list[int]:
        if any(r < 1 for r in ranks):
            raise ValueError(f"ranks must be >= 1, got {ranks}")
        return ranks


class Config(_Table):
    """A whole retrain config: one field per TOML table."""

    model: ModelConfig = Field(default_factory=ModelConfig, description=ModelConfig.__doc__)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig, description=AlgorithmConfig.__doc__)
    training: TrainingConfig = Field(default_factory=TrainingConfig, description=TrainingConfig.__doc__)
    gtpo: GTPOConfig = Field(default_factory=GTPOConfig, description=GTPOConfig.__doc__)
    hicra: HICRAConfig = Field(default_factory=HICRAConfig, description=HICRAConfig.__doc__)
    sepa: SEPAConfig = Field(default_factory=SEPAConfig, description=SEPAConfig.__doc__)
    planning: PlanningConfig = Field(default_factory=PlanningConfig, description=PlanningConfig.__doc__)
    data: DataConfig = Field(default_factory=DataConfig, description=DataConfig.__doc__)
    reward: RewardConfig = Field(default_factory=RewardConfig, description=RewardConfig.__doc__)
    backend: BackendConfig = Field(default_factory=BackendConfig, description=BackendConfig.__doc__)
    inference: InferenceConfig = Field(default_factory=InferenceConfig, description=InferenceConfig.__doc__)
    backpressure: BackpressureConfig = Field(default_factory=BackpressureConfig, description=BackpressureConfig.__doc__)
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description=LoggingConfig.__doc__)
    eval: EvalConfig = Field(default_factory=EvalConfig, description=EvalConfig.__doc__)
    campaign: CampaignConfig | None = Field(None, description=CampaignConfig.__doc__)
    squeeze: SqueezeConfig | None = Field(None, description=SqueezeConfig.__doc__)

    @property
    def condition(self) -> str:
        """The condition label: `[logging].condition`, or `<advantage_mode>+<transform_mode>`."""
        return self.logging.condition or f"{self.algorithm.advantage_mode}+{self.algorithm.transform_mode}"

    @property
    def run_name(self) -> str:
        """`<condition>_s<seed>`: the run's directory name and wandb name."""
        return f"{self.condition}_s{self.training.seed}"

    @property
    def resolved_log_dir(self) -> str:
        """`[logging].log_dir`, or `logs/<condition>_s<seed>` when it is empty."""
        return self.logging.log_dir or f"logs/{self.run_name}"

    @property
    def kind(self) -> Literal["campaign", "squeeze", "run"]:
        """What `retrain CONFIG` does with it: a campaign wins over a standalone squeeze."""
        if self.campaign is not None:
            return "campaign"
        if self.squeeze is not None and self.squeeze.adapter_path:
            return "squeeze"
        return "run"

    def with_overrides(self, overrides: Mapping[str, Any]) -> Config:
        """A validated copy with dotted-path overrides applied, e.g. `{"sepa.steps": 100}`.

        Raises ConfigError listing every problem (unknown path, wrong type, out of range).
        """
        raw = config_to_dict(self)
        problems: list[str] = []
        origins: dict[tuple[str, ...], str] = {}
        for dotted, value in overrides.items():
            problem, value = _check_path(dotted, value)
            if problem:
                problems.append(f'"{dotted}": {problem}')
                continue
            _set_path(raw, dotted.split("."), value)
            origins[tuple(dotted.split("."))] = f'"{dotted}"'
        cfg, more = _validate(raw, origins)
        if problems or more:
            raise ConfigError(problems + more, source="overrides")
        assert cfg is not None
        return cfg


# ---------------------------------------------------------------------------------------------
# Serialisation
# ---------------------------------------------------------------------------------------------


def flatten_dict(d: Mapping, prefix: str = "") -> dict:
    """{"training": {"lr": 1e-4}} → {"training.lr": 1e-4}; an empty table stays a value ({}).
    The dotted form of overrides, wandb config keys and config comparisons."""
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out.update(flatten_dict(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain JSON-able data in the TOML shape (absent tables are None)."""
    return cfg.model_dump(mode="json")


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_drop_none(v) for v in obj]
    return obj


def config_to_toml(cfg: Config) -> str:
    """The fully resolved config as TOML; `load_config` on it gives an equal Config.

    Written table by table with inline arrays (tomli_w alone puts every list item on its own
    line, which makes a run's config.toml hard to read); tomli_w still formats keys and scalars.
    """
    return "\n".join(_toml_table_lines((), _drop_none(config_to_dict(cfg)))).lstrip("\n") + "\n"


def _toml_key(key: str) -> str:
    return tomli_w.dumps({key: 0}).rsplit(" = ", 1)[0]


def _toml_table_lines(prefix: tuple[str, ...], table: Mapping[str, Any]) -> list[str]:
    header = ".".join(_toml_key(p) for p in prefix)
    lines = [f"\n[{header}]"] if prefix else []
    nested: list[tuple[str, Any]] = []
    for key, value in table.items():
        if isinstance(value, dict) or (isinstance(value, list) and value and all(isinstance(v, dict) for v in value)):
            nested.append((key, value))  # TOML wants sub-tables after the table's own keys
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value_wrapped(value)}")
    for key, value in nested:
        if isinstance(value, dict):
            lines += _toml_table_lines((*prefix, key), value)
            continue
        for item in value:
            lines.append(f"\n[[{'.'.join(_toml_key(p) for p in (*prefix, key))}]]")
            lines += [f"{_toml_key(k)} = {_toml_value_wrapped(v)}" for k, v in item.items()]
    return lines


def _toml_value_wrapped(value: Any, width: int = 96) -> str:
    """Inline, or one item per line for a list too long to read inline."""
    inline = toml_value(value)
    if len(inline) <= width or not isinstance(value, list):
        return inline
    return "[\n" + "".join(f"    {toml_value(v)},\n" for v in value) + "]"


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        _set_path(out, dotted.split("."), value)
    return out


def quickstart_config() -> Config:
    """The built-in CPU quickstart (SmolLM2-135M on 2-operand addition); see QUICKSTART_OVERRIDES."""
    cfg, problems = _validate(_nest(QUICKSTART_OVERRIDES), {})
    assert cfg is not None and not problems, problems  # a broken built-in is a bug, not a user error
    return cfg


# ---------------------------------------------------------------------------------------------
# Loading and overrides
# ---------------------------------------------------------------------------------------------


def resolve_config_path(path: str | Path | None) -> Path | None:
    """The file `load_config(path)` reads: `path`, else ./retrain.toml when present, else None
    (the built-in quickstart)."""
    if path is not None:
        return Path(path)
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load, override and validate a config.

    `path` None means ./retrain.toml when it exists, else the built-in quickstart. `overrides` are
    CLI-style tokens: `["--training.lr", "1e-4", "--seed=7", "--model.name", "Qwen/Qwen3-4B"]`;
    each value is parsed as a TOML value when it parses, else taken as a string.
    Raises ConfigError with every problem found.
    """
    file = resolve_config_path(path)
    source = str(file) if file is not None else "built-in quickstart config"
    raw = _read_toml(file) if file is not None else _nest(QUICKSTART_OVERRIDES)
    problems: list[str] = []
    origins: dict[tuple[str, ...], str] = {}
    pairs, parse_problems = parse_override_tokens(overrides)
    problems += parse_problems
    for flag, dotted, text in pairs:
        problem, value = _check_path(dotted, _parse_value(text), text)
        if problem:
            problems.append(f"{flag}: {problem}")
            continue
        _set_path(raw, dotted.split("."), value)
        origins[tuple(dotted.split("."))] = flag
    cfg, more = _validate(raw, origins)
    if problems or more:
        raise ConfigError(problems + more, source=source)
    assert cfg is not None
    return cfg


def _read_toml(file: Path) -> dict[str, Any]:
    if not file.exists():
        raise ConfigError([f"file not found: {file}; create one with `retrain init {file}`"], source=str(file))
    if not file.is_file():
        raise ConfigError([f"{file} is not a file; give the path of a .toml config"], source=str(file))
    try:
        return tomllib.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError([f"not UTF-8 text ({e.reason} at byte {e.start}); save the file as UTF-8"], source=str(file)) from None
    except tomllib.TOMLDecodeError as e:
        # tomllib's message carries "(at line L, column C)".
        raise ConfigError([f"TOML syntax error: {e}"], source=str(file)) from None


def parse_override_tokens(tokens: Sequence[str]) -> tuple[list[tuple[str, str, str]], list[str]]:
    """`["--training.lr", "1e-4", "--seed=7"]` -> `[(flag, dotted_path, text), ...]` and problems.

    Aliases (`--seed`, `--max-steps`, `--lr`, `--wandb-project`) become their dotted paths.
    """
    pairs: list[tuple[str, str, str]] = []
    problems: list[str] = []
    tokens = list(tokens)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) == 2:
            problems.append(f"unexpected argument {token!r}; overrides look like --training.lr 1e-4 (config file first)")
            i += 1
            continue
        flag, eq, text = token.partition("=")
        if not eq:
            if i + 1 >= len(tokens):
                problems.append(f"{flag}: needs a value, e.g. {flag} VALUE")
                break
            text = tokens[i + 1]
            i += 1
        i += 1
        key = flag[2:]
        pairs.append((flag, ALIASES.get(key, key), text))
    return pairs, problems


def _parse_value(text: str) -> Any:
    """A TOML value when `text` parses as one (1e-4, true, [1, 2], "x"), else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set_path(raw: dict[str, Any], parts: Sequence[str], value: Any) -> None:
    for part in parts[:-1]:
        child = raw.get(part)
        if not isinstance(child, dict):
            child = raw[part] = {}
        raw = child
    raw[parts[-1]] = value


def _unwrap(annotation: Any) -> Any:
    """`X | None` -> X."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _is_table(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _table_path(prefix: Sequence[str]) -> str:
    return f"[{'.'.join(prefix)}]" if prefix else "top level"


def _all_dotted_paths(model: type[BaseModel] | None = None, prefix: tuple[str, ...] = ()) -> list[str]:
    """Every settable dotted path, e.g. "training.lr" (for did-you-mean suggestions)."""
    model = model or Config
    out: list[str] = []
    for name, field in model.model_fields.items():
        ann = _unwrap(field.annotation)
        if _is_table(ann):
            out += _all_dotted_paths(ann, (*prefix, name))
        else:
            out.append(".".join((*prefix, name)))
    return out


def _check_path(dotted: str, value: Any, text: str | None = None) -> tuple[str, Any]:
    """Check an override path against the schema: ("", value) when fine, else (problem, value).

    For string fields the raw `text` wins over its TOML parse, so `--model.revision 1234`
    stays the string "1234".
    """
    parts = dotted.split(".")
    model: type[BaseModel] = Config
    for depth, part in enumerate(parts):
        prefix = parts[:depth]
        if part not in model.model_fields:
            suggestion = _suggest(".".join(parts), _all_dotted_paths(), quote=False)
            what = f"unknown table [{part}]" if depth == 0 else f"unknown key {_table_path(prefix)}.{part}"
            return f"{what}{suggestion or _list_valid(model)}", value
        ann = _unwrap(model.model_fields[part].annotation)
        rest = parts[depth + 1 :]
        if _is_table(ann):
            optional = not model.model_fields[part].is_required() and model.model_fields[part].default is None
            if not rest and (isinstance(value, dict) or (value is None and optional)):
                return "", value  # a whole table (or removing an optional one), as TOML would give it
            if not rest:
                example = next(iter(ann.model_fields))
                return f"{_table_path(parts)} is a table; override one key, e.g. {dotted}.{example}", value
            model = ann
            continue
        if typing.get_origin(ann) is dict:
            return "", value  # a free table such as [backend.options]: any key below it
        if rest:
            return f"{_table_path(prefix)}.{part} is a value, not a table", value
        if text is not None and _is_str_field(ann) and not isinstance(value, str):
            value = text
        return "", value
    return "", value


def _is_str_field(ann: Any) -> bool:
    return ann is str or (typing.get_origin(ann) is Literal and all(isinstance(a, str) for a in typing.get_args(ann)))


def _list_valid(model: type[BaseModel]) -> str:
    names = ", ".join(model.model_fields)
    return f"; valid: {names}"


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


# ---------------------------------------------------------------------------------------------
# Validation: pydantic errors -> `[table].key: problem` lines, then cross-field checks
# ---------------------------------------------------------------------------------------------


def _validate(raw: Any, origins: Mapping[tuple[str, ...], str]) -> tuple[Config | None, list[str]]:
    """Build a Config from raw TOML data. Returns (config or None, problems)."""
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        return None, [_translate(err, origins) for err in e.errors()]
    return cfg, _cross_field_problems(cfg)


def _format_loc(loc: Sequence[Any]) -> str:
    """("training", "lr") -> "[training].lr"; ("campaign", "seeds", 2) -> "[campaign].seeds[2]"."""
    tables: list[str] = []
    model: Any = Config
    i = 0
    while i < len(loc) and isinstance(loc[i], str) and _is_table(model) and loc[i] in model.model_fields:
        ann = _unwrap(model.model_fields[loc[i]].annotation)
        is_table = _is_table(ann)
        is_free_table = typing.get_origin(ann) is dict and i + 1 < len(loc)
        if not (is_table or is_free_table):
            break
        tables.append(loc[i])
        model = ann if is_table else None
        i += 1
    head = f"[{'.'.join(tables)}]" if tables else ""
    tail = ""
    for part in loc[i:]:
        if isinstance(part, int):
            tail += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(str(part)):
            tail += f".{part}"
        else:
            tail += f'."{part}"'
    if not head:
        return tail.lstrip(".")
    return head + tail


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _model_at(loc: Sequence[Any]) -> type[BaseModel] | None:
    """The model class that owns the last element of `loc` (for key suggestions)."""
    model: Any = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (_is_table(model) and part in model.model_fields):
            return None
        ann = _unwrap(model.model_fields[part].annotation)
        if typing.get_origin(ann) is list:
            ann = typing.get_args(ann)[0]
        model = ann
    return model if _is_table(model) else None


def _show(value: Any) -> str:
    """A user's value as they wrote it in TOML."""
    if isinstance(value, str):
        return f'the string "{value}"' if '"' not in value else f"the string {value!r}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return f"the list {value!r}" if len(repr(value)) < 60 else "a list"
    return repr(value)


_KIND = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string (in quotes)",
    "list_type": "a list, e.g. [1, 2]",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}

_BOUND = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


def _translate(err: Mapping[str, Any], origins: Mapping[tuple[str, ...], str]) -> str:
    """One pydantic error -> `[table].key: what is wrong and how to fix it`."""
    loc = tuple(err["loc"])
    kind, value = err["type"], err.get("input")
    where = _format_loc(loc)
    if kind == "extra_forbidden":
        msg = _unknown_key_message(loc, value)
        return msg + _origin_note(loc, origins)
    if kind in _KIND:
        msg = f"expected {_KIND[kind]}, got {_show(value)}"
        if kind.startswith("bool") and isinstance(value, str) and value.lower() in ("true", "false"):
            msg += f"; write {loc[-1]} = {value.lower()} without quotes"
        elif kind == "string_type" and not isinstance(value, (dict, list)):
            msg += f'; write {loc[-1]} = "{_show_plain(value)}"'
    elif kind in _BOUND:
        key, op = _BOUND[kind]
        bound = err["ctx"][key]
        bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
        msg = f"must be {op} {bound}, got {_show(value)}"
    elif kind == "literal_error":
        expected = _literal_args(loc)
        shown = ", ".join(repr(a) for a in expected) if expected else err["ctx"]["expected"]
        msg = f"must be one of {shown}, got {_show(value)}"
        if isinstance(value, str) and expected:
            msg += _suggest(value, [str(a) for a in expected])
    elif kind == "value_error":
        msg = str(err["ctx"]["error"])
    elif kind == "missing":
        msg = "required key is missing"
    elif kind == "finite_number":
        msg = f"must be a finite number, got {value!r}"
    elif kind == "too_short":
        msg = "must not be empty"
    elif kind == "string_too_short":
        msg = "must not be empty"
    else:  # a pydantic error we have not worded; still name the place
        msg = str(err.get("msg", kind)).lower()
    return f"{where}: {msg}{_origin_note(loc, origins)}"


def _show_plain(value: Any) -> str:
    return "true" if value is True else "false" if value is False else str(value)


def _literal_args(loc: Sequence[Any]) -> list[Any]:
    model = _model_at(loc) if not isinstance(loc[-1], int) else _model_at(loc[:-1])
    name = loc[-1] if not isinstance(loc[-1], int) else loc[-2]
    if model is None or name not in model.model_fields:
        return []
    ann = _unwrap(model.model_fields[name].annotation)
    if typing.get_origin(ann) is list:
        ann = typing.get_args(ann)[0]
    return list(typing.get_args(ann)) if typing.get_origin(ann) is Literal else []


def _unknown_key_message(loc: Sequence[Any], value: Any) -> str:
    key = str(loc[-1])
    parent = _model_at(loc)
    if len(loc) == 1:  # top level: a table (or a stray key outside any table)
        tables = list(Config.model_fields)
        if isinstance(value, dict):
            close = difflib.get_close_matches(key, tables, n=1, cutoff=0.6)
            hint = f"; did you mean [{close[0]}]?" if close else f"; valid tables: {', '.join(tables)}"
            return f"[{key}]: unknown table{hint}"
        owners = [".".join(p.split(".")[:-1]) for p in _all_dotted_paths() if p.split(".")[-1] == key]
        if owners:
            return f"{key}: keys belong in a table; did you mean [{owners[0]}].{key}?"
        return f"{key}: unknown top-level key; settings go in tables such as [training]"
    where = _format_loc(loc[:-1])
    fields = list(parent.model_fields) if parent else []
    hint = _suggest(key, fields, quote=False)
    if not hint:
        owners = [".".join(p.split(".")[:-1]) for p in _all_dotted_paths() if p.split(".")[-1] == key]
        hint = f"; {key} belongs in [{owners[0]}]" if owners else (f"; valid keys: {', '.join(fields)}" if fields else "")
    return f"{where}.{key}: unknown key{hint}"


def _origin_note(loc: Sequence[Any], origins: Mapping[tuple[str, ...], str]) -> str:
    for path, flag in origins.items():
        if tuple(loc[: len(path)]) == path:
            return f" (set by {flag})"
    return ""


def _cross_field_problems(cfg: Config) -> list[str]:
    """Inconsistencies between keys that each look fine alone."""
    problems: list[str] = []
    if cfg.data.source == "jsonl" and not cfg.data.path:
        problems.append('[data].path: required when source = "jsonl"; set path = "train.jsonl" (rows {"prompt", "answer"})')
    if cfg.reward.type == "custom" and not cfg.reward.custom:
        problems.append('[reward].custom: required when type = "custom"; set custom = "my_module:my_reward"')
    if cfg.reward.custom and cfg.reward.type != "custom":
        problems.append(f'[reward].custom: is set but type = "{cfg.reward.type}" ignores it; set type = "custom" or remove custom')
    if cfg.training.clip_eps_high > 0 and cfg.training.clip_eps == 0:
        problems.append("[training].clip_eps_high: needs clip_eps > 0 (clipping is off); set clip_eps, e.g. 0.2")
    bp = cfg.backpressure
    if bp.min_batch_size > bp.max_batch_size:
        problems.append(f"[backpressure].min_batch_size: {bp.min_batch_size} is above max_batch_size {bp.max_batch_size}; lower it or raise max_batch_size")
    if cfg.inference.engine == "openai" and not cfg.inference.url:
        problems.append('[inference].url: required when engine = "openai"; e.g. url = "http://localhost:8000/v1"')
    if cfg.algorithm.uncertainty_kind == "shannon_entropy" and (cfg.backend.backend != "local" or cfg.inference.engine != "hf"):
        problems.append(
            '[algorithm].uncertainty_kind: "shannon_entropy" needs the full distribution, available only with '
            'backend = "local" and engine = "hf"; use "surprisal" or "predictive_variance"'
        )
    if cfg.backend.backend == "local":
        for key, value in cfg.backend.options.items():
            if key not in LOCAL_OPTIONS:
                problems.append(f"[backend.options].{key}: unknown option for the local backend"
                                f"{_suggest(key, list(LOCAL_OPTIONS))} (known: {', '.join(LOCAL_OPTIONS)})")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"[backend.options].{key}: must be an integer >= 1, got {_show(value)}")
    if cfg.campaign is not None:
        problems += _campaign_problems(cfg)
    return problems


def _campaign_problems(cfg: Config) -> list[str]:
    from retrain.campaign.grid import condition_label  # grid imports this module

    assert cfg.campaign is not None
    problems: list[str] = []
    if cfg.squeeze is not None and cfg.squeeze.adapter_path:
        problems.append(
            "[squeeze].adapter_path: a campaign squeezes its first finished run's adapter; "
            "remove adapter_path (or squeeze standalone with `retrain squeeze ADAPTER`)"
        )
    base = cfg.model_copy(update={"campaign": None})
    base_problems = set(_cross_field_problems(base))  # reported once for the config itself
    seen: dict[str, int] = {}
    for i, cond in enumerate(cfg.campaign.conditions):
        where = f"[campaign].conditions[{i}]"
        bad = False
        for key in cond.overrides:
            reason = _GRID_OWNED_KEYS.get(key) or ("a run config has no [campaign]" if key.split(".")[0] == "campaign" else "")
            if reason:
                problems.append(f'{where}."{key}": cannot be overridden per condition ({reason})')
                bad = True
        label = condition_label(cond.advantage_mode, cond.transform_mode, cond.overrides)
        if label in seen:
            problems.append(f"{where}: duplicates condition [{seen[label]}] ({label}); remove one")
        seen.setdefault(label, i)
        if bad:
            continue
        full = {"algorithm.advantage_mode": cond.advantage_mode, "algorithm.transform_mode": cond.transform_mode, **cond.overrides}
        try:
            base.with_overrides(full)
        except ConfigError as e:
            problems += [f"{where}: {p}" for p in e.problems if p not in base_problems]
    return problems


# ---------------------------------------------------------------------------------------------
# Generated reference (docs/config.md)
# ---------------------------------------------------------------------------------------------


def _bounds(field: Any) -> str:
    ops = {annotated_types.Gt: ">", annotated_types.Ge: ">=", annotated_types.Lt: "<", annotated_types.Le: "<="}
    out = []
    for meta in field.metadata:
        for cls, op in ops.items():
            if isinstance(meta, cls):
                bound = next(iter(dataclasses.asdict(meta).values()))
                out.append(f"{op} {bound}")
    return ", ".join(out)


def field_type_text(field: Any) -> str:
    """A short human type for a field: `int (>= 1)`, `"grpo" | "maxrl" | plugin path`, `list of str`."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    ann = _unwrap(field.annotation)
    if "choices" in extra:
        text = " | ".join(f'"{c}"' for c in extra["choices"]) + (" | plugin path" if extra["plugin"] else "")
    elif typing.get_origin(ann) is Literal:
        text = " | ".join(f'"{a}"' for a in typing.get_args(ann))
    elif typing.get_origin(ann) is list:
        inner = typing.get_args(ann)[0]
        if typing.get_origin(inner) is Literal:
            text = "list of " + " | ".join(f'"{a}"' for a in typing.get_args(inner))
        else:
            text = f"list of {getattr(inner, '__name__', str(inner))}"
    elif typing.get_origin(ann) is dict:
        text = "table"
    else:
        text = getattr(ann, "__name__", str(ann))
    bounds = _bounds(field)
    return f"{text} ({bounds})" if bounds else text


def toml_value(value: Any) -> str:
    """`value` written as an inline TOML value (for docs, templates and labels): `[42, 101]`."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{tomli_w.dumps({k: 0}).split(' = ')[0]} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}).strip().removeprefix("v = ")


def iter_tables() -> list[tuple[str, type[_Table]]]:
    """(TOML table name, model) in file order, including [[campaign.conditions]]."""
    out: list[tuple[str, type[_Table]]] = []
    for name, field in Config.model_fields.items():
        out.append((name, _unwrap(field.annotation)))
        if name == "campaign":
            out.append(("campaign.conditions", ConditionConfig))
    return out


def config_reference_markdown() -> str:
    """The configuration reference, generated from the models (committed as docs/config.md)."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by retrain.config.config_reference_markdown(); do not edit by hand. -->",
        "",
        "A retrain config is one TOML file; each table below is one typed model in `retrain/config.py`.",
        "Unknown tables and keys are errors, types are strict (the string `\"false\"` is not a bool), and",
        "every problem is reported at once with its TOML path. Defaults are the research guide's standard",
        "profile; with no config file at all `retrain` runs the built-in CPU quickstart, which overrides:",
        "",
    ]
    lines += [f"- `{k} = {toml_value(v)}`" for k, v in QUICKSTART_OVERRIDES.items()]
    lines += [
        "",
        "Any key can be overridden on the command line with its dotted path (`--training.lr 1e-4`,",
        f"`--model.name=Qwen/Qwen3-4B`); short aliases: {', '.join(f'`--{a}` ({p})' for a, p in ALIASES.items())}.",
        "A `[campaign]` condition takes dotted overrides the same way (`\"sepa.steps\" = 100`).",
        "",
    ]
    for name, model in iter_tables():
        header = f"[[{name}]]" if name == "campaign.conditions" else f"[{name}]"
        lines += [f"## `{header}`", "", (model.__doc__ or "").strip().splitlines()[0], ""]
        if name in ("campaign", "squeeze"):
            lines += [f"Optional: without `{header}` the config is a single run.", ""]
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        for key, field in model.model_fields.items():
            if key == "overrides":
                row = ['`"<table>.<key>"`', "any", "—", "any other key: a dotted override for this condition's runs"]
                lines.append("| " + " | ".join(row) + " |")
                continue
            if name == "campaign" and key == "conditions":
                default = "[] (the 5-condition ablation)"
            elif field.is_required():
                default = "required"
            else:
                default = f"`{toml_value(field.get_default(call_default_factory=True))}`"
            row = [f"`{key}`", field_type_text(field), default, field.description or ""]
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
        lines.append("")
    return "\n".join(lines)
