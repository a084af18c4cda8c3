"""The CLI: bad configs exit 2 with a clear message and write nothing; routing; init; explain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from retrain.cli import EXTERNAL_VERBS, main
from retrain.config import load_config, quickstart_config


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under `root` with its size and mtime: 'nothing was written' means equal snapshots."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }  # fmt: skip


COND = '[[campaign.conditions]]\nadvantage_mode = "grpo"\ntransform_mode = "none"\n'

# (TOML text or None for "no file argument", extra CLI args, substrings the message must contain)
MALFORMED = [
    pytest.param(
        "[trainng]\nlr = 1e-4\n", [], ["[trainng]: unknown table", "did you mean [training]?"], id="unknown-table"
    ),
    pytest.param("[training]\nlrr = 1e-4\n", [], ["[training].lrr: unknown key", "did you mean lr?"], id="unknown-key"),
    pytest.param(
        "[model]\nlr = 1e-4\n", [], ["[model].lr: unknown key", "lr belongs in [training]"], id="key-in-wrong-table"
    ),
    pytest.param(
        "seed = 3\n", [], ["seed: keys belong in a table", "did you mean [training].seed?"], id="stray-top-level-key"
    ),
    pytest.param(
        '[data]\nshuffle = "false"\n',
        [],
        ['[data].shuffle: expected true or false, got the string "false"', "without quotes"],
        id="string-false",
    ),
    pytest.param(
        "[training]\nbatch_size = true\n",
        [],
        ["[training].batch_size: expected an integer, got true"],
        id="bool-for-int",
    ),
    pytest.param("[training]\nlr = -1\n", [], ["[training].lr: must be > 0, got -1"], id="negative-lr"),
    pytest.param("[training]\ntop_p = 1.5\n", [], ["[training].top_p: must be <= 1, got 1.5"], id="top-p"),
    pytest.param(
        "[training]\ntemperature = 0\n", [], ["[training].temperature: must be > 0, got 0"], id="zero-temperature"
    ),
    pytest.param(
        "[training]\nbatch_size = 2.5\n",
        [],
        ["[training].batch_size: expected an integer, got 2.5"],
        id="float-for-int",
    ),
    pytest.param(
        '[training]\nmax_steps = "100"\n',
        [],
        ['[training].max_steps: expected an integer, got the string "100"'],
        id="string-for-int",
    ),
    pytest.param("[training]\nlr = inf\n", [], ["[training].lr: must be a finite number, got inf"], id="infinite-lr"),
    pytest.param(
        '[training]\nloss_agg = "sum"\n',
        [],
        ["[training].loss_agg: must be one of 'token_mean', 'seq_mean', got the string \"sum\""],
        id="bad-literal",
    ),
    pytest.param(
        '[algorithm]\ntransform_mode = "gtpo_sep"\n',
        [],
        ["[algorithm].transform_mode: must be one of", "did you mean 'gtpo_sepa'?"],
        id="bad-mode",
    ),
    pytest.param(
        '[logging]\nwandb_mode = "onlin"\n',
        [],
        ["[logging].wandb_mode", "did you mean 'online'?"],
        id="literal-suggestion",
    ),
    pytest.param("[model]\nlora_rank = 0\n", [], ["[model].lora_rank: must be >= 1, got 0"], id="zero-rank"),
    pytest.param(
        '[model]\ntarget_modules = "q_proj"\n', [], ["[model].target_modules: expected a list"], id="string-for-list"
    ),
    pytest.param('[model]\nname = ["a"]\n', [], ["[model].name: expected a string (in quotes)"], id="list-for-string"),
    pytest.param("training = 5\n", [], ["[training]: expected a table, got 5"], id="scalar-for-table"),
    pytest.param(
        "[sepa]\ncorrect_rate_gate = 1.5\n", [], ["[sepa].correct_rate_gate: must be <= 1, got 1.5"], id="gate-range"
    ),
    pytest.param("[gtpo]\nbeta = -0.1\n", [], ["[gtpo].beta: must be >= 0, got -0.1"], id="negative-beta"),
    pytest.param(
        '[data]\noperations = ["/"]\n', [], ["[data].operations[0]: must be one of '+', '-', '*'"], id="bad-operation"
    ),
    pytest.param(
        '[backend]\ndevice = "gpu"\n', [], ["[backend].device: must be auto, cpu, cuda or cuda:N"], id="bad-device"
    ),
    pytest.param("[training]\nlr = \n", [], ["TOML syntax error", "line 2"], id="toml-syntax"),
    pytest.param(
        "",
        ["--training.lrr", "1"],
        ["--training.lrr: unknown key [training].lrr", "did you mean --training.lr (or --lr)?"],
        id="bad-override-path",
    ),
    pytest.param(
        "",
        ["--training.batch_size", "abc"],
        ['[training].batch_size: expected an integer, got the string "abc" (set by --training.batch_size)'],
        id="bad-override-value",
    ),
    pytest.param("", ["--lr=-2"], ["[training].lr: must be > 0, got -2 (set by --lr)"], id="bad-alias-value"),
    pytest.param("", ["--seed"], ["--seed: needs a value"], id="override-without-value"),
    pytest.param("", ["stray"], ["unexpected argument 'stray'"], id="stray-argument"),
    pytest.param(
        "[campaign]\nseeds = []\n",
        [],
        ["[campaign].seeds: must list at least one seed", "seeds = [42, 101, 202]"],
        id="empty-seeds",
    ),
    pytest.param(
        "[campaign]\nseeds = [1, 1]\n", [], ["[campaign].seeds: lists seed(s) [1] more than once"], id="duplicate-seeds"
    ),
    pytest.param(
        '[data]\nsource = "jsonl"\n',
        [],
        ['[data].path: required when source = "jsonl"', 'set path = "train.jsonl"'],
        id="jsonl-without-path",
    ),
    pytest.param(
        '[reward]\ntype = "custom"\n',
        [],
        ['[reward].custom: required when type = "custom"'],
        id="custom-without-function",
    ),
    pytest.param(
        "[campaign]\n" + COND + COND,
        [],
        ["[campaign].conditions[1]: duplicates condition [0] (grpo+none)"],
        id="duplicate-conditions",
    ),
    pytest.param(
        "[campaign]\n" + COND + '"sepa.stepz" = 1\n',
        [],
        ["[campaign].conditions[0]", "unknown key [sepa].stepz", "did you mean sepa.steps?"],
        id="condition-unknown-override",
    ),
    pytest.param(
        "[campaign]\n" + COND + '"sepa.steps" = -1\n',
        [],
        ["[campaign].conditions[0]: [sepa].steps: must be >= 0, got -1"],
        id="condition-bad-value",
    ),
    pytest.param(
        "[campaign]\n" + COND + '"training.seed" = 3\n',
        [],
        ["cannot be overridden per condition", "[campaign].seeds"],
        id="condition-owned-key",
    ),
    pytest.param(
        '[campaign]\n[[campaign.conditions]]\nadvantage_mode = "grpo"\n',
        [],
        ["[campaign].conditions[0].transform_mode: required key is missing"],
        id="condition-missing-mode",
    ),
    pytest.param(
        "[training]\nclip_eps_high = 0.3\n",
        [],
        ["[training].clip_eps_high: needs clip_eps > 0"],
        id="clip-high-without-clip",
    ),
    pytest.param(None, ["missing.toml"], ["file not found: missing.toml", "retrain init"], id="missing-file"),
    # issue #11 item 5: tracebacks or values that validated but exploded
    pytest.param("a = " + "[" * 2000 + "]" * 2000 + "\n", [], ["nested too deeply to read"], id="deep-toml"),
    pytest.param(
        "[training]\nseed = " + "9" * 5000 + "\n", [], ["a number with more than 4300 digits"], id="5000-digits"
    ),
    pytest.param(
        "[training]\nseed = " + "9" * 4000 + "\n",
        [],
        ["[training].seed: must be <= 4294967295, got 9999", "more characters)"],
        id="4000-digits-shown-short",
    ),
    pytest.param(
        "",
        ["--seed", "9" * 5000],
        ["[training].seed: expected an integer", "more characters)"],
        id="5000-digit-override",
    ),
    pytest.param("[training]\nlr = 1e300\n", [], ["[training].lr: must be <= 1, got 1e+300"], id="lr-1e300"),
]


@pytest.mark.parametrize("verb", [[], ["explain"]], ids=["run", "explain"])
@pytest.mark.parametrize("text, extra, expected", MALFORMED)
def test_malformed_config_exits_2_with_message_and_writes_nothing(
    tmp_path, monkeypatch, capsys, verb, text, extra, expected
):
    monkeypatch.chdir(tmp_path)
    args = list(verb)
    if text is not None:
        (tmp_path / "bad.toml").write_text(text)
        args.append("bad.toml")
    before = _snapshot(tmp_path)
    code = main(args + extra)
    err = capsys.readouterr().err
    assert code == 2
    for fragment in expected:
        assert fragment in err, f"{fragment!r} not in:\n{err}"
    assert "Traceback" not in err and "pydantic" not in err and "Input should be" not in err
    assert _snapshot(tmp_path) == before


def test_malformed_configs_are_many_and_distinct():
    assert len({p.id for p in MALFORMED}) == len(MALFORMED) >= 25


# --- routing to the run / campaign / squeeze functions ----------------------------------------


@pytest.fixture
def fakes(monkeypatch):
    """Fake retrain.run / campaign.runner / squeeze modules recording what the CLI hands them."""
    calls: list[tuple] = []
    result = {"code": 0}

    def module(name: str, **functions):
        m = types.ModuleType(name)
        for fn_name, fn in functions.items():
            setattr(m, fn_name, fn)
        monkeypatch.setitem(sys.modules, name, m)

    def record(what):
        def fn(*args):
            calls.append((what, *args))
            if isinstance(result["code"], BaseException):
                raise result["code"]
            return result["code"]

        return fn

    module("retrain.run", train=record("train"), resume=record("resume"))
    module("retrain.campaign.runner", run_campaign=record("run_campaign"), resume_campaign=record("resume_campaign"))
    module("retrain.squeeze", run_from_config=record("squeeze"))
    return calls, result


def test_no_file_runs_the_quickstart(tmp_path, monkeypatch, capsys, fakes):
    calls, _ = fakes
    monkeypatch.chdir(tmp_path)
    assert main([]) == 0
    assert calls == [("train", quickstart_config())]
    assert "built-in quickstart" in capsys.readouterr().err


def test_retrain_toml_in_cwd_with_overrides_and_aliases(tmp_path, monkeypatch, fakes):
    calls, _ = fakes
    monkeypatch.chdir(tmp_path)
    (tmp_path / "retrain.toml").write_text("[training]\nlr = 1e-3\nmax_steps = 5\n")
    assert main(["--seed", "7", "--max-steps=9", "--sepa.steps", "3", "--model.name", "Qwen/Qwen3-4B"]) == 0
    ((what, cfg),) = calls
    assert what == "train" and cfg.training.lr == 1e-3
    assert (cfg.training.seed, cfg.training.max_steps, cfg.sepa.steps, cfg.model.name) == (7, 9, 3, "Qwen/Qwen3-4B")


def test_campaign_and_squeeze_routing(tmp_path, monkeypatch, fakes):
    calls, _ = fakes
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text("[campaign]\nseeds = [1]\n[squeeze]\n")
    (tmp_path / "s.toml").write_text('[squeeze]\nadapter_path = "run/adapter/final"\n')
    (tmp_path / "t.toml").write_text("[training]\nseed = 3\n")  # neither: a run
    assert main(["c.toml"]) == 0 and main(["s.toml"]) == 0 and main(["t.toml"]) == 0
    assert [c[0] for c in calls] == ["run_campaign", "squeeze", "train"]
    assert calls[0][2] == "c.toml" and calls[0][1].campaign.seeds == [1]
    assert calls[1][1].squeeze.adapter_path == "run/adapter/final"


def test_exit_codes_propagate_and_interrupt_is_130(tmp_path, monkeypatch, capsys, fakes):
    _, result = fakes
    monkeypatch.chdir(tmp_path)
    result["code"] = 1
    assert main([]) == 1
    result["code"] = KeyboardInterrupt()
    assert main([]) == 130
    assert "Traceback" not in capsys.readouterr().err


def test_resume_dispatches_on_the_directory_kind(tmp_path, monkeypatch, capsys, fakes):
    calls, _ = fakes
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.toml").write_text("")
    (tmp_path / "camp").mkdir()
    (tmp_path / "camp" / "manifest.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    assert main(["resume", "run"]) == 0 and main(["resume", "camp"]) == 0 and main(["--resume", "run"]) == 0
    assert calls == [("resume", "run"), ("resume_campaign", "camp"), ("resume", "run")]
    assert main(["resume", "empty"]) == 2
    assert "neither a run dir (no config.toml) nor a campaign dir (no manifest.json)" in capsys.readouterr().err
    assert main(["resume", "nowhere"]) == 2
    assert "nowhere: no such directory" in capsys.readouterr().err
    assert main(["--resume", "run", "--lr", "1"]) == 2
    assert "--resume continues a run with its saved config" in capsys.readouterr().err
    assert len(calls) == 3


# --- external verbs ---------------------------------------------------------------------------


def test_missing_verb_module_gives_a_stub_and_other_verbs_still_work(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "retrain.doctor", None)  # import fails as if the file were absent
    assert main(["doctor", "--anything"]) == 2
    assert "doctor is not available yet" in capsys.readouterr().err
    assert main(["init", "x.toml"]) == 0  # unaffected


def test_external_verbs_are_registered_from_their_module(monkeypatch, capsys):
    seen = []
    fake = types.ModuleType("retrain.analysis.cli")

    def register(subparsers):
        for verb in ("plot", "compare", "litmus", "power", "report"):
            p = subparsers.add_parser(verb)
            p.add_argument("--baseline-rate", type=float)
            p.set_defaults(func=lambda args, verb=verb: seen.append((verb, args.baseline_rate)) or 0)

    fake.register = register
    monkeypatch.setitem(sys.modules, "retrain.analysis.cli", fake)
    assert main(["power", "--baseline-rate", "0.3"]) == 0
    assert seen == [("power", 0.3)]
    assert main(["power", "--bogus"]) == 2  # that module's own parser rejects it
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert set(EXTERNAL_VERBS) == {
        "status",
        "squeeze",
        "plot",
        "compare",
        "litmus",
        "power",
        "report",
        "doctor",
        "grams",
    }


def test_usage_errors_exit_2_and_help_exits_0(capsys):
    assert main(["init", "--template", "bogus"]) == 2
    assert main(["resume"]) == 2
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "retrain [CONFIG.toml]" in out and all(v in out for v in ("explain", "litmus", "doctor"))
    assert main(["--version"]) == 0


def test_help_and_explain_import_no_heavy_modules(tmp_path):
    code = (
        "import sys, json; from retrain.cli import main; "
        "main(['--help']); main(['explain', '--json']); "
        "print(json.dumps([m for m in ('torch', 'pandas', 'matplotlib', 'transformers') if m in sys.modules]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


# --- init -------------------------------------------------------------------------------------


@pytest.mark.parametrize("template", ["quickstart", "experiment", "campaign"])
def test_init_writes_a_loadable_commented_file_and_refuses_to_overwrite(tmp_path, monkeypatch, capsys, template):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--template", template]) == 0
    text = (tmp_path / "retrain.toml").read_text()
    assert "# prompts per step" in text or template == "quickstart" and "# completions sampled per prompt" in text
    cfg = load_config("retrain.toml")
    assert (cfg.campaign is not None) == (template == "campaign")
    before = _snapshot(tmp_path)
    assert main(["init", "--template", template]) == 2
    assert "already exists; init never overwrites" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before and (tmp_path / "retrain.toml").read_text() == text


def test_init_into_a_missing_directory_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "no/such/dir.toml"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --- explain ----------------------------------------------------------------------------------


def _explain_json(capsys, args) -> dict:
    assert main(["explain", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_explain_json_single_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    info = _explain_json(capsys, ["--training.max_steps", "30", "--training.group_size", "1"])
    assert info["kind"] == "run" and info["config_path"] is None
    assert info["conditions"] == ["maxrl+gtpo_sepa"] and info["num_runs"] == 1
    assert info["datums_per_step"] == 2 * 1
    assert (info["steps_per_run"], info["total_steps"]) == (30, 30)
    assert (info["episodes_per_run"], info["total_episodes"]) == (60, 60)
    assert info["runs"] == [
        {"name": "maxrl+gtpo_sepa_s42", "condition": "maxrl+gtpo_sepa", "seed": 42, "max_steps": 30, "episodes": 60}
    ]
    assert info["config"]["training"]["max_steps"] == 30 and info["log_dir"] == "logs/quickstart"
    assert any(w.startswith("group_size = 1: every group is uninformative") for w in info["warnings"])
    assert info["estimated_wall_time_s"] is None


def test_explain_json_campaign_matrix(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(
        "[training]\nbatch_size = 2\ngroup_size = 4\nmax_steps = 50\n"
        '[campaign]\nseeds = [1, 2, 3, 4]\nmax_steps = 10\nlog_root = "out"\n'
        + COND
        + '[[campaign.conditions]]\nadvantage_mode = "maxrl"\ntransform_mode = "gtpo_sepa"\n'
        + '[[campaign.conditions]]\nadvantage_mode = "maxrl"\ntransform_mode = "gtpo_sepa"\n"sepa.steps" = 5\n"sepa.delay_steps" = 0\n'
    )
    info = _explain_json(capsys, ["c.toml"])
    assert info["kind"] == "campaign"
    assert info["conditions"] == ["grpo+none", "maxrl+gtpo_sepa", "maxrl+gtpo_sepa~sepa.delay_steps=0~sepa.steps=5"]
    assert info["seeds"] == [1, 2, 3, 4] and info["num_runs"] == 3 * 4
    assert (info["datums_per_step"], info["steps_per_run"], info["total_steps"]) == (8, 10, 120)
    assert (info["episodes_per_run"], info["total_episodes"]) == (80, 960)
    assert [r["name"] for r in info["runs"][:5]] == [
        "grpo+none_s1",
        "grpo+none_s2",
        "grpo+none_s3",
        "grpo+none_s4",
        "maxrl+gtpo_sepa_s1",
    ]
    assert info["log_dir"] == "out/campaign_<YYYYmmdd_HHMMSS>"
    # SEPA with delay 50 >= 10 steps never starts, but only in the condition that keeps the default
    assert any(w.startswith("maxrl+gtpo_sepa: sepa.delay_steps = 50 >= max_steps = 10") for w in info["warnings"])
    assert not any("sepa.steps=5:" in w for w in info["warnings"])


def test_explain_default_ablation_and_text_output(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text("[campaign]\nseeds = [1, 2]\n")
    info = _explain_json(capsys, ["c.toml"])
    assert info["conditions"] == ["grpo+none", "maxrl+none", "maxrl+gtpo", "maxrl+gtpo_hicra", "maxrl+gtpo_sepa"]
    assert info["num_runs"] == 10 and info["total_episodes"] == 10 * 500 * 128
    assert any("2 seed(s) per condition: litmus needs >= 3" in w for w in info["warnings"])
    assert main(["explain", "c.toml"]) == 0
    out = capsys.readouterr().out
    assert "5 condition(s) x 2 seed(s) = 10" in out and "total episodes    640000" in out
    assert "maxrl+gtpo_hicra  seeds 1 2" in out


def test_explain_estimates_wall_time_from_a_prior_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "logs" / "quickstart"
    run.mkdir(parents=True)
    rows = [{"step": i, "step_time_s": t} for i, t in enumerate([2.0, 4.0, 3.0, 100.0, 3.5])]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    info = _explain_json(capsys, [])
    assert info["estimated_step_time_s"] == 3.5  # the median shrugs off the 100 s outlier
    assert info["estimated_wall_time_s"] == 3.5 * 40


def test_explain_warnings_for_cpu_and_the_embedded_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    info = _explain_json(
        capsys,
        [
            "--training.temperature",
            "1.0",
            "--backend.device",
            "cpu",
            "--model.lora_rank",
            "128",
            "--training.max_tokens",
            "4096",
        ],
    )
    warnings = "\n".join(info["warnings"])
    assert "temperature = 1.0 on smollm2-135m" in warnings
    assert "lora_rank = 128 on CPU" in warnings and "max_tokens = 4096 on CPU" in warnings


def test_python_dash_m_retrain(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "retrain", "explain", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["conditions"] == ["maxrl+gtpo_sepa"]


def test_explain_standalone_squeeze_trains_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text('[squeeze]\nadapter_path = "a"\noutput_path = "b"\n')
    info = _explain_json(capsys, ["s.toml"])
    assert (info["kind"], info["num_runs"], info["total_episodes"], info["conditions"]) == ("squeeze", 0, 0, [])
    assert main(["explain", "s.toml"]) == 0
    assert "squeeze a -> b" in capsys.readouterr().out


def test_sepa_ramp_warning_only_when_lambda_falls_short():
    from retrain.config import Config
    from retrain.explain import final_lambda, run_warnings

    def final(steps, delay, max_steps):
        return final_lambda(
            Config().with_overrides({"sepa.steps": steps, "sepa.delay_steps": delay, "training.max_steps": max_steps})
        )

    # λ at the last step the run takes (max_steps - 1), by the controller's linear_lambda
    assert final(40, 5, 40) == 0.85 and final(500, 50, 100) == 0.098
    assert final(0, 0, 10) == 0.0 and final(10, 0, 50) == 1.0

    def ramp_warnings(**sepa):
        cfg = Config().with_overrides({f"sepa.{k}": v for k, v in sepa.items()} | {"training.max_steps": 100})
        return [w for w in run_warnings(cfg, on_cpu=False) if "λ never reaches 1" in w]

    assert ramp_warnings(steps=90, delay_steps=20) == []  # ends at 0.89: "near 1", as in the standard profile
    assert ramp_warnings(steps=500, delay_steps=50) == [
        "sepa.delay_steps + sepa.steps = 550 > max_steps = 100: λ never reaches 1 (about 0.098 at the last step, 99); "
        "set sepa.steps <= 49"
    ]
    assert len(ramp_warnings(steps=101, delay_steps=0)) == 1  # longer than the run, however close
    assert ramp_warnings(steps=500, delay_steps=0, schedule="auto") == []  # auto can reach 1 on its own
    assert run_warnings(Config(), on_cpu=False) == [] and run_warnings(quickstart_config(), on_cpu=True) == []
