"""Mixture of experts (bigtrain/model/moe.py): routing against hand-computed cases, the batched experts against a
per-token reference, the router losses, and the dense default left bit-identical."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bigtrain.model import GPT, GPTConfig
from bigtrain.model.moe import MoE, expert_capacity, load_balancing_loss, route, router_z_loss


def logits_of(probs) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float32).log()


def test_capacity_formula():
    assert expert_capacity(4, 2, 1, 1.0) == 2
    assert expert_capacity(10, 4, 2, 1.25) == 7  # ceil(1.25 * 2 * 10 / 4) = ceil(6.25)
    assert expert_capacity(4, 8, 1, 0.1) == 1  # at least one
    assert expert_capacity(4, 2, 2, 100.0) == 4  # at most every token


def test_top1_capacity_drops_in_token_order():
    # Tokens 0, 1, 2 prefer expert 0, token 3 expert 1; capacity 2: token 2 is dropped.
    r = route(logits_of([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.4, 0.6]]), top_k=1, capacity=2)
    kept = sorted(zip(r.token.tolist(), r.expert.tolist(), r.slot.tolist(), strict=True))
    assert kept == [(0, 0, 0), (1, 0, 1), (3, 1, 0)]
    assert r.dropped_frac.item() == pytest.approx(0.25)
    assert r.load.tolist() == pytest.approx([0.75, 0.25])
    # Switch: the expert output is scaled by the (unrenormalised) router probability.
    assert dict(zip(r.token.tolist(), r.weight.tolist(), strict=True)) == pytest.approx({0: 0.9, 1: 0.8, 3: 0.6})


def test_top2_weights_renormalised_and_first_choices_served_first():
    probs = [[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]]
    r = route(logits_of(probs), top_k=2, capacity=1)
    # First choices: token 0 -> e0 (slot 0), token 1 -> e1 (slot 0). Second choices: token 0 -> e1 (full: dropped),
    # token 1 -> e2 (slot 0).
    kept = sorted(zip(r.token.tolist(), r.expert.tolist(), r.slot.tolist(), r.weight.tolist(), strict=True))
    assert [k[:3] for k in kept] == [(0, 0, 0), (1, 1, 0), (1, 2, 0)]
    assert [k[3] for k in kept] == pytest.approx([0.5 / 0.8, 0.6 / 0.9, 0.3 / 0.9])
    assert r.dropped_frac.item() == pytest.approx(0.25)
    assert r.load.tolist() == pytest.approx([0.25, 0.5, 0.25])


def test_switch_aux_loss_value():
    # Both tokens choose expert 0: f = [1, 0], P = mean([0.8, 0.2], [0.6, 0.4]) = [0.7, 0.3]; E * sum f P = 1.4.
    r = route(logits_of([[0.8, 0.2], [0.6, 0.4]]), top_k=1, capacity=2)
    assert load_balancing_loss(r.probs, r.load).item() == pytest.approx(1.4)
    # Perfectly balanced routing and uniform probabilities give exactly 1.
    uniform = route(torch.zeros(4, 4) + torch.eye(4) * 1e-3, top_k=1, capacity=4)
    assert load_balancing_loss(uniform.probs, uniform.load).item() == pytest.approx(1.0, abs=1e-3)


def test_z_loss_value():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # logsumexp: ln 2 and ln 4
    assert router_z_loss(logits).item() == pytest.approx((math.log(2) ** 2 + math.log(4) ** 2) / 2)


def make_moe(mlp="gelu", bias=True, top_k=2, cf=8.0, shared=0, n_experts=4, seed=0) -> MoE:
    torch.manual_seed(seed)
    return MoE(16, 24, mlp, bias, 2, n_experts, top_k, cf, cf, shared)


def reference(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """Token by token, expert by expert: sum over the token's kept choices of weight x expert(x)."""
    flat = x.reshape(-1, x.size(-1))
    logits = F.linear(flat.float(), moe.router.weight.float())
    cf = moe.capacity_factor if moe.training else moe.eval_capacity_factor
    r = route(logits, moe.top_k, expert_capacity(flat.size(0), moe.n_experts, moe.top_k, cf))
    ex = moe.experts

    def expert(i, v):
        def lin(w, b):
            return v @ w[i] + (b[i, 0] if b is not None else 0)

        if ex.mlp == "swiglu":
            h = F.silu(lin(ex.w_gate, ex.b_gate)) * lin(ex.w_in, ex.b_in)
        else:
            h = F.gelu(lin(ex.w_in, ex.b_in), approximate="tanh")
        return h @ ex.w_out[i] + (ex.b_out[i, 0] if ex.b_out is not None else 0)

    out = torch.zeros_like(flat)
    for t, e, w in zip(r.token.tolist(), r.expert.tolist(), r.weight.tolist(), strict=True):
        out[t] += w * expert(e, flat[t])
    if moe.shared is not None:
        out += moe.shared(flat.unsqueeze(0)).squeeze(0)
    return out.view_as(x)


