"""The tinker backend against an in-process stand-in for the service (tests/tinker_standin.py): the
math it sends (per-token advantages, aggregation, Adam) equals the local backend's, requests are
pipelined, faults retry or stop resumably, and the config rejects what the service cannot do.
End-to-end runs through `retrain.run` are in tests/test_run_tinker.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import retrain.backends.tinker as tb
from retrain.backends.base import Datum, SamplingParams
from retrain.backends.limiter import FileLimiter
from retrain.config import load_config
from retrain.errors import BackendUnavailable, ConfigError, RetrainError
from retrain.rl.loss import loss_normalizer, policy_loss

tinker = pytest.importorskip("tinker")  # the dev extra installs it; elsewhere these tests skip

from tinker_standin import StandInService, adapters_agree  # noqa: E402 - after the skip: it needs the SDK

ATTN_UNEMBED = {"train_attn": True, "train_mlp": False, "train_unembed": True}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "lm_head"]


@pytest.fixture
def service(monkeypatch) -> StandInService:
    """A stand-in service for the tiny random model, wired in where the backend opens SDK clients."""
    monkeypatch.setenv("TINKER_API_KEY", "tml-test-key")
    svc = StandInService({"tiny-random": "tiny-random"})
    monkeypatch.setattr(tb, "sdk_clients", svc.sdk_clients)
    return svc


def make_backend(service, *, seed=3, loss_agg="token_mean", sleeps=None, **kw):
    return tb.TinkerBackend(
        service.sdk_clients().service(),
        base_model="tiny-random",
        lora_rank=4,
        lora=ATTN_UNEMBED,
        seed=seed,
        loss_agg=loss_agg,
        sleep=(sleeps.append if sleeps is not None else (lambda s: None)),
        **kw,
    )


# ---------------------------------------------------------------------------------------------
# Pure pieces


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    agg=st.sampled_from(["token_mean", "seq_mean"]),
    seed=st.integers(0, 10_000),
)
def test_aggregation_weights_turn_the_services_sum_into_policy_loss(lengths, agg, seed):
    """Σ_d Σ_t −ρ·(w_d·A) (what the service computes) equals policy_loss with the step's normalizer,
    in value and gradient."""
    g = torch.Generator().manual_seed(seed)
    B, T = len(lengths), max(lengths)
    mask = torch.tensor([[t < n for t in range(T)] for n in lengths])
    old = -torch.rand(B, T, generator=g) * 3
    new = (old + 0.3 * torch.randn(B, T, generator=g)).requires_grad_(True)
    adv = torch.randn(B, T, generator=g)
    ours = policy_loss(new, old, adv, mask, loss_agg=agg, normalizer=loss_normalizer(lengths, agg)).loss
    w = torch.tensor(tb.aggregation_weights(lengths, agg))[:, None]
    service = -(torch.exp(new - old) * adv * w * mask).sum()
    assert service.item() == pytest.approx(ours.item(), rel=1e-5, abs=1e-6)
    (g_ours,) = torch.autograd.grad(ours, new)
    (g_service,) = torch.autograd.grad(service, new)
    assert torch.allclose(g_ours, g_service, atol=1e-6)


def test_aggregation_weights_by_hand():
    assert tb.aggregation_weights([2, 3, 5], "token_mean") == [0.1, 0.1, 0.1]
    assert tb.aggregation_weights([2, 4], "seq_mean") == [0.25, 0.125]
    with pytest.raises(ValueError):
        tb.aggregation_weights([1], "sum")


def test_datum_is_shifted_by_one_with_zero_prompt_positions():
    d = tb.to_tinker_datum(tinker.types, Datum([5, 6, 7], [8, 9], [-0.1, -0.2], [1.0, 2.0]), 0.5)
    assert isinstance(d, tinker.Datum) and d.model_input.to_ints() == [5, 6, 7, 8]
    inputs = d.loss_fn_inputs
    assert inputs["target_tokens"].data == [6, 7, 8, 9] and inputs["target_tokens"].dtype == "int64"
    assert inputs["logprobs"].dtype == inputs["advantages"].dtype == "float32"
    assert inputs["logprobs"].data == pytest.approx([0, 0, -0.1, -0.2])
    assert inputs["advantages"].data == pytest.approx([0, 0, 0.5, 1.0])


def test_lora_switches_need_whole_groups():
    assert tb.lora_switches(TARGETS) == ATTN_UNEMBED
    all_proj = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert tb.lora_switches(all_proj) == {"train_attn": True, "train_mlp": True, "train_unembed": False}
    assert tb.lora_switches(["q_proj", "v_proj"]) is None
    assert tb.lora_switches(["gate_proj", "up_proj", "down_proj", "embed_tokens"]) is None


def test_prompt_seeds_are_distinct_deterministic_and_small():
    seeds = [tb.prompt_seed(2**62 + 5, p) for p in range(64)]
    assert len(set(seeds)) == 64 and all(0 <= s < 2**31 for s in seeds)
    assert seeds == [tb.prompt_seed(2**62 + 5, p) for p in range(64)]


# ---------------------------------------------------------------------------------------------
# Config and explain


def _load(tmp_path: Path, text: str):
    path = tmp_path / "c.toml"
    path.write_text('[backend]\nbackend = "tinker"\n' + text)
    return load_config(path)


def test_config_rejects_what_the_service_cannot_honour(tmp_path):
    with pytest.raises(ConfigError) as e:
        _load(
            tmp_path,
            "[backend.options]\nmax_concurent = 2\nmax_retries = -1\n"
            '[model]\nlora_alpha = 8\nlora_dropout = 0.1\ntarget_modules = ["q_proj"]\n'
            "[training]\nclip_eps = 0.2\nkl_beta = 0.05\n"
            '[algorithm]\nuncertainty_kind = "shannon_entropy"\n',
        )
    problems = e.value.problems
    expected = [
        "[backend.options].max_concurent: unknown option for the tinker backend; did you mean 'max_concurrent'?",
        "[backend.options].max_retries: must be an integer >= 0, got -1",
        "[model].lora_alpha:",
        "[model].lora_dropout:",
        "[model].target_modules: Tinker puts LoRA on whole groups",
        "[training].clip_eps:",
        "[training].kl_beta:",
        "[algorithm].uncertainty_kind:",
    ]
    for start in expected:
        assert sum(p.startswith(start) for p in problems) == 1, (start, problems)
    assert len(problems) == len(expected)


def test_a_tinker_config_loads_with_both_aggregations(tmp_path):
    cfg = _load(tmp_path, '[training]\nloss_agg = "seq_mean"\n[backend.options]\nmax_concurrent = 4\n')
    assert tb.ENTRY.with_defaults(cfg.backend.options) == {
        "max_concurrent": 4,
        "max_retries": 3,
        "retry_backoff_s": 2,
        "connect_timeout_s": 60,
        "checkpoint_ttl_s": 0,
    }


def test_retry_backoff_is_seconds_any_number_from_zero(tmp_path):
    for value in ("0", "0.5", "2.25", "3"):
        cfg = _load(tmp_path, f"[backend.options]\nretry_backoff_s = {value}\n")
        assert tb.ENTRY.with_defaults(cfg.backend.options)["retry_backoff_s"] == float(value)
    for value, shown in (("-0.5", "-0.5"), ('"2"', 'the string "2"'), ("true", "true"), ("nan", "nan")):
        with pytest.raises(ConfigError) as e:
            _load(tmp_path, f"[backend.options]\nretry_backoff_s = {value}\n")
        assert e.value.problems == [f"[backend.options].retry_backoff_s: must be a number >= 0, got {shown}"]


def test_explain_lists_what_each_setting_does_and_tokens_per_step(tmp_path, capsys):
    from retrain.cli import main

    log_dir = tmp_path / "prior"
    log_dir.mkdir()
    rows = [
        {
            "step": s,
            "mean_completion_tokens": 100.0,
            "batch_size": 8,
            "group_size": 16,
            "tokens_per_second": 1000.0,
            "step_time_s": 20.0,
        }
        for s in range(3)
    ]
    (log_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "c.toml"
    path.write_text(f'[backend]\nbackend = "tinker"\n[logging]\nlog_dir = "{log_dir.as_posix()}"\n')
    assert main(["explain", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    settings_ = dict(info["backend"]["settings"])
    assert info["backend"]["name"] == "tinker"
    assert (
        "create_lora_training_client(base_model='Qwen/Qwen3-4B-Instruct-2507', rank=32, seed=42"
        in settings_["[model] name, lora_rank, target_modules, [training] seed"]
    )
    assert "num_samples=16" in settings_["[training] group_size, max_tokens, temperature, top_p"]
    assert "learning_rate=4e-05" in settings_["[training] lr, weight_decay, grad_clip_norm"]
    assert info["tokens_per_step"] == {
        "sampled_max": 8 * 16 * 10240,
        "measured": {"sampled": 100.0 * 8 * 16, "prompt_and_completion": 20_000.0, "from": str(log_dir)},
    }
    assert any("temperature = 0.7 on tinker" in w for w in info["warnings"])
    assert main(["explain", str(path)]) == 0
    text = capsys.readouterr().out
    assert "# backend tinker: what each setting does" in text
    assert (
        "tokens/step       <= 1,310,720 sampled" in text
        and "measured 12,800 sampled, 20,000 prompt + completion" in text
    )


# ---------------------------------------------------------------------------------------------
# The backend on the stand-in service


def test_sampling_sends_every_prompt_before_waiting_with_the_runs_settings(service):
    backend = make_backend(service)
    params = SamplingParams(max_tokens=6, temperature=0.9, top_p=0.95, seed=12345)
    groups = backend.sample(["What is 1 + 1?", "Say 7", "What is 1 + 1?"], 4, params)
    sends = [e for e in service.events if e.endswith(":sample")]
    assert sends == ["send:sample"] * 3 + ["wait:sample"] * 3  # all three out before the first wait
    requests = service.requests("sample")
    stop = backend.stop_ids()
    assert backend.tokenizer.convert_ids_to_tokens(stop) == ["<|im_end|>"]
    for p, req in enumerate(requests):
        sp = req["params"]
        assert isinstance(sp, tinker.SamplingParams) and req["num_samples"] == 4
        assert (sp.max_tokens, sp.temperature, sp.top_p, sp.top_k) == (6, 0.9, 0.95, -1)
        assert sp.seed == tb.prompt_seed(12345, p) and list(sp.stop) == stop
        assert req["prompt"] == backend.prompt_ids(["What is 1 + 1?", "Say 7", "What is 1 + 1?"][p])
    assert [len(g) for g in groups] == [4, 4, 4]
    # the same prompt twice in a batch gets its own seed, hence its own group
    assert [c.token_ids for c in groups[0]] != [c.token_ids for c in groups[2]]
    for group, req in zip(groups, requests, strict=True):
        response = req["result"]
        for c, seq in zip(group, response.sequences, strict=True):
            assert c.token_ids == seq.tokens and c.logprobs == pytest.approx(seq.logprobs)
            assert c.hit_max_tokens == (seq.stop_reason == "length") and len(c.offsets) == len(c.token_ids)
    greedy = backend.sample(["Say 7"], 2, SamplingParams(max_tokens=6, greedy=True))
    assert service.requests("sample")[-1]["params"].top_k == 1
    assert greedy[0][0].token_ids == greedy[0][1].token_ids


def test_without_a_known_end_token_the_service_keeps_its_own_eos(service, monkeypatch):
    """The SDK reads stop=[] as "no stop token, not even EOS" (every sample runs to max_tokens); with no
    end-of-turn token known, the backend sends None, the service's own EOS stopping."""
    monkeypatch.setattr(tb, "end_of_turn_ids", lambda tokenizer: set())
    backend = make_backend(service)
    backend.sample(["Say 7"], 2, SamplingParams(max_tokens=4, temperature=1.0))
    assert service.requests("sample")[-1]["params"].stop is None


