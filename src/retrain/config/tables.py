"""The config's tables: one frozen pydantic model per TOML table, and `Config`, the whole file.

Every key has a one-line `description` that doubles as the reference docs (docs/config.md) and
the comments of `retrain init`. Closed sets whose members are variants (advantage and transform
modes, uncertainty kinds, data sources, rewards, backends, engines) take their choices from the
registries (`retrain.registry`); numeric limits the components also enforce on their Python API
come from the components (`SEPA_BOUNDS`, `BACKPRESSURE_BOUNDS`), so both speak the same words.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from retrain.backends import BACKENDS
from retrain.backends.base import DEFAULT_TARGET_MODULES, effective_lora_alpha
from retrain.backends.engines import ENGINES
from retrain.backpressure import BACKPRESSURE_BOUNDS
from retrain.checks import Bound, choice_problem
from retrain.config.errors import REGISTRIES, validate
from retrain.config.labels import path_safe_label
from retrain.config.schema import check_path
from retrain.config.toml import config_to_dict, flatten_dict, set_path
from retrain.data import SOURCES
from retrain.data.arithmetic import PROMPT_STYLES
from retrain.errors import ConfigError
from retrain.plugins import CALLABLE_RE, PLUGIN_RE
from retrain.registry import Registry
from retrain.rewards import REWARDS
from retrain.rl.advantages import ADVANTAGES
from retrain.rl.planning import DEFAULT_STRATEGIC_GRAMS
from retrain.rl.sepa import SCHEDULES, SEPA_BOUNDS
from retrain.rl.transforms import TRANSFORMS
from retrain.rl.uncertainty import UNCERTAINTIES

MAX_SEED = 2**32 - 1  # numpy's seeding range; torch accepts it too
DEFAULT_CAMPAIGN_SEEDS = [42, 101, 202, 303, 404, 505, 606, 707]
_DEVICE_RE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
_CALLABLE_OR_EMPTY = re.compile(f"(?:{CALLABLE_RE.pattern})?")

# The registries whose names a field may take, by the config key that chooses them.
_REGISTRIES: dict[str, Registry[Any]] = {r.key: r for r in REGISTRIES}


def _choice(default: Any, choices: Registry[Any] | Sequence[str], description: str, **kw: Any) -> Any:
    """A string field whose value is a registry's variant (or a plugin path where the registry
    takes plugins), or one of a fixed list of names."""
    if isinstance(choices, Registry):
        extra = {"choices": choices.choice_names(), "plugin": choices.plugins, "registry": choices.key}
    else:
        extra = {"choices": list(choices), "plugin": False}
    return Field(default, description=description, json_schema_extra=extra, **kw)


def _matching(pattern: re.Pattern[str], expected: str) -> AfterValidator:
    """A string field's check: the whole value matches `pattern`, else `<expected>, got 'value'`."""

    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"{expected}, got {value!r}")
        return value

    return AfterValidator(check)


def _bounded(default: Any, bound: Bound, description: str) -> Any:
    """A numeric field whose limits a component declares (its constructor checks the same `Bound`)."""
    return Field(default, description=description, **bound.field_kwargs())


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
        plugin = bool(extra["plugin"])
        registry = _REGISTRIES.get(str(extra.get("registry")))
        valid = registry.is_valid_name(value) if registry is not None else value in extra["choices"]
        if valid or (plugin and PLUGIN_RE.fullmatch(value)):
            return value
        raise ValueError(choice_problem(value, extra["choices"], plugin))  # type: ignore[arg-type]


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
        return float(effective_lora_alpha(self.lora_alpha, self.lora_rank))


