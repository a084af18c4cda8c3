"""Starter TOML files for `retrain init`, commented from the config models' descriptions.

Values come from the models (the standard profile) or from QUICKSTART_OVERRIDES, so a template
can never disagree with the defaults it documents; a test loads every template. The experiment
and campaign templates hold every key of every table: the ones people edit as settings, the rest
commented out at their defaults, each under its description (a test checks none is missing).

    text = render_template("campaign")
    write_template("experiment", "retrain.toml")   # refuses to overwrite
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from retrain.config import (
    QUICKSTART_OVERRIDES,
    CampaignConfig,
    ConditionConfig,
    Config,
    SqueezeConfig,
    field_type_text,
    iter_tables,
    quickstart_config,
    toml_value,
)
from retrain.errors import RetrainError

TEMPLATES = ("quickstart", "experiment", "campaign")

# The keys people edit for a real experiment; everything else keeps its default.
EXPERIMENT_KEYS = [
    "model.name", "model.lora_rank",
    "algorithm.advantage_mode", "algorithm.transform_mode", "algorithm.uncertainty_kind",
    "training.seed", "training.max_steps", "training.batch_size", "training.group_size",
    "training.max_tokens", "training.temperature", "training.lr", "training.save_every",
    "gtpo.beta", "hicra.alpha",
    "sepa.steps", "sepa.schedule", "sepa.delay_steps", "sepa.correct_rate_gate",
    "data.source", "data.split", "data.max_examples",
    "reward.type",
    "backend.backend", "backend.device",
    "logging.log_dir", "logging.wandb_project",
    "eval.every",
]  # fmt: skip

# The "small sweep" of docs/research-guide.md: validate with 3 seeds and 100 steps before scaling to 8 x 500.
CAMPAIGN_EXAMPLE = {
    "seeds": [42, 101, 202],
    "max_steps": 100,
    "executor": "sequential",
    "conditions": [("grpo", "none"), ("maxrl", "gtpo_sepa")],
}

_HEADERS = {
    "quickstart": [
        "retrain quickstart: SmolLM2-135M (embedded, CPU) learns 2-operand addition in 40 steps.",
        "Run it:          retrain retrain.toml",
        "Preview it:      retrain explain retrain.toml",
        "Every key is documented in docs/config.md; unlisted keys keep their defaults.",
    ],
    "experiment": [
        "retrain experiment: the standard research profile (Qwen3-4B, MATH, maxrl + gtpo_sepa).",
        "Run it:          retrain retrain.toml      (override any key: --training.lr 1e-5 --seed 7)",
        "Preview it:      retrain explain retrain.toml",
        "Every key is here: the usual settings, then the rest commented out at their defaults (uncomment",
        "to change). MATH comes from the Hugging Face hub: pip install 'retrain[datasets]', or set",
        "[data] path to a local JSONL copy (docs/data.md).",
    ],
    "campaign": [
        "retrain campaign: every condition x every seed, each a full run, logged side by side.",
        "Run it:          retrain retrain.toml      (resume: retrain resume logs/campaign_<stamp>)",
        "Preview it:      retrain explain retrain.toml   (shows the run matrix and total episodes)",
        "Analyse it:      retrain report logs/campaign_<stamp>",
        "Every key is here; the ones commented out keep their defaults (uncomment to change).",
    ],
}


def _comment(model: type, key: str) -> str:
    field = model.model_fields[key]
    if field.is_required():
        return f"# {field.description}  [{field_type_text(field)}; required]"
    default = field.get_default(call_default_factory=True)
    return f"# {field.description}  [{field_type_text(field)}; default {toml_value(default)}]"


def _render_tables(cfg: Config, keys: Sequence[str], every_key: bool = False) -> list[str]:
    """`[table]` blocks: `keys` (dotted) as settings, each under its description comment; with
    `every_key`, also every other key of every table, commented out at its default."""
    lines: list[str] = []
    chosen: dict[str, list[str]] = {}
    for dotted in keys:
        table, key = dotted.split(".")
        chosen.setdefault(table, []).append(key)
    for table, model in iter_tables():
        if table in _OPTIONAL_TABLES or (table not in chosen and not every_key):
            continue
        section = getattr(cfg, table)
        lines += [f"# {(model.__doc__ or '').strip().splitlines()[0]}", f"[{table}]"]
        for key in model.model_fields if every_key else chosen[table]:
            setting = f"{key} = {toml_value(getattr(section, key))}"
            lines += [_comment(model, key), setting if key in chosen.get(table, []) else f"# {setting}"]
        lines.append("")
    return lines


# Tables whose presence changes what a config is (a campaign, a squeeze): never active by accident.
_OPTIONAL_TABLES = ("campaign", "campaign.conditions", "squeeze")


def _commented_table(header: str, model: type, values: dict) -> list[str]:
    """A whole table commented out: `# key = value  # description [type; default]` per key."""
    lines = [f"# {header}"]
    for key in model.model_fields:
        if key in values:
            lines.append(f"# {key} = {toml_value(values[key])}  {_comment(model, key)}")
    return lines


def _render_optional(campaign: bool) -> list[str]:
    """[campaign] and [squeeze], commented out: what adding them does, with every key."""
    lines: list[str] = []
    if campaign:
        lines += [
            "# Optional: a campaign (conditions x seeds, each a full run) instead of one run.",
            "# `retrain init --template campaign` writes one ready to run.",
        ]
        lines += _commented_table(
            "[campaign]",
            CampaignConfig,
            {
                k: f.get_default(call_default_factory=True)
                for k, f in CampaignConfig.model_fields.items()
                if k != "conditions"
            },
        )
        lines += _commented_table(
            "[[campaign.conditions]]", ConditionConfig, {"advantage_mode": "maxrl", "transform_mode": "gtpo_sepa"}
        )
        lines += ['# "sepa.steps" = 100  # any other key: a dotted override for this condition\'s runs', ""]
    lines += [
        "# Optional: LoRA-Squeeze. With [campaign] it analyses the first finished run's adapter; without",
        "# [campaign] the config is a standalone squeeze of adapter_path (nothing is trained).",
    ]
    lines += _commented_table(
        "[squeeze]",
        SqueezeConfig,
        {k: f.get_default(call_default_factory=True) for k, f in SqueezeConfig.model_fields.items()},
    )
    return lines + [""]


def _render_campaign() -> list[str]:
    lines = [f"# {(CampaignConfig.__doc__ or '').strip()}", "[campaign]"]
    for key, field in CampaignConfig.model_fields.items():
        if key == "conditions":
            continue
        value = CAMPAIGN_EXAMPLE.get(key, field.get_default(call_default_factory=True))
        setting = f"{key} = {toml_value(value)}"
        lines += [_comment(CampaignConfig, key), setting if key in CAMPAIGN_EXAMPLE else f"# {setting}"]
    lines += [
        "",
        "# One [[campaign.conditions]] per arm (none at all = the 5-condition ablation). Any key",
        '# besides the two modes overrides that arm\'s runs, e.g. "sepa.steps" = 100 or "training.lr" = 1e-5.',
    ]
    for adv, transform in CAMPAIGN_EXAMPLE["conditions"]:
        lines += ["[[campaign.conditions]]", _comment(ConditionConfig, "advantage_mode")]
        lines += [f"advantage_mode = {toml_value(adv)}", _comment(ConditionConfig, "transform_mode")]
        lines += [f"transform_mode = {toml_value(transform)}", ""]
    return lines


def render_template(name: str) -> str:
    """The text `retrain init --template NAME` writes."""
    if name not in TEMPLATES:
        raise RetrainError(f"unknown template {name!r}; choose one of {', '.join(TEMPLATES)}")
    lines = [f"# {line}" if line else "#" for line in _HEADERS[name]] + [""]
    if name == "quickstart":
        lines += _render_tables(quickstart_config(), list(QUICKSTART_OVERRIDES))
    else:
        lines += _render_tables(Config(), EXPERIMENT_KEYS, every_key=True)
    if name == "campaign":
        lines += _render_campaign()
    if name != "quickstart":
        lines += _render_optional(campaign=name != "campaign")
    return "\n".join(lines).rstrip("\n") + "\n"


def write_template(name: str, path: str | Path) -> Path:
    """Write template `name` to `path`; never overwrites (RetrainError when `path` exists)."""
    text = render_template(name)
    target = Path(path)
    if not target.parent.is_dir():
        raise RetrainError(f"{target.parent} does not exist; create the directory first or choose another path")
    try:
        # "x" mode: the existence check and the creation are one step, so a file that appears
        # in between is still never truncated.
        with target.open("x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise RetrainError(
            f"{target} already exists; init never overwrites a file. "
            f"Choose another path: retrain init --template {name} other.toml"
        ) from None
    return target