@pytest.mark.parametrize("error", ["connection", 500])
def test_creating_the_training_client_is_never_resent(service, error):
    """A second create request names a second model on the service: if the first was created and only its
    answer was lost, that model would train nothing, billed, until the session ends."""
    sleeps: list[float] = []
    backend = make_backend(service, sleeps=sleeps, max_retries=3, resume_hint="retrain resume logs/r")
    service.fail_next("create", error)
    with pytest.raises(
        BackendUnavailable,
        match=r"creating a LoRA training client for tiny-random failed: .*"
        r"Not resent.*`retrain resume logs/r`",
    ) as e:
        backend.sample(["Say 7"], 2, SamplingParams(max_tokens=4, temperature=1.0))
    assert e.value.exit_code == 1 and sleeps == []
    assert [k for k, _ in service.log] == ["failed:create"]


def test_restoring_a_checkpoint_is_never_resent(service, tmp_path):
    backend = make_backend(service)
    groups = backend.sample(["Say 7"], 2, SamplingParams(max_tokens=4, temperature=1.0))
    backend.train_step(_transformed_datums(groups, 0), lr=1e-2)
    ref = backend.save(str(tmp_path / "checkpoint_step_1"))
    service.fail_next("restore", "connection")
    with pytest.raises(BackendUnavailable, match="restoring tinker://.*Not resent"):
        make_backend(service).load(ref)
    assert [k for k, _ in service.log if k.endswith("restore")] == ["failed:restore"]