class AlgorithmConfig(_Table):
    """Credit assignment: episode advantages, then token-level transforms."""

    advantage_mode: str = _choice(
        "maxrl", ADVANTAGES, "episode advantages: grpo (r - mean) or maxrl ((r - mean) / mean)"
    )
    transform_mode: str = _choice(
        "gtpo_sepa", TRANSFORMS, "token-level advantage transform applied after the episode advantage"
    )
    uncertainty_kind: str = _choice(
        "surprisal", UNCERTAINTIES, "per-token uncertainty h_t used by the GTPO weights and SEPA pooling"
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
    lr: float = Field(
        4e-5, gt=0, le=1, description="AdamW learning rate (LoRA RL uses 1e-6 to 1e-3; above 1 diverges at once)"
    )
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

    steps: int = _bounded(
        500, SEPA_BOUNDS["steps"], "steps for the linear lambda ramp (after delay_steps); 0 = lambda stays 0"
    )
    schedule: str = _choice("linear", SCHEDULES, "linear ramp, or auto (variance-driven, never below the linear ramp)")
    delay_steps: int = _bounded(50, SEPA_BOUNDS["delay_steps"], "steps before the linear ramp starts")
    correct_rate_gate: float = _bounded(
        0.1,
        SEPA_BOUNDS["correct_rate_gate"],
        "lambda stays 0 until a batch's correct_rate reaches this; 0 = open from the start",
    )
    ema_decay: float = _bounded(
        0.99, SEPA_BOUNDS["ema_decay"], "auto schedule: EMA decay of the execution-uncertainty variance"
    )
    var_threshold: float = _bounded(
        0.2,
        SEPA_BOUNDS["var_threshold"],
        "auto schedule: lambda_auto = 1 - min(ema/var_0/var_threshold, 1), so it starts rising once the variance falls below this fraction of var_0",
    )
    warmup: int = _bounded(
        50, SEPA_BOUNDS["warmup"], "auto schedule: observations before the reference variance is fixed"
    )


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
        "math", SOURCES, "where examples come from; 'reasoning_gym:<task>' needs the reasoning-gym extra"
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
    prompt_style: str = _choice(
        "answer",
        tuple(PROMPT_STYLES),
        "arithmetic: 'answer' asks for just the number; 'steps' asks to solve it step by step, so "
        "completions carry planning phrases (docs/cpu_task.md)",
    )

    @field_validator("operations")
    @classmethod
    def _unique_operations(cls, ops: list[str]) -> list[str]:
        if len(set(ops)) != len(ops):
            raise ValueError(f"lists an operation twice: {ops}; list each once")
        return ops


class RewardConfig(_Table):
    """How a completion is scored against the reference answer."""

    type: str = _choice(
        "match", REWARDS, "match: last \\boxed{} equals the answer; math: symbolic equivalence; custom: your function"
    )
    custom: Annotated[str, _matching(_CALLABLE_OR_EMPTY, "must look like 'module:function'")] = Field(
        "", description="for type = 'custom': 'module:function' taking (completion, reference) -> float"
    )
    timeout_s: float = Field(
        5.0,
        gt=0,
        description="time limit per reward call, any reward type, on any thread (the worker process is killed past it; a timeout scores 0 and is counted)",
    )
    max_answer_chars: int = Field(
        1000, ge=1, description="match/math: an extracted answer longer than this scores 0 without being parsed"
    )
    memory_mb: int = Field(
        1024,
        ge=0,
        description="memory per reward call above the worker's resting size (MB); past it the call fails (scores 0, counted); 0 = no limit",
    )
    workers: int = Field(1, ge=1, le=64, description="reward worker processes scoring a step's completions in parallel")


class BackendConfig(_Table):
    """The model runtime that samples and trains."""

    backend: str = _choice("local", BACKENDS, "local (transformers + peft), tinker, or a plugin path")
    device: Annotated[str, _matching(_DEVICE_RE, "must be auto, cpu, cuda or cuda:N")] = Field(
        "auto", description="where the local backend runs: auto | cpu | cuda | cuda:N"
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="weights dtype; auto = bfloat16 on CUDA and on CPUs with native bf16 that measure it faster, float32 elsewhere",
    )
    num_threads: int = Field(
        0,
        ge=0,
        description="CPU threads for torch; 0 = torch's choice at start-up (OMP_NUM_THREADS, else the CPUs available), recorded in run.json and reused on resume. The thread count changes a CPU run's floats (docs/reproducibility.md)",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="backend-specific table; "
        + "; ".join(
            f"{name} reads "
            + ", ".join(f"{k} (default {json.dumps(o.default)})" for k, o in BACKENDS.entry(name).options.items())
            for name in BACKENDS
            if BACKENDS.entry(name).options
        )
        + " (docs/tinker.md)",
    )


class InferenceConfig(_Table):
    """Where sampling happens for the local backend."""

    engine: str = _choice(
        "hf", ENGINES, "hf: in-process transformers; openai: an OpenAI-compatible server (vllm serve --enable-lora)"
    )
    url: str = Field(
        "",
        description="base URL of the openai engine, e.g. http://localhost:8000/v1 (launch: where to start it; empty = a free local port)",
    )
    launch: bool = Field(
        False,
        description="openai: start `python -m vllm.entrypoints.openai.api_server` for this run and stop it at exit",
    )
    served_model: str = Field(
        "", description="model name the server serves (its --served-model-name); empty = [model].name"
    )
    python: str = Field(
        "",
        description="launch: interpreter that has vLLM; empty = $RETRAIN_VLLM_PYTHON, else ./.venv-vllm/bin/python, else this one",
    )
    server_args: list[str] = Field(
        default_factory=list,
        description='launch: extra api_server flags, e.g. ["--max-model-len", "4096"]; a flag given here replaces retrain\'s',
    )
    request_timeout_s: float = Field(
        900.0, gt=0, description="seconds one completion request may take before it is retried"
    )
    max_retries: int = Field(
        3, ge=0, description="retries of a failed request (backoff 2, 4, 8 s) before the run stops resumably"
    )
    startup_timeout_s: float = Field(900.0, gt=0, description="launch: seconds to wait for the server's /health")
    adapter_dir: str = Field(
        "", description="where each step's adapter is written for the server; empty = <run dir>/sampler_adapters"
    )
    server_adapter_dir: str = Field(
        "", description="adapter_dir as the server sees it (a shared mount on another machine); empty = the same path"
    )
    lora_name: str = Field(
        "",
        description="adapter name prefix on the server (unique per run when runs share one); empty = from the run dir",
    )


class BackpressureConfig(_Table):
    """Adaptive batch size from a USL throughput fit."""

    enabled: bool = Field(False, description="adapt batch_size to the measured throughput curve")
    warmup_steps: int = _bounded(
        10,
        BACKPRESSURE_BOUNDS["warmup_steps"],
        "steps sweeping batch sizes before the first fit (made after the last of them)",
    )
    ema_decay: float = _bounded(
        0.9, BACKPRESSURE_BOUNDS["ema_decay"], "EMA decay of measured / predicted throughput (the memory_bound test)"
    )
    throttle_margin: float = _bounded(
        0.85, BACKPRESSURE_BOUNDS["throttle_margin"], "throttle above this fraction of the optimal p*"
    )
    increase_margin: float = _bounded(
        0.5, BACKPRESSURE_BOUNDS["increase_margin"], "increase only below this fraction of p* (hysteresis)"
    )
    min_batch_size: int = _bounded(
        1, BACKPRESSURE_BOUNDS["min_batch_size"], "smallest batch_size backpressure may choose"
    )
    max_batch_size: int = _bounded(
        64, BACKPRESSURE_BOUNDS["max_batch_size"], "largest batch_size backpressure may choose"
    )


class LoggingConfig(_Table):
    """Where logs go: run directory, wandb, generations."""

    log_dir: str = Field("", description="run directory; '' = logs/<condition>_s<seed>")
    condition: str = Field("", description="condition label in logs; '' = <advantage_mode>+<transform_mode>")
    wandb_project: str = Field("", description="wandb project; '' = no wandb")
    wandb_entity: str = Field("", description="wandb entity (team or user); '' = your default")
    wandb_group: str = Field("", description="wandb group; '' = the condition label")
    wandb_tags: list[str] = Field(
        default_factory=list, description="extra wandb tags (condition and seed are always added)"
    )
    wandb_mode: Literal["online", "offline", "disabled"] = Field("online", description="wandb mode")
    log_generations: bool = Field(True, description="write sampled completions to emergence/generations.jsonl")
    generations_per_prompt: int = Field(
        1,
        ge=0,
        description="completions logged per prompt group; 0 = the whole group (what `retrain grams mine` needs to compare correct and incorrect completions of one prompt)",
    )
    generation_max_chars: int = Field(
        500, ge=0, description="characters of each logged completion kept in generations.jsonl; 0 = the full text"
    )

    @field_validator("condition")
    @classmethod
    def _path_safe_label(cls, label: str) -> str:
        return path_safe_label(label)


class EvalConfig(_Table):
    """Held-out evaluation: greedy accuracy, and optionally pass@k / mean@k over k sampled completions."""

    every: int = Field(0, ge=0, description="evaluate every N steps and at the end; 0 = off")
    num_examples: int = Field(40, ge=1, description="held-out examples per evaluation")
    max_tokens: int = Field(0, ge=0, description="completion length for evaluation; 0 = training.max_tokens")
    k: int = Field(
        1,
        ge=1,
        le=256,
        description="completions sampled per held-out prompt besides the greedy one; "
        "k > 1 also logs eval_pass_at_k and eval_mean_at_k",
    )
    temperature: float = Field(
        0.0, ge=0, le=10, description="sampling temperature of the k completions; 0 = training.temperature"
    )


class ConditionConfig(_Table):
    """One campaign condition: the two modes plus any dotted overrides ("sepa.steps" = 100)."""

    advantage_mode: str = _choice(..., ADVANTAGES, "episode advantage mode of this condition")
    transform_mode: str = _choice(..., TRANSFORMS, "transform mode of this condition")
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
            # an empty nested table ("sepa = {}") overrides nothing
            out["overrides"] = {**given, **{k: v for k, v in flatten_dict(extra).items() if v != {}}}
        return out

    @model_serializer(mode="wrap")
    def _inline_overrides(self, handler: Any) -> dict[str, Any]:
        """Serialise back to the TOML shape, overrides beside the modes."""
        out = handler(self)
        out.update(out.pop("overrides", {}))
        return out


class CampaignConfig(_Table):
    """A campaign: conditions x seeds, each a full run."""

    seeds: list[int] = Field(
        default_factory=lambda: list(DEFAULT_CAMPAIGN_SEEDS), description="one run per seed per condition"
    )
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

    min_variance_retention: float = Field(
        0.95, gt=0, le=1, description="recommend the smallest rank keeping this much variance"
    )
    target_ranks: list[int] = Field(
        default_factory=list, description="ranks to tabulate; [] = powers of two up to the source rank"
    )
    adapter_path: str = Field(
        "", description="adapter to analyse (standalone squeeze only; campaigns use their first run)"
    )
    compress_to: int = Field(
        0, ge=0, description="rank to compress to when output_path is set; 0 = the recommended rank"
    )
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
        """What `retrain CONFIG` does with it: a campaign wins over a standalone squeeze. `[squeeze]`
        without `[campaign]` is a squeeze even without adapter_path (which it then asks for): it
        used to start a training run of the default model instead."""
        if self.campaign is not None:
            return "campaign"
        if self.squeeze is not None:
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
            problem, value = check_path(Config, dotted, value)
            if problem:
                problems.append(f'"{dotted}": {problem}')
                continue
            set_path(raw, dotted.split("."), value)
            origins[tuple(dotted.split("."))] = f'"{dotted}"'
        cfg, more = validate(Config, raw, origins)
        if problems or more:
            raise ConfigError(problems + more, source="overrides")
        assert isinstance(cfg, Config)
        return cfg
