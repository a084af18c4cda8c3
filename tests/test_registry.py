"""The extension-point registry: built-in entries, "module:function" plugins, clear errors."""

import doctest
import sys
import textwrap

import pytest

from retrain.errors import RetrainError
from retrain.rl import advantages, transforms
from retrain.rl.advantages import ADVANTAGES, grpo_advantages, maxrl_advantages
from retrain.rl.transforms import TRANSFORMS


def resolve(name, registry, kind):
    assert registry.kind == kind
    return registry.resolve(name)


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A user's plugin module in the current directory, as next to their TOML."""
    (tmp_path / "user_plugins_rl.py").write_text(
        textwrap.dedent("""
        import math

        NOT_CALLABLE = 3

        def rank_advantages(rewards):
            order = sorted(rewards)
            return [order.index(r) - (len(rewards) - 1) / 2 for r in rewards]

        def too_short(rewards):
            return [0.0]

        def not_finite(rewards):
            return [math.nan] * len(rewards)

        def planning_only(advantage, h, planning_mask, *, beta, alpha, sepa_lambda):
            return [2.0 * advantage if m else 0.0 for m in planning_mask]
    """)
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "user_plugins_rl", raising=False)
    yield tmp_path
    sys.modules.pop("user_plugins_rl", None)


def test_builtins_are_returned_as_is():
    assert {name: ADVANTAGES.resolve(name) for name in ADVANTAGES} == {
        "grpo": grpo_advantages,
        "maxrl": maxrl_advantages,
    }
    assert resolve("grpo", ADVANTAGES, "advantage") is grpo_advantages
    assert resolve("maxrl", ADVANTAGES, "advantage") is maxrl_advantages
    # One table: token_advantages and the registry see the same transforms.
    assert TRANSFORMS is transforms.TRANSFORMS
    assert set(TRANSFORMS) == {"none", "gtpo", "gtpo_hicra", "gtpo_sepa"}
    for name in TRANSFORMS:
        assert resolve(name, TRANSFORMS, "transform") is TRANSFORMS.entry(name).target


def test_advantage_plugin_from_the_current_directory(plugin_dir):
    fn = resolve("user_plugins_rl:rank_advantages", ADVANTAGES, "advantage")
    assert fn([0.1, 0.9, 0.5]) == [-1.0, 1.0, 0.0]
    assert str(plugin_dir) not in sys.path  # the import path is restored afterwards


def test_transform_plugin_through_token_advantages(plugin_dir):
    out = transforms.token_advantages(0.5, [1.0, 2.0, 3.0], [0, 1, 1], transform="user_plugins_rl:planning_only")
    assert out == [0.0, 1.0, 1.0]


def test_plugin_output_is_checked(plugin_dir):
    with pytest.raises(RetrainError, match="returned 1 values for 3 rewards"):
        resolve("user_plugins_rl:too_short", ADVANTAGES, "advantage")([0.0, 1.0, 0.0])
    with pytest.raises(RetrainError, match="non-finite"):
        resolve("user_plugins_rl:not_finite", ADVANTAGES, "advantage")([0.0, 1.0])


def test_installed_module_paths_work():
    fn = resolve("retrain.rl.advantages:grpo_advantages", ADVANTAGES, "advantage")
    assert fn([1.0, 0.0]) == [0.5, -0.5]


@pytest.mark.parametrize(
    "path, message",
    [
        ("grpoo", r"unknown advantage 'grpoo'.*grpo, maxrl.*'package.module:function'.*Did you mean 'grpo'"),
        ("my.pkg.fn", r"Did you mean 'my.pkg:fn'"),
        ("a:b:c", r"must look like 'package.module:function'"),
        (":fn", r"must look like"),
        ("no_such_module_xyz:fn", r"cannot import module 'no_such_module_xyz'"),
        ("user_plugins_rl:missing", r"has no attribute 'missing'"),
        ("user_plugins_rl:NOT_CALLABLE", r"'NOT_CALLABLE' is not callable"),
    ],
)
def test_bad_names_and_paths_are_user_errors(plugin_dir, path, message):
    with pytest.raises(RetrainError, match=message):
        resolve(path, ADVANTAGES, "advantage")


def test_unknown_transform_lists_the_transforms():
    with pytest.raises(RetrainError, match="none, gtpo, gtpo_hicra, gtpo_sepa"):
        resolve("sepa", TRANSFORMS, "transform")


def test_protocol_examples_in_docstrings_run():
    attempted = 0
    for module in (advantages, transforms):
        result = doctest.testmod(module)
        assert result.failed == 0
        attempted += result.attempted
    assert attempted >= 4


def test_a_transform_entry_must_declare_the_knobs_its_signature_asks_for():
    from retrain.registry import Registry

    fresh = Registry(
        "transform",
        "[algorithm].transform_mode",
        transforms.transform_variant,
        validate_entry=TRANSFORMS.validate_entry,
    )
    with pytest.raises(ValueError, match=r"declares \['beta'\] but its signature asks for \[\]"):
        fresh.register("flat", summary="A_t = A", consumes={"beta"})(
            lambda advantage, h, planning_mask: [advantage] * len(h)
        )
    with pytest.raises(RetrainError, match=r"asks for keyword\(s\) \['gamma'\]"):
        transforms.transform_variant(lambda a, h, m, *, gamma: [a] * len(h), "p:gamma")
    with pytest.raises(ValueError, match="unknown inputs"):
        fresh.register("odd", summary="", consumes={"temperature"})(transforms.none_transform)


def test_each_registry_lists_its_builtins_and_plugin_stance():
    from retrain.config import REGISTRIES

    kinds = {r.key: (r.names, r.plugins) for r in REGISTRIES}
    assert kinds["[algorithm].transform_mode"] == (["none", "gtpo", "gtpo_hicra", "gtpo_sepa"], True)
    assert kinds["[reward].type"] == (["match", "math", "custom"], False)
    assert kinds["[backend].backend"] == (["local", "tinker"], True)
    assert kinds["[inference].engine"] == (["hf", "openai"], False)
    assert kinds["[data].source"][0][-1] == "reasoning_gym"
