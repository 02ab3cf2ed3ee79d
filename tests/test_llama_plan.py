"""The planner on the Llama family: parameters equal to the torch model's, FLOPs per token against a count done by
hand here, activation and KV-cache terms that follow n_kv_head, and `task=plan` for a Llama config end to end."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from conftest import REPO, compose
from plan_helpers import setup

from bigtrain.model import GPT, gpt_config_from
from bigtrain.plan import compute, memory, params
from bigtrain.tasks.plan import run as run_plan

LLAMAS = sorted(p.stem for p in (REPO / "conf" / "model").glob("*llama*.yaml"))


@pytest.mark.parametrize("name", LLAMAS)
def test_planned_parameters_equal_the_torch_models(name):
    with torch.device("meta"):
        model = GPT(gpt_config_from(compose(f"model={name}").model))
    s = setup(f"model={name}")
    assert params.n_params(s) == model.num_params()
    sizes = sorted(numel for numel, count in params.tensor_sizes(s) for _ in range(count))
    assert sizes == sorted(p.numel() for p in model.parameters())  # tensor by tensor (ZeRO-3 persistence)


@pytest.mark.parametrize("name", ["llama3-8b", "llama3-70b", "llama3-405b"])
def test_flops_per_token_match_a_count_by_hand(name):
    """Per layer: q and o are h x h, k and v h x (n_kv_head x 128), SwiGLU three h x f; plus the output head;
    each weight costs 6 FLOPs per token (2 forward, 4 backward). Attention: 12 L H Q T (PaLM appendix B)."""
    shape = {  # L, h, heads, kv heads, f, vocab, T, published N
        "llama3-8b": (32, 4096, 32, 8, 14336, 128256, 8192, 8.03e9),
        "llama3-70b": (80, 8192, 64, 8, 28672, 128256, 8192, 70.6e9),
        "llama3-405b": (126, 16384, 128, 8, 53248, 128256, 8192, 405.9e9),
    }[name]
    L, h, H, kv, f, V, T, published = shape
    Q = h // H
    matmul = L * (2 * h * h + 2 * h * kv * Q + 3 * h * f) + V * h
    attention = 12 * L * H * Q * T
    by_hand = 6 * matmul + attention
    t = compute.timing(setup(f"model={name}"), params.n_params(setup(f"model={name}")))
    assert t["flops_per_token"] == pytest.approx(by_hand, rel=0.02)
    assert t["attention_flops_per_token"] == attention
    # the input token table (V x h) is a lookup: 6N over all parameters would overstate the matmuls by 6Vh
    assert t["flops_per_token_6n"] == pytest.approx(6 * (published - V * h), rel=0.01)


def test_halving_kv_heads_halves_the_key_value_terms():
    s = setup("model=llama3-70b", "trainer.micro_batch_size=1")
    half = replace(s, n_kv_head=s.n_kv_head // 2)
    a, b = memory.layer_activation_terms(s), memory.layer_activation_terms(half)
    assert b["kv"] == a["kv"] / 2
    assert {k: v for k, v in a.items() if k != "kv"} == {k: v for k, v in b.items() if k != "kv"}
    assert memory.kv_cache_bytes(half) == memory.kv_cache_bytes(s) / 2
    kv_weights = 2 * s.n_embd * s.n_kv_head * s.head_dim  # k and v projections of one layer
    assert params.layer_params(s) - params.layer_params(half) == kv_weights / 2
    assert memory.activations(half) < memory.activations(s)


def test_activation_terms_reduce_to_korthikanti_for_gpt():
    s = setup("model=gpt3-175b", "trainer.micro_batch_size=1")
    terms = memory.layer_activation_terms(s)
    sbh = s.block_size * s.micro_batch_size * s.n_embd
    assert sum(v for k, v in terms.items() if k != "scores") == 34 * sbh
    assert sum(terms[k] for k in memory.REPLICATED_TERMS) == 10 * sbh
    assert terms["scores"] == 5 * s.n_head * s.block_size**2 * s.micro_batch_size


def test_swiglu_hidden_terms_follow_its_three_matrices():
    s = setup("model=llama2-7b", "trainer.micro_batch_size=1")
    sb = s.block_size * s.micro_batch_size
    assert memory.layer_activation_terms(s)["mlp_hidden"] == 8 * sb * 11008
    assert memory.layer_activation_terms(replace(s, mlp="gelu"))["mlp_hidden"] == 4 * sb * 11008


def test_kv_cache_of_llama3_8b():
    """32 layers x 8 heads x 128 x 2 (k and v) x 2 bytes = 128 KiB per token, 1 GiB for 8192 tokens."""
    assert memory.kv_cache_bytes(setup("model=llama3-8b")) == 128 * 1024 * 8192


def test_plan_task_for_llama3_70b(tmp_path, capsys):
    overrides = ["task=plan", "model=llama3-70b", "hardware=h100-80g-x8", "hardware.nodes=8", "parallelism=deepspeed"]
    overrides += ["parallelism.tp=8", "zero=1", "trainer.precision=bf16-mixed", "trainer.micro_batch_size=1"]
    overrides += ["trainer.global_batch_size=64", "plan.activation_recompute=selective", "plan.format=json"]
    run_plan(compose(*overrides), tmp_path)
    out = json.loads(capsys.readouterr().out)
    assert out["n_params"] == pytest.approx(70.6e9, rel=0.01) and out["n_params_megatron"] is None
    assert out["kv_cache_bytes_per_sequence"] == 2 * 80 * 8 * 128 * 8192 * 2 // 8
    assert out["memory_per_device_bytes"]["total"] > 0 and out["flops_per_token"] > 6 * 68e9