CLIP = 0.5  # below these steps' gradient norms (0.7-0.8), so clipping acts


def _local_twin(seed=3, loss_agg="token_mean"):
    from retrain.backends.local import LocalBackend

    return LocalBackend(
        "tiny-random",
        lora_rank=4,
        target_modules=TARGETS,
        device="cpu",
        temperature=1.0,
        seed=seed,
        loss_agg=loss_agg,
        grad_clip_norm=CLIP,
    )


def _adapter(model) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model, save_embedding_layers=False)


def _transformed_datums(groups, step: int) -> list[Datum]:
    """Datums whose advantages come from each built-in transform (a made-up planning mask for HICRA)."""
    from retrain.rl.transforms import token_advantages
    from retrain.rl.uncertainty import token_uncertainty

    out = []
    for g, group in enumerate(groups):
        for i, c in enumerate(group):
            h = token_uncertainty("surprisal", c.logprobs, None)
            mask = [t % 3 == 0 for t in range(len(c.token_ids))]
            transform = ["gtpo", "gtpo_hicra", "gtpo_sepa", "none"][(g + i + step) % 4]
            adv = token_advantages(
                (-1.0) ** i * (1 + g), h, mask, transform=transform, beta=0.5, alpha=0.4, sepa_lambda=0.6
            )
            out.append(Datum(c.prompt_ids, c.token_ids, c.logprobs, list(adv)))
    return out


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean"])
def test_three_training_steps_match_the_local_backend(service, loss_agg):
    """On the same datums, the service receives the transforms' per-token advantages times the
    aggregation weight, returns the local model's logprobs, reports policy_loss, and its Adam steps
    leave the same LoRA weights as the local backend's (grad clipping included)."""
    backend, local = make_backend(service, loss_agg=loss_agg, grad_clip_norm=CLIP), _local_twin(loss_agg=loss_agg)
    for step, lr in enumerate([3e-2, 2e-2, 1e-2]):
        groups = backend.sample(
            ["What is 2 + 2?", "Name a colour"], 3, SamplingParams(max_tokens=6, temperature=1.0, seed=step)
        )
        if step == 0:  # the same seed gives the same LoRA init on the service and locally
            start = _training_adapter(service)
            assert all(torch.equal(start[k], v) for k, v in _adapter(local.model).items())
        datums = _transformed_datums(groups, step)
        with torch.no_grad():
            local_new_B_T, _ = local.completion_logprobs(datums)
        result = backend.train_step(datums, lr=lr)
        expected = local.train_step(datums, lr=lr)
        fb = service.requests("forward_backward")[-1]
        weights = tb.aggregation_weights([len(d.completion_ids) for d in datums], loss_agg)
        for b, (d, w, sent) in enumerate(zip(datums, weights, fb["data"], strict=True)):
            P, T = len(d.prompt_ids), len(d.completion_ids)
            adv = np.asarray(sent.loss_fn_inputs["advantages"].data)
            assert not adv[: P - 1].any()
            assert adv[P - 1 :] == pytest.approx(np.float32(np.asarray(d.advantages_T) * w), rel=1e-6)
            returned = fb["result"].loss_fn_outputs[b]["logprobs"].data[P - 1 :]
            assert returned == pytest.approx(local_new_B_T[b, :T].tolist(), abs=2e-5)
        assert result.loss == pytest.approx(expected.loss, rel=1e-4, abs=1e-6)
        assert result.sampler_train_kl == pytest.approx(expected.sampler_train_kl, abs=1e-5)
        assert result.num_tokens == expected.num_tokens and result.grad_norm is None
        assert expected.grad_norm > CLIP or loss_agg == "seq_mean"  # token_mean: clipping acted
        ours, theirs = _training_adapter(service), _adapter(local.model)
        for key, value in theirs.items():
            assert adapters_agree(ours[key], value), (step, key)
    assert service.requests("optim_step")[-1]["params"] == tinker.AdamParams(
        learning_rate=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, grad_clip_norm=CLIP
    )


