"""Configuration: one typed model per TOML table, loading, overrides, validation, docs.

    cfg = load_config("retrain.toml", ["--training.lr", "1e-4", "--seed", "7"])
    cfg.training.lr, cfg.condition            # 0.0001, "maxrl+gtpo_sepa"
    cfg.with_overrides({"sepa.steps": 100})   # a validated copy

Every problem is collected and raised together as one `ConfigError`, each reading like
`[training].lr: must be > 0, got -1`; pydantic's own wording never reaches the user.

The package, bottom to top (imports point down):

    toml.py     config data <-> TOML text, dotted paths (no config class)
    labels.py   condition labels (`maxrl+gtpo_sepa~sepa.steps=100`)
    schema.py   walking the models: dotted paths, error locations
    errors.py   pydantic errors in the config's words; checks between keys (from the registries)
    tables.py   the table models and `Config`
    load.py     load_config, CLI overrides, the quickstart and the ablation
    docs.py     docs/config.md, generated
"""

from retrain.backends.base import DEFAULT_TARGET_MODULES
from retrain.config.docs import config_reference_markdown, field_type_text, iter_tables
from retrain.config.errors import GRID_OWNED_KEYS, REGISTRIES, chosen_variants
from retrain.config.labels import condition_label
from retrain.config.load import (
    ABLATION_CONDITIONS,
    ALIASES,
    DEFAULT_CONFIG_FILE,
    QUICKSTART_OVERRIDES,
    load_config,
    parse_override_tokens,
    quickstart_config,
    resolve_config_path,
)
from retrain.config.tables import (
    DEFAULT_CAMPAIGN_SEEDS,
    MAX_SEED,
    AlgorithmConfig,
    BackendConfig,
    BackpressureConfig,
    CampaignConfig,
    ConditionConfig,
    Config,
    DataConfig,
    EvalConfig,
    GTPOConfig,
    HICRAConfig,
    InferenceConfig,
    LoggingConfig,
    ModelConfig,
    PlanningConfig,
    RewardConfig,
    SEPAConfig,
    SqueezeConfig,
    TrainingConfig,
)
from retrain.config.toml import config_to_dict, config_to_toml, flatten_dict, toml_value
from retrain.rl.planning import DEFAULT_STRATEGIC_GRAMS

__all__ = [
    "ABLATION_CONDITIONS",
    "ALIASES",
    "DEFAULT_CAMPAIGN_SEEDS",
    "DEFAULT_CONFIG_FILE",
    "DEFAULT_STRATEGIC_GRAMS",
    "DEFAULT_TARGET_MODULES",
    "GRID_OWNED_KEYS",
    "MAX_SEED",
    "QUICKSTART_OVERRIDES",
    "REGISTRIES",
    "AlgorithmConfig",
    "BackendConfig",
    "BackpressureConfig",
    "CampaignConfig",
    "ConditionConfig",
    "Config",
    "DataConfig",
    "EvalConfig",
    "GTPOConfig",
    "HICRAConfig",
    "InferenceConfig",
    "LoggingConfig",
    "ModelConfig",
    "PlanningConfig",
    "RewardConfig",
    "SEPAConfig",
    "SqueezeConfig",
    "TrainingConfig",
    "chosen_variants",
    "condition_label",
    "config_reference_markdown",
    "config_to_dict",
    "config_to_toml",
    "field_type_text",
    "flatten_dict",
    "iter_tables",
    "load_config",
    "parse_override_tokens",
    "quickstart_config",
    "resolve_config_path",
    "toml_value",
]
