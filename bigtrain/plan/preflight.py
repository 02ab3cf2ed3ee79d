"""The pre-flight check of `task=train`: plan the run, print one line, refuse what cannot fit."""

from __future__ import annotations

from bigtrain.errors import ConfigError
from bigtrain.plan.planner import plan
from bigtrain.plan.search import search
from bigtrain.plan.setup import setup_from
from bigtrain.plan.units import count, duration, gb


def verdict(p: dict) -> str:
    """One line: fits or not, the per-device total against what is usable, the largest term, speed."""
    mem = p["memory_per_device_bytes"]
    largest = p["largest_term"]
    where = f"{gb(mem['total'])} per device of {gb(p['usable_device_memory_bytes'])} usable"
    if p["fits"]:
        return (
            f"plan: fits, {where} (largest: {largest} {gb(mem[largest])}); "
            f"~{count(p['tokens_per_s'])} tokens/s at mfu {p['mfu']:.2f}, {duration(p['train_time_s'])} "
            f"for {count(p['train_tokens'])} tokens"
        )
    why = []
    if mem["total"] > p["usable_device_memory_bytes"]:
        why.append(f"{where} (largest: {largest} {gb(mem[largest])})")
    host = p.get("host_memory_per_node_bytes", p["host_memory_bytes"])
    if host > p["host_memory_capacity_bytes"] * (1 - p["headroom"]):
        why.append(f"host {gb(host)} per node of {gb(p['host_memory_capacity_bytes'])}")
    if p["nvme_bytes"] > p["nvme_capacity_bytes"] * (1 - p["headroom"]):
        why.append(f"NVMe {gb(p['nvme_bytes'])} per node of {gb(p['nvme_capacity_bytes'])}")
    return "plan: does NOT fit, " + "; ".join(why or [where])


def suggestion(cfg, p: dict) -> str:
    """A config that would fit: the best layout the search finds, else the deepest model of this width."""
    s = setup_from(cfg)
    found, tried = search(s, max_nodes=max(cfg.plan.max_nodes, s.nodes), rank_by=cfg.plan.rank_by)
    if found:
        return f"a layout that fits: {found[0].overrides}"
    deepest = p.get("max_n_layer_that_fits", 0)
    hint = f" or a shallower model (model.n_layer<={deepest} fits as configured)" if deepest else ""
    return (
        f"none of {tried} layouts up to plan.max_nodes={cfg.plan.max_nodes} nodes of hardware={cfg.hardware.name} "
        f"fits; use bigger hardware (e.g. hardware=a100-80g-x8) or a smaller model{hint}"
    )


def preflight(cfg, echo=print) -> dict:
    """Plan cfg, print the verdict, raise ConfigError when it cannot fit and plan.enforce is true."""
    p = plan(cfg)
    line = verdict(p)
    if not p["fits"]:
        fix = suggestion(cfg, p)
        if cfg.plan.enforce:
            raise ConfigError(f"{line}; {fix}; or set plan.enforce=false to launch anyway")
        line += f" (plan.enforce=false: launching anyway; {fix})"
    echo(line)
    return p