def _training_adapter(service) -> dict[str, torch.Tensor]:
    return service.training_clients[-1].adapter_state()  # the stand-in's model, read directly


def test_training_step_is_one_round_trip(service):
    backend = make_backend(service)
    groups = backend.sample(["Say 7"], 2, SamplingParams(max_tokens=4, temperature=1.0))
    start = len(service.events)
    backend.train_step(_transformed_datums(groups, 0), lr=1e-2)
    assert service.events[start:] == [
        "send:forward_backward",
        "send:optim_step",
        "send:publish",
        "wait:forward_backward",
        "wait:optim_step",
        "wait:publish",
    ]
    backend.sample(["Say 7"], 2, SamplingParams(max_tokens=4, temperature=1.0))
    assert service.requests("sample")[-1]["snapshot"] == service.requests("publish")[-1]["result"].snapshot


def test_a_failing_sample_request_is_resent_with_backoff_then_the_run_stops(service):
    sleeps: list[float] = []
    backend = make_backend(service, sleeps=sleeps, max_retries=2, retry_backoff_s=2)
    params = SamplingParams(max_tokens=4, temperature=1.0, seed=9)
    clean = backend.sample(["Say 7", "Say 8"], 2, params)
    service.fail_next("sample", "connection", skip=1)  # the second prompt's request, once
    retried = backend.sample(["Say 7", "Say 8"], 2, params)
    assert [[c.token_ids for c in g] for g in retried] == [[c.token_ids for c in g] for g in clean]
    assert sleeps == [2]
    service.fail_next("sample", 500, times=3)  # more failures than retries
    with pytest.raises(BackendUnavailable, match=r"after 3 attempt\(s\).*retrain resume") as e:
        backend.sample(["Say 7"], 2, params)
    assert e.value.exit_code == 1 and sleeps == [2, 2, 4]
    service.fail_next("sample", 400)  # the service refused the request: no retry
    with pytest.raises(BackendUnavailable, match="BadRequestError"):
        backend.sample(["Say 7"], 2, params)
    assert sleeps == [2, 2, 4]


