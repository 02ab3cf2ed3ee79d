"""Mixture-of-experts arithmetic for the planner (bigtrain/model/moe.py's shapes, torch-free): which blocks are
MoE, the parameters of an expert, a block's total and active parameters, and expert memory per rank.

An MoE block replaces the dense MLP by a bias-free router (E x h), E stacked experts of the model's MLP kind and,
optionally, n_shared_experts always-on experts held as one MLP of n_shared x ffn width (one output bias). A token
passes through top_k routed experts and the shared ones: those, the router and everything outside the MLPs are
its active parameters (what FLOPs per token count).
"""

from __future__ import annotations

from bigtrain.plan.setup import Setup


def n_moe_layers(s: Setup) -> int:
    if s.n_experts <= 0:
        return 0
    return len(range(0, s.n_layer, s.moe_every))


def mlp_params(s: Setup, width: int) -> int:
    """One MLP of hidden width `width` (GELU: 2 matrices; SwiGLU: 3), biases included, as bigtrain builds it."""
    h, b = s.n_embd, int(s.bias)
    return 3 * h * width + 2 * width * b + h * b if s.mlp == "swiglu" else 2 * h * width + width * b + h * b


def expert_params(s: Setup) -> int:
    """All routed experts of the model (the parameters expert parallelism would split)."""
    return n_moe_layers(s) * s.n_experts * mlp_params(s, s.ffn)


def moe_mlp_delta(s: Setup) -> int:
    """Parameters an MoE block holds beyond a dense block (router + E experts + shared, less the dense MLP)."""
    shared = mlp_params(s, s.n_shared_experts * s.ffn) if s.n_shared_experts else 0
    return s.n_experts * s.n_embd + s.n_experts * mlp_params(s, s.ffn) + shared - mlp_params(s, s.ffn)


def inactive_params(s: Setup) -> int:
    """Parameters a token does not pass through: the routed experts it is not sent to (0 for a dense model)."""
    return n_moe_layers(s) * (s.n_experts - s.top_k) * mlp_params(s, s.ffn)


def expert_states_per_rank(s: Setup, state_bytes: tuple[int, int, int]) -> dict[str, float]:
    """Device bytes of the routed experts' (params, grads, optimizer) on one rank: the experts split over ep ranks
    (and tp x pp), each share ZeRO-partitioned by stage over its expert-data-parallel group (dp / ep ranks holding
    the same experts); offloaded states leave the device as the dense ones do (memory.paper_states)."""
    pb, gb, ob = state_bytes
    shard = expert_params(s) / (s.tp * s.pp * s.layout.ep)
    edp, z = s.layout.edp, s.zero
    params = shard * pb / (edp if z >= 3 else 1)
    grads = shard * gb / (edp if z >= 2 else 1)
    optimizer = shard * ob / (edp if z >= 1 else 1)
    if s.offload_optimizer != "none":
        optimizer = 0.0
        grads = 0.0 if z >= 2 else grads
    if s.offload_params != "none":
        params = 0.0
    return {"params": params, "grads": grads, "optimizer": optimizer}


def expert_state_bytes_per_rank(s: Setup, state_bytes: tuple[int, int, int]) -> float:
    """Bytes of the routed experts' parameters, gradients and optimizer states on one rank (all three)."""
    return sum(expert_states_per_rank(s, state_bytes).values())


def all_to_all_bytes_per_step(s: Setup, act_bytes: int) -> float:
    """Bytes one rank sends per optimizer step in expert parallelism's all_to_alls (GShard): each MoE block sends
    its (E, C, h) dispatch buffer out and the experts' outputs back, forward and again backward (4 exchanges), for
    each of the step's micro-batches; E x C = capacity_factor x top_k x tokens, of which (ep - 1) / ep leave the
    rank. 0 without expert parallelism."""
    ep = s.layout.ep
    if ep <= 1 or not s.n_experts:
        return 0.0
    tokens = s.micro_batch_size * s.block_size
    buffer = s.capacity_factor * s.top_k * tokens * s.n_embd * act_bytes
    return 4 * n_moe_layers(s) * s.accumulate * buffer * (ep - 1) / ep
