"""The plan as a table for people (task=plan's default output) and the search's top rows."""

from __future__ import annotations

from bigtrain.plan.planner import MEMORY_TERMS
from bigtrain.plan.units import count, duration, gb, usd


def _layout_line(lay: dict) -> str:
    extra = " sequence-parallel" if lay["sequence_parallel"] else ""
    return (
        f"{lay['parallelism']} world={lay['world']} ({lay['devices']}/node x {lay['nodes']} nodes) dp={lay['dp']} "
        f"tp={lay['tp']} pp={lay['pp']} zero={lay['zero']} offload optimizer={lay['offload_optimizer']} "
        f"params={lay['offload_params']} | {lay['precision']} micro={lay['micro_batch_size']} "
        f"global={lay['global_batch_size']} accumulate={lay['accumulate']} recompute={lay['recompute']}{extra}"
    )


def _rate(p: dict) -> str:
    """Where the rate came from when it was measured rather than assumed (plan.achieved_tflops, plan.from_run)."""
    if p.get("rate_source", "mfu") == "mfu":
        return ""
    rate = f"; rate: {p['achieved_tflops_per_device']:.4g} TFLOP/s per device end to end"
    if "from_run" in p:
        r = p["from_run"]
        rate += (
            f" = efficiency {r['efficiency']:.4f} measured by {r['run_dir']} ({count(r['tokens_per_s'])} tokens/s of "
            f"{r['model']} on {r['world']} x {r['hardware']}) x this hardware's peak"
        )
    else:
        rate += " (plan.achieved_tflops)"
    return rate


def _schedule_rows(p: dict) -> list[str]:
    """The schedule and bandwidth terms of the step (bigtrain/plan/schedule.py, bandwidth.py), each with its formula;
    terms that are zero for this layout are left out, the bandwidths always shown."""
    f, bw, rows = p["formulas"], p["bandwidth_bytes_per_s"], []
    if p["layout"]["pp"] > 1:
        rows.append(
            f"  {'bubble':<16}{p['pipeline_bubble']:.2%} (virtual_stages={p['layout']['virtual_stages']}); "
            f"{f['pipeline_bubble']}; activations: {f['pipeline_in_flight']}"
        )
    if p["activation_offload_bytes_per_step"]:
        rows.append(
            f"  {'act. offload':<16}{gb(p['activation_offload_bytes_per_step'])} per device per step over PCIe; "
            f"{f['activation_offload']}"
        )
    if p["optimizer_step_time_s"]:
        rows.append(
            f"  {'optimizer step':<16}{duration(p['optimizer_step_time_s'])} serial (CPU Adam "
            f"{duration(p['cpu_adam_time_s'])}): {f['optimizer_step_time_s']}; CPU Adam: {f['cpu_adam_time_s']}"
        )
    rows.append(
        f"  {'bandwidth':<16}collectives {bw['intra_node_bandwidth'] / 1e9:,.1f} GB/s in / "
        f"{bw['inter_node_bandwidth'] / 1e9:,.1f} GB/s between nodes, PCIe {bw['pcie_bandwidth_per_device'] / 1e9:,.1f}"
        f" GB/s per device, NVMe {bw['nvme_bandwidth_per_node'] / 1e9:,.1f} GB/s per node; "
        f"{f['pcie_bandwidth_per_device']}; {f['intra_node_bandwidth']}"
    )
    return rows


