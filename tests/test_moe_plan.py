"""Mixture-of-experts shapes and plans: published counts (Mixtral 8x7B's total and active), the torch-free
planner against the torch model for every MoE option, FLOPs from active parameters, expert memory per rank, and
the refusals of model.moe."""

from __future__ import annotations

import pytest
import torch

from bigtrain.config.validate import problems_of
from bigtrain.model import GPT, gpt_config_from
from bigtrain.plan import compute, memory
from bigtrain.plan.moe import expert_params, expert_state_bytes_per_rank
from bigtrain.plan.params import active_params, n_params, tensor_sizes
from bigtrain.plan.planner import plan
from bigtrain.plan.setup import setup_from
from tests.conftest import compose

MOE_MODELS = ["tiny-moe", "mixtral-8x7b", "switch-base-8"]


def torch_counts(cfg):
    with torch.device("meta"):
        model = GPT(gpt_config_from(cfg.model))
    return model.num_params(), sorted(p.numel() for p in model.parameters())


def test_mixtral_total_and_active_match_published():
    cfg = compose("model=mixtral-8x7b")
    total, _ = torch_counts(cfg)
    s = setup_from(cfg)
    assert n_params(s) == total
    assert abs(total - cfg.model.published_n_params) / cfg.model.published_n_params <= 0.01
    active = active_params(s)
    assert abs(active - cfg.model.published_n_active_params) / cfg.model.published_n_active_params <= 0.01


VARIANTS = [
    [],
    ["model.mlp=swiglu"],
    ["model.bias=false", "model.moe.every_n_layers=3"],
    ["model.moe.n_shared_experts=2", "model.moe.top_k=1"],
    ["model.moe.n_shared_experts=1", "model.mlp=swiglu", "model.norm=rmsnorm", "model.moe.every_n_layers=2"],
]


@pytest.mark.parametrize("overrides", [[f"model={m}"] for m in MOE_MODELS] + [["model=tiny-moe", *v] for v in VARIANTS])
def test_planner_counts_every_tensor_of_the_torch_model(overrides):
    cfg = compose(*overrides)
    total, numels = torch_counts(cfg)
    s = setup_from(cfg)
    assert n_params(s) == total
    assert sorted(n for numel, count in tensor_sizes(s) for n in [numel] * count) == numels


def test_active_parameters_and_flops_follow_the_routed_experts():
    """tiny-moe's experts are half tiny's MLP width and two serve each token: its active parameters (what a token
    multiplies) are tiny's plus the routers (and the second expert's output bias), and so are its FLOPs per token,
    while its total is ~3x tiny's."""
    moe, dense = setup_from(compose("model=tiny-moe")), setup_from(compose("model=tiny"))
    routers = 4 * 8 * 192 + 4 * 192
    assert active_params(moe) == n_params(dense) + routers
    assert n_params(moe) > 2.5 * n_params(dense)
    f_moe = compute.flops_per_token(moe, n_params(moe))
    f_dense = compute.flops_per_token(dense, n_params(dense))
    assert f_moe == f_dense + 6 * routers


def test_expert_memory_per_rank_follows_zero_stages():
    base = ["model=tiny-moe", "parallelism=deepspeed", "hardware.devices=2", "trainer.precision=32-true"]
    per_rank = {}
    for stage in (0, 1, 2, 3):
        s = setup_from(compose(*base, f"zero={stage}"))
        per_rank[stage] = expert_state_bytes_per_rank(s, memory.state_bytes(s))
    e = expert_params(setup_from(compose(*base)))
    assert per_rank[0] == e * (4 + 4 + 8)  # fp32 weights, grads and two Adam moments, whole on each rank
    assert per_rank[1] == e * (4 + 4 + 8 / 2)
    assert per_rank[2] == e * (4 + 4 / 2 + 8 / 2)
    assert per_rank[3] == e * (4 + 4 + 8) / 2


def test_plan_reports_active_and_expert_entries_only_for_moe():
    p = plan(compose("model=tiny-moe"))
    assert p["n_params_active"] < p["n_params"] and p["n_expert_params"] > 0 and p["expert_state_bytes_per_rank"] > 0
    assert "n_params_active" not in plan(compose("model=tiny"))


@pytest.mark.parametrize(
    "overrides,phrase",
    [
        (["model.moe.top_k=9"], "model.moe.top_k=9 must be between 1 and model.moe.n_experts=8"),
        (["model.moe.capacity_factor=0"], "model.moe.capacity_factor=0"),
        (["model.moe.every_n_layers=0"], "model.moe.every_n_layers=0"),
        (["model.moe.n_experts=-1"], "model.moe.n_experts=-1"),
        (["parallelism=tp", "hardware.devices=2", "parallelism.tp=2"], "parallelism=tp does not support"),
    ],
)
def test_bad_moe_settings_are_refused_with_one_phrase(overrides, phrase):
    problems = problems_of(compose("model=tiny-moe", *overrides))
    assert any(phrase in p for p in problems), problems


def test_dense_models_have_no_moe_problems():
    assert not [p for p in problems_of(compose("model=tiny")) if "moe" in p]
