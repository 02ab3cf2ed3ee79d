"""One plan: memory per device, compute, time and cost for the layout the config describes."""

from __future__ import annotations

from dataclasses import replace

from bigtrain.plan import bandwidth, compute, estimator, memory, schedule
from bigtrain.plan.moe import expert_params, expert_state_bytes_per_rank
from bigtrain.plan.params import active_params, megatron_n_params, n_params
from bigtrain.plan.setup import Setup, setup_from

MEMORY_TERMS = ("params", "grads", "optimizer", "activations", "buffers")
PROCESS_TERMS = ("process_baseline", "data_pages", "workspace", "backward_transient")


def plan_setup(s: Setup) -> dict:
    """The plan of one Setup as a JSON-ready dict (the keys `task=plan plan.format=json` prints)."""
    n = n_params(s)
    mem = memory.memory(s, n)
    terms = (*MEMORY_TERMS, "teacher") if "teacher" in mem else MEMORY_TERMS  # a distillation's frozen teacher
    per_device = {k: int(mem[k]) for k in (*terms, "total")}
    usable = memory.usable_device_bytes(s)
    return {
        "n_params": n,
        # Narayanan et al.'s closed form describes GPT's shape only (4h GELU MLP, as many k/v heads as q heads).
        "n_params_megatron": megatron_n_params(s) if _gpt_shaped(s) else None,
        **moe_entry(s),
        "layout": layout_entry(s),
        "memory_per_device_bytes": per_device,
        "largest_term": max(terms, key=per_device.__getitem__),
        # plan.accounting counts the model states above; every accounting's device total, for comparison.
        "accounting": s.accounting,
        "model_states_bytes": {k: int(v) for k, v in memory.model_state_totals(s, n).items()},
        # DeepSpeed's own estimator columns for a ZeRO layout (GPU per device, CPU per node), whichever is used.
        "deepspeed_estimate_bytes": (
            {k: int(v) for k, v in estimator.estimate(s, n).items()} if estimator.applies(s) else None
        ),
        # What a run measures per process (CPU: peak RSS; GPU: max_memory_allocated): the device total plus the
        # process terms (bigtrain/plan/process.py), each by name.
        "peak_memory_per_process_bytes": int(mem["peak"]),
        "process_terms_bytes": {k: int(mem[k]) for k in PROCESS_TERMS},
        "process_baseline_source": s.process.baseline_source if s.process is not None else None,
        "host_memory_bytes": int(mem["host"]),
        "host_memory_per_node_bytes": int(mem["host_per_node"]),
        "nvme_bytes": int(mem["nvme"]),
        "device_memory_bytes": int(s.device_memory_bytes),
        "usable_device_memory_bytes": int(usable),
        "host_memory_capacity_bytes": int(s.host_memory_bytes),
        "nvme_capacity_bytes": int(s.nvme_capacity_bytes),
        "headroom": s.headroom,
        "fits": memory.fits(s, mem),
        "kv_cache_bytes_per_sequence": int(memory.kv_cache_bytes(s)),
        **compute.timing(s, n),
        "formulas": {**memory.FORMULAS, **compute.FORMULAS, **schedule.FORMULAS, **bandwidth.FORMULAS},
    }


def moe_entry(s: Setup) -> dict:
    """A mixture of experts' parameters: active per token (what FLOPs count), the routed experts', and the bytes of
    the experts' states one rank holds (empty for a dense model)."""
    if not s.n_experts:
        return {}
    return {
        "n_params_active": active_params(s),
        "n_expert_params": expert_params(s),
        "expert_state_bytes_per_rank": int(expert_state_bytes_per_rank(s, memory.state_bytes(s))),
    }


def layout_entry(s: Setup) -> dict:
    """The plan's `layout` entry: the run's Layout and how activations are kept."""
    return {**s.layout.as_dict(), "recompute": s.recompute, "sequence_parallel": s.sequence_parallel}


def _gpt_shaped(s: Setup) -> bool:
    return s.mlp == "gelu" and s.ffn == 4 * s.n_embd and s.kv_heads == s.n_head and s.tie_embeddings


def plan(cfg) -> dict:
    """Plan the composed config (call `validate(cfg, planning=True)` first for clear errors on bad input)."""
    s = setup_from(cfg)
    out = plan_setup(s)
    if s.rate_source == "from_run":
        from bigtrain.plan.from_run import measured

        out["from_run"] = measured(cfg.plan.from_run)  # what the run measured, and the efficiency carried over
    out["max_n_layer_that_fits"] = max_n_layer_that_fits(s)
    return out


def _fits(s: Setup) -> bool:
    n = n_params(s)
    return memory.fits(s, memory.memory(s, n))


def max_n_layer_that_fits(s: Setup, limit: int = 1 << 16) -> int:
    """The deepest model of this width (and layout) that fits, by bisection on n_layer; 0 if none does.
    Only multiples of pp x virtual_stages count (equal pipeline stages and model chunks)."""
    step = s.pp * s.virtual_stages
    if not _fits(replace(s, n_layer=step)):
        return 0
    lo, hi = 1, 2
    while hi * step <= limit and _fits(replace(s, n_layer=hi * step)):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _fits(replace(s, n_layer=mid * step)) else (lo, mid)
    return lo * step
