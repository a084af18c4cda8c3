"""examples/ablation_cpu.toml: it loads, and its five conditions train differently on its own task.

The issue this guards against: with the default gram list the embedded model wrote no planning
phrase, so `maxrl+gtpo_hicra` trained exactly like `maxrl+gtpo` and SEPA pooled every token. Here the
example's gram list is applied to completions SmolLM2-135M wrote for the example's prompts (logged
by the measured campaign of docs/cpu_task.md), and every pair of conditions must give different
token advantages on the same group.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np

from retrain.campaign.grid import expand_campaign
from retrain.config import ABLATION_CONDITIONS, load_config
from retrain.data.arithmetic import to_example
from retrain.rewards import match_reward
from retrain.rl.advantages import ADVANTAGES
from retrain.rl.planning import DEFAULT_STRATEGIC_GRAMS, planning_mask
from retrain.rl.sepa import SEPAController
from retrain.rl.transforms import TRANSFORMS, knob_values

EXAMPLE = Path(__file__).parents[1] / "examples" / "ablation_cpu.toml"

# One group (the prompt "What is 27 + 38? Solve it step by step.", answer 65) as SmolLM2-135M wrote
# it at step 1 of grpo+none_s42 in the campaign of docs/cpu_task.md (48-token cap).
PROBLEM = (27, "+", 38)
GROUP = [
    "To solve 27 + 38, first, let's find the sum of 27 and 38.\n\nWe add them together: 27 + 38 = 65.\n\nNow",  # correct: the last number is the sum
    "27 + 38 = 85",
    "To solve 27 + 38, we need to first combine the two 27s to get the new value of the 27 + 38, which is 112. We can do this by",
    "I can help you with that. To solve 27 + 38, you simply add 27 to 38. So, you would add 27 + 38 = 105.",
    "To solve the equation 27 + 38, we need to combine the 27 and 38 in a way that will not involve any multiplication or division. First, we can add the 27 and 3",
    "127 is a mix of 2 plus 3 and 28.",
    "To solve 27 + 38, we follow step-by-step:\n\nAdd the numbers: 27 + 38 = 70\n\nStep-by-step:\n\nAdd the numbers",
    "To solve 27 + 38, you can use the simple equation: 27 + 38 = 79 + 16.",
]


def _words(text: str) -> list[tuple[int, int]]:
    """Word and punctuation pieces with their character spans: stand-ins for the tokenizer's
    tokens (the planning mask maps character spans, so only the token boundaries differ)."""
    return [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)]


def test_example_loads_as_the_five_condition_ablation_on_the_steps_task():
    cfg = load_config(EXAMPLE)
    runs = expand_campaign(cfg)
    labels = list(dict.fromkeys(r.label for r in runs))
    assert labels == [f"{adv}+{tr}" for adv, tr in ABLATION_CONDITIONS]
    assert len(runs) == len(labels) * len(cfg.campaign.seeds)
    for run in runs:
        assert run.config.data.prompt_style == "steps"
        assert run.config.planning.strategic_grams == cfg.planning.strategic_grams
        assert run.config.training.max_steps == cfg.campaign.max_steps
    # its own list, not the default one the model never writes
    assert cfg.planning.strategic_grams
    assert not set(cfg.planning.strategic_grams) & set(DEFAULT_STRATEGIC_GRAMS)


def test_example_grams_mark_planning_tokens_in_the_tasks_completions():
    grams = load_config(EXAMPLE).planning.strategic_grams
    masks = [planning_mask(text, _words(text), grams) for text in GROUP]
    fraction = sum(map(sum, masks)) / sum(map(len, masks))
    assert sum(any(m) for m in masks) >= 3
    assert 0.02 < fraction < 0.5  # planning tokens exist, and they are not everything
    # the default list marks nothing here: the void comparison this example replaces
    assert not any(any(planning_mask(text, _words(text), None)) for text in GROUP)


def _token_advantages(run_cfg, step: int) -> list[float]:
    """What one condition trains on for GROUP at `step`: episode advantages, then its transform with
    the knobs and SEPA lambda its config gives, after a first step with one correct completion of 16
    (the base model's rate on this task: SEPA's gate must open on it)."""
    example = to_example(PROBLEM, run_cfg.data.prompt_style)
    rewards_G = [match_reward(text, example.answer, example.answer_format) for text in GROUP]
    adv_G = ADVANTAGES.resolve(run_cfg.algorithm.advantage_mode)(rewards_G)
    s = run_cfg.sepa
    sepa = SEPAController(s.steps, s.schedule, s.delay_steps, s.correct_rate_gate, warmup=s.warmup)
    sepa.observe(1 / 16, [0.0, 1.0], step=0)
    entry = TRANSFORMS.entry(run_cfg.algorithm.transform_mode)
    knobs = knob_values(
        entry.consumes, beta=run_cfg.gtpo.beta, alpha=run_cfg.hicra.alpha, sepa_lambda=sepa.resolve_lambda(step)
    )
    rng = np.random.default_rng(0)  # the same token uncertainties for every condition
    out: list[float] = []
    for text, adv in zip(GROUP, adv_G, strict=True):
        spans = _words(text)
        h_T = rng.uniform(0.05, 2.0, len(spans)).tolist()
        out += entry.load()(adv, h_T, planning_mask(text, spans, run_cfg.planning.strategic_grams), **knobs)
    return out


def test_example_conditions_train_pairwise_differently():
    cfg = load_config(EXAMPLE)
    seed = cfg.campaign.seeds[0]
    runs = {r.label: r.config for r in expand_campaign(cfg) if r.seed == seed}
    rewards = {match_reward(t, to_example(PROBLEM, "steps").answer, "number") for t in GROUP}
    assert rewards == {0.0, 1.0}  # a group with a learning signal
    last = cfg.campaign.max_steps - 1
    advantages = {label: _token_advantages(run_cfg, last) for label, run_cfg in runs.items()}
    for (a, adv_a), (b, adv_b) in itertools.combinations(advantages.items(), 2):
        assert not np.allclose(adv_a, adv_b), f"{a} and {b} train on the same token advantages"