@pytest.mark.parametrize("mlp,bias,top_k,cf,shared", [
    ("gelu", True, 2, 8.0, 0), ("swiglu", False, 2, 8.0, 0), ("gelu", True, 1, 0.5, 0), ("swiglu", True, 2, 0.5, 1),
])  # fmt: skip
def test_batched_experts_match_per_token_reference(mlp, bias, top_k, cf, shared):
    moe = make_moe(mlp, bias, top_k, cf, shared)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(moe(x), reference(moe, x), rtol=1e-5, atol=1e-6)


def test_dropped_tokens_add_nothing():
    """With capacity 1, only the first token reaching each expert is served; every other token's output is zero,
    so in a block it passes through the residual unchanged."""
    moe = make_moe(top_k=1, cf=1e-6)
    x = torch.randn(1, 12, 16)
    y = moe(x).view(12, 16)
    served = (y.abs().sum(-1) > 0).sum().item()
    assert served == len(set(F.linear(x.view(12, 16), moe.router.weight).argmax(-1).tolist()))
    assert moe.stats["dropped_frac"].item() == pytest.approx(1 - served / 12)


def test_collapsed_router_raises_aux_loss():
    moe = make_moe(top_k=1, n_experts=4)
    x = torch.randn(4, 8, 16) + 3.0  # every token has a large positive sum
    moe(x)
    spread = moe.stats["aux_loss"].item()
    with torch.no_grad():  # expert 2's logit is 10 x the token's sum, the others 0: all tokens choose expert 2
        moe.router.weight.zero_()
        moe.router.weight[2] = 10.0
    moe(x)
    collapsed = moe.stats["aux_loss"].item()
    assert moe.stats["load"].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert spread < 1.5 and collapsed == pytest.approx(4.0)  # E x f_2 x P_2 = 4 x 1 x 1


def test_router_gets_gradient_from_output_and_losses():
    moe = make_moe()
    y = moe(torch.randn(2, 4, 16))
    (y.square().mean() + moe.stats["aux_loss"] + moe.stats["z_loss"]).backward()
    for name, p in moe.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_router_runs_in_fp32_under_bf16_autocast():
    moe = make_moe()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        moe(torch.randn(2, 4, 16))
    assert moe.stats["z_loss"].dtype == torch.float32


SMALL = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64)


def test_gpt_moe_blocks_and_stats():
    cfg = GPTConfig(**SMALL, moe={"n_experts": 4, "top_k": 2, "every_n_layers": 2})
    model = GPT(cfg)
    kinds = [type(b.mlp).__name__ for b in model.transformer.h]
    assert kinds == ["MoE", "MLP"]
    x = torch.randint(0, 64, (2, 16))
    _, loss = model(x, x)
    stats = model.moe_stats()
    assert set(stats) == {"aux_loss", "z_loss", "load", "dropped_frac"} and stats["load"].shape == (4,)
    (loss + stats["aux_loss"]).backward()
    assert GPT(GPTConfig(**SMALL)).moe_stats() == {}


# Computed with main's model before MoE existed (torch.manual_seed(0); inputs from Generator seed 1): the dense
# default must build and compute the very same model.
GOLDEN = [({}, 4.147363662719727, 29), (
    dict(norm="rmsnorm", mlp="swiglu", position="rope", n_kv_head=1, tie_embeddings=False, bias=False),
    4.178428649902344, 17,
)]  # fmt: skip


@pytest.mark.parametrize("kw,loss_value,n_tensors", GOLDEN)
def test_dense_default_unchanged(kw, loss_value, n_tensors):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL, **kw))
    x = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    _, loss = model(x, x.roll(-1, 1))
    assert loss.item() == loss_value
    assert len(model.state_dict()) == n_tensors


def test_activation_checkpointing_gives_the_same_gradients():
    """The router losses are read after the forward (GPT.moe_stats); recomputing the blocks in the backward pass
    must not change what they or the loss contribute."""
    grads = []
    for ac in (False, True):
        torch.manual_seed(0)
        model = GPT(GPTConfig(**SMALL, activation_checkpointing=ac, moe={"n_experts": 4}))
        x = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
        _, loss = model(x, x)
        stats = model.moe_stats()
        (loss + 0.01 * stats["aux_loss"] + 0.001 * stats["z_loss"]).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)