def test_a_failed_training_step_is_never_resent(service):
    backend = make_backend(service)
    groups = backend.sample(["Say 7"], 2, SamplingParams(max_tokens=4, temperature=1.0))
    service.fail_next("forward_backward", 500)
    with pytest.raises(BackendUnavailable, match="training step.*last checkpoint is intact"):
        backend.train_step(_transformed_datums(groups, 0), lr=1e-2)
    assert [k for k, _ in service.log].count("failed:forward_backward") == 1
    assert "forward_backward" not in [k for k, _ in service.log]


def test_publishing_the_new_weights_is_retried_alone(service):
    backend = make_backend(service)
    groups = backend.sample(["Say 7"], 2, SamplingParams(max_tokens=4, temperature=1.0))
    service.fail_next("publish", "connection")
    backend.train_step(_transformed_datums(groups, 0), lr=1e-2)
    kinds = [k for k, _ in service.log]
    assert kinds.count("forward_backward") == 1 and kinds.count("optim_step") == 1
    assert kinds[-2:] == ["failed:publish", "publish"]


def test_checkpoint_round_trip_restores_weights_and_adam_state(service, tmp_path):
    backend = make_backend(service)
    groups = backend.sample(["Say 7"], 2, SamplingParams(max_tokens=4, temperature=1.0))
    backend.train_step(_transformed_datums(groups, 0), lr=1e-2)
    service.fail_next("save_state", "connection")
    ref = backend.save(str(tmp_path / "adapter" / "checkpoint_step_1"))
    assert ref.startswith("tinker://") and ref.endswith("/weights/checkpoint_step_1")
    pointer = json.loads((tmp_path / "adapter" / "checkpoint_step_1" / tb.POINTER).read_text())
    assert pointer["tinker_path"] == ref and pointer["download"] == f"tinker checkpoint download {ref}"
    saved = service.checkpoints[ref]
    # a second backend (a resumed run) continues from the reference, or from the local pointer dir
    for source in (ref, str(tmp_path / "adapter" / "checkpoint_step_1")):
        other = make_backend(service)
        other.load(source)
        other.sample(["Say 7"], 1, SamplingParams(max_tokens=2))  # uses the restored client
        client = service.training_clients[-1]
        assert service.log[-3][0] == "restore" and len(service.requests("create")) == 1
        assert all(torch.equal(saved["adapter"][k], v) for k, v in client.adapter_state().items())
        state = client.local.optimizer.state_dict()["state"]
        assert state and all(
            torch.equal(s["exp_avg"], saved["optimizer"]["state"][i]["exp_avg"]) for i, s in state.items()
        )
    with pytest.raises(RetrainError, match="not on the service any more"):
        make_backend(service).load("tinker://gone/weights/final")