def table(p: dict, title: str) -> str:
    mem, f = p["memory_per_device_bytes"], p["formulas"]
    rows = [
        f"bigtrain plan: {title}",
        f"  parameters      {count(p['n_params'])}"
        + (f" (Megatron-LM formula: {count(p['n_params_megatron'])})" if p["n_params_megatron"] else "")
        + (
            f"; {count(p['n_params_active'])} active per token, experts {count(p['n_expert_params'])} "
            f"({gb(p['expert_state_bytes_per_rank'])} of expert states per rank"
            + (f", all_to_all {gb(p['ep_comm_bytes_per_step'])}/step" if p.get("ep_comm_bytes_per_step") else "")
            + ")"
            if "n_params_active" in p
            else ""
        ),
        f"  layout          {_layout_line(p['layout'])}",
        "",
        f"  {'memory per device':<20}{'':>12}   formula",
    ]
    for term in (*MEMORY_TERMS, "teacher"):
        if term not in mem:
            continue  # only a distillation has a teacher
        rows.append(f"  {term:<20}{gb(mem[term]):>12}   {f[term]}")
    states = p["model_states_bytes"]
    others = ", ".join(f"{k} {gb(v)}" for k, v in states.items() if k != p["accounting"])
    rows.append(
        f"  {'(model states)':<20}{gb(states[p['accounting']]):>12}   accounting={p['accounting']} (used above); {others}"
    )
    status = "FITS" if p["fits"] else "DOES NOT FIT"
    rows += [
        f"  {'total':<20}{gb(mem['total']):>12}   of {gb(p['usable_device_memory_bytes'])} usable "
        f"({gb(p['device_memory_bytes'])} less {p['headroom']:.0%} headroom): {status}",
        f"  {'peak per process':<20}{gb(p['peak_memory_per_process_bytes']):>12}   "
        + ", ".join(f"{k} {gb(v)}" for k, v in p["process_terms_bytes"].items() if v)
        + f" (baseline: {p['process_baseline_source']}); {f['peak']}",
        f"  {'host model states':<20}{gb(p['host_memory_bytes']):>12}   "
        f"{f['host_deepspeed_estimator' if p['accounting'] == 'deepspeed-estimator' else 'host']}",
        f"  {'host per node':<20}{gb(p['host_memory_per_node_bytes']):>12}   of "
        f"{gb(p['host_memory_capacity_bytes'])}; {f['host_per_node']}",
        f"  {'NVMe per node':<20}{gb(p['nvme_bytes']):>12}   of {gb(p['nvme_capacity_bytes'])}",
        f"  {'KV cache':<20}{gb(p['kv_cache_bytes_per_sequence']):>12}   per sequence when generating; {f['kv_cache']}",
        "",
        f"  flops/token     {p['flops_per_token']:.3e} model ({f['flops_per_token']}); "
        f"{p['hardware_flops_per_token']:.3e} hardware (recompute={p['layout']['recompute']})",
        f"  step            {duration(p['step_time_s'])} (compute {duration(p['compute_time_s'])}, comm "
        f"{duration(p['comm_time_s'])} for {gb(p['comm_bytes_per_step'])}, offload {duration(p['offload_time_s'])}); "
        f"bound by {p['bound_by']}",
        *_schedule_rows(p),
        f"  throughput      {count(p['tokens_per_s'])} tokens/s at mfu {p['mfu']:.2f} (hfu {p['hfu']:.2f})" + _rate(p),
        f"  training        {count(p['train_tokens'])} tokens = {p['train_flops']:.3e} FLOPs in "
        f"{duration(p['train_time_s'])}, {count(p['device_hours'])} device-hours, {usd(p['cost_usd'])}",
    ]
    if "max_n_layer_that_fits" in p:
        rows.append(f"  deepest model of this width and layout that fits: n_layer={p['max_n_layer_that_fits']}")
    return "\n".join(rows)


def search_rows(found: list, tried: int, top: int, rank_by: str) -> dict:
    """The search's summary as JSON-ready data."""
    return {
        "tried": tried,
        "fitting": len(found),
        "rank_by": rank_by,
        "top": [
            {
                "overrides": c.overrides,
                "world": c.setup.world,
                "memory_per_device_bytes": int(c.memory["total"]),
                "host_memory_bytes": int(c.memory["host"]),
                "step_time_s": c.timing["step_time_s"],
                "tokens_per_s": c.timing["tokens_per_s"],
                "train_time_s": c.timing["train_time_s"],
                "cost_usd": c.timing["cost_usd"],
                "bound_by": c.timing["bound_by"],
            }
            for c in found[:top]
        ],
    }


def search_table(result: dict) -> str:
    rows = [
        f"search: {result['fitting']} of {result['tried']} layouts fit; best {len(result['top'])} by "
        f"{result['rank_by']}:",
        f"  {'#':>2} {'devices':>7} {'mem/dev':>10} {'tokens/s':>9} {'time':>11} {'cost':>9} {'bound':>7}  overrides",
    ]
    for i, r in enumerate(result["top"], 1):
        rows.append(
            f"  {i:>2} {r['world']:>7} {gb(r['memory_per_device_bytes']):>10} {count(r['tokens_per_s']):>9} "
            f"{duration(r['train_time_s']):>11} {usd(r['cost_usd']):>9} {r['bound_by']:>7}  {r['overrides']}"
        )
    if not result["top"]:
        rows.append("  (none fits: a larger plan.max_nodes, other hardware or a smaller model)")
    return "\n".join(rows)