# ---------------------------------------------------------------------------------------------
# Preflight and doctor (stand-in and real SDK, no network)


def test_preflight_accepts_a_served_model_and_names_the_others(service, tmp_path):
    tb.preflight(_load(tmp_path, '[model]\nname = "tiny-random"\n'))
    with pytest.raises(RetrainError, match=r"does not train this model\. Did you mean 'tiny-random'\?"):
        tb.preflight(_load(tmp_path, '[model]\nname = "tiny-randm"\n'))
    with pytest.raises(RetrainError, match="context of 32768 tokens"):
        tb.preflight(_load(tmp_path, '[model]\nname = "tiny-random"\n[training]\nmax_tokens = 40000\n'))


def test_no_key_is_a_clear_error_from_the_real_sdk(monkeypatch, tmp_path):
    for var in ("TINKER_API_KEY", "TINKER_CREDENTIAL_CMD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.tinker/credentials.json
    with pytest.raises(RetrainError, match="api_key client option must be set.*export TINKER_API_KEY"):
        tb.server_models(5)


def test_doctor_reports_the_sdk_and_whether_the_service_answers(service, monkeypatch, capsys):
    from retrain.cli import main

    assert main(["doctor", "--json"]) == 0
    part = json.loads(capsys.readouterr().out)["optional"]["tinker"]
    assert part["usable"] and part["version"] == tinker.__version__
    assert part["service"]["answers"] is True and part["service"]["models"] == ["tiny-random"]
    monkeypatch.delenv("TINKER_API_KEY")
    assert main(["doctor"]) == 0
    text = capsys.readouterr().out
    assert "service does not answer:" in text and "TINKER_API_KEY" in text
    assert main(["doctor", "--no-network", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["optional"]["tinker"]["service"]["answers"] is None


# ---------------------------------------------------------------------------------------------
# The shared request limiter


def test_limiter_bounds_threads_and_releases_from_callbacks(tmp_path):
    limiter = FileLimiter(tmp_path / "lim", slots=2)
    held, peak = [0], [0]

    def work():
        with limiter.slot():
            held[0] += 1
            peak[0] = max(peak[0], held[0])
            time.sleep(0.05)
            held[0] -= 1

    import threading

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2
    token = limiter.acquire()
    threading.Timer(0.05, limiter.release, args=(token,)).start()  # released from another thread
    token2 = limiter.acquire()
    limiter.release(token2)
    with pytest.raises(ValueError):
        FileLimiter(tmp_path / "x", slots=0)


HOLD_SLOT = """
import sys, time
from pathlib import Path
from retrain.backends.limiter import FileLimiter
with FileLimiter(sys.argv[1], 2).slot():
    start = time.time()
    time.sleep(0.3)
    Path(sys.argv[2]).write_text(f"{start} {time.time()}")
"""


def test_limiter_is_shared_by_processes(tmp_path):
    procs = [
        subprocess.Popen([sys.executable, "-c", HOLD_SLOT, str(tmp_path / "lim"), str(tmp_path / f"p{i}")])
        for i in range(5)
    ]
    assert [p.wait(60) for p in procs] == [0] * 5
    spans = [tuple(map(float, (tmp_path / f"p{i}").read_text().split())) for i in range(5)]
    overlap = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert overlap <= 2


def test_campaign_runs_share_one_limiter_dir(tmp_path):
    campaign = tmp_path / "campaign_1"
    (campaign / "runs" / "a_s1").mkdir(parents=True)
    (campaign / "manifest.json").write_text("{}")
    assert tb.limiter_dir(campaign / "runs" / "a_s1") == campaign / "tinker_limiter"
    assert tb.limiter_dir(tmp_path / "single") == tmp_path / "single" / "tinker_limiter"
