"""Search: enumerate layouts (node count x tp x pp x expert parallel x zero stage x offload x micro batch x
recompute) for the config's model, hardware and global batch, keep those that fit, rank them by training time or
cost. A mixture of experts also tries every power-of-two ep dividing dp and n_experts, on the engines that run it
(EP_PARALLELISMS: DDP at zero 0, FSDP at zero 2 and 3).

Each candidate is planned with the same functions as a single plan; only the Setup's Layout (and recomputation)
change, by `dataclasses.replace`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bigtrain.config.layout import EP_PARALLELISMS, SHARDED_PARALLELISMS
from bigtrain.plan import compute, memory
from bigtrain.plan.params import n_params
from bigtrain.plan.setup import Setup

# The engine the search proposes for zero >= 1 and offload: DeepSpeed (the one the planner's accounting mirrors).
SHARDED = "deepspeed" if "deepspeed" in SHARDED_PARALLELISMS or not SHARDED_PARALLELISMS else SHARDED_PARALLELISMS[0]
# (zero stage, offload config name, optimizer device, parameter device)
ZERO_OFFLOADS = (
    (0, "none", "none", "none"),
    (1, "none", "none", "none"),
    (1, "cpu", "cpu", "none"),
    (2, "none", "none", "none"),
    (2, "cpu", "cpu", "none"),
    (3, "none", "none", "none"),
    (3, "cpu", "cpu", "none"),
    (3, "cpu-params", "cpu", "cpu"),
    (3, "nvme", "nvme", "nvme"),
)
RECOMPUTES = ("none", "selective", "full")


@dataclass(frozen=True)
class Candidate:
    setup: Setup
    offload: str  # the offload config group's name
    memory: dict
    timing: dict

    @property
    def overrides(self) -> str:
        """The command-line overrides that launch (or plan) this layout."""
        s = self.setup
        parts = [f"parallelism={s.parallelism}", f"zero={s.zero}", f"offload={self.offload}"]
        if s.nodes != 1:
            parts.append(f"hardware.nodes={s.nodes}")
        if s.tp != 1:
            parts.append(f"parallelism.tp={s.tp}")
        if s.pp != 1:
            parts.append(f"parallelism.pp={s.pp}")
        if s.layout.ep != 1:
            parts.append(f"parallelism.ep={s.layout.ep}")
        parts.append(f"trainer.micro_batch_size={s.micro_batch_size}")
        parts.append(f"model.activation_checkpointing={str(s.recompute == 'full').lower()}")
        if s.recompute == "selective":
            parts.append("plan.activation_recompute=selective")
        if s.sequence_parallel:
            parts.append("plan.sequence_parallel=true")
        return " ".join(parts)


def _powers_of_two(limit: int) -> list[int]:
    out, k = [], 1
    while k <= limit:
        out.append(k)
        k *= 2
    return out


def layouts(base: Setup, max_nodes: int):
    """Every layout to try, as Setups (with the offload config name), whether or not it fits."""
    nodes_options = sorted({*_powers_of_two(max_nodes), base.nodes})
    for nodes in nodes_options:
        # The split before the strategy is chosen: world and dp come from the Layout, as for a run.
        world = replace(base.layout, parallelism="ddp", nodes=nodes, tp=1, pp=1).world
        for tp in _powers_of_two(base.devices):
            if base.n_head % tp:
                continue
            for pp in _powers_of_two(world // tp):
                # plain 1F1B: a config's parallelism.virtual_stages fits its own pp only (interleaving not searched)
                split = replace(base.layout, parallelism="ddp", nodes=nodes, tp=tp, pp=pp, zero=0, virtual_stages=1)
                dp = split.dp
                if base.n_layer % pp or world % (tp * pp):
                    continue
                if base.global_batch_size % dp:
                    continue
                for (zero, offload, opt_dev, param_dev), ep in _zero_offloads_ep(base, dp, tp * pp):
                    if pp > 1 and zero > 1:
                        continue  # DeepSpeed's pipeline engine supports ZeRO-1 at most
                    if "nvme" in (opt_dev, param_dev) and base.nvme_capacity_bytes <= 0:
                        continue
                    if zero == 0:
                        parallelism = "single" if world == 1 else "ddp"
                    else:
                        parallelism = SHARDED if ep == 1 else "fsdp"
                    for micro in _powers_of_two(base.global_batch_size // dp):
                        if base.global_batch_size % (micro * dp):
                            continue
                        layout = replace(
                            split,
                            ep=ep,
                            parallelism=parallelism,
                            zero=zero,
                            offload_optimizer=opt_dev,
                            offload_params=param_dev,
                            micro_batch_size=micro,
                        )
                        for recompute in RECOMPUTES:
                            yield (
                                replace(base, layout=layout, recompute=recompute, sequence_parallel=tp > 1),
                                offload,
                            )


# Expert parallelism runs on DDP (zero 0) and FSDP (zero 2: SHARD_GRAD_OP, 3: FULL_SHARD), without offload.
EP_ZERO_OFFLOADS = tuple(z for z in ZERO_OFFLOADS if z[0] in (0, 2, 3) and z[1] == "none")


def _zero_offloads_ep(base: Setup, dp: int, model_parallel: int):
    """(zero/offload row, ep) pairs: ep=1 with every row; for a mixture of experts without tp/pp (the engines that
    run ep are data-parallel only), each power-of-two ep > 1 dividing dp and n_experts with the rows its engines run."""
    for row in ZERO_OFFLOADS:
        yield row, 1
    if not base.n_experts or model_parallel > 1 or not {"ddp", "fsdp"} <= set(EP_PARALLELISMS):
        return
    for ep in _powers_of_two(dp)[1:]:
        if base.n_experts % ep == 0:
            for row in EP_ZERO_OFFLOADS:
                yield row, ep


def search(base: Setup, max_nodes: int = 16, rank_by: str = "time") -> tuple[list[Candidate], int]:
    """(fitting candidates ranked best first, number of layouts tried)."""
    n = n_params(base)
    kept: list[Candidate] = []
    tried = 0
    for s, offload in layouts(base, max_nodes):
        tried += 1
        mem = memory.memory(s, n)
        if memory.fits(s, mem):
            kept.append(Candidate(s, offload, mem, compute.timing(s, n)))
    kept.sort(key=lambda c: rank_key(c, rank_by))
    return kept, tried


def rank_key(c: Candidate, rank_by: str) -> tuple:
    """Time or cost first (rounded to 0.1% so near-ties fall through); then the simpler layout: fewer devices, no
    offload, lower zero stage, less recomputation, less model parallelism, bigger micro-batches."""
    key, other = ("cost_usd", "train_time_s") if rank_by == "cost" else ("train_time_s", "cost_usd")
    s = c.setup
    return (
        float(f"{c.timing[key]:.3g}"),
        float(f"{c.timing[other]:.3g}"),
        s.world,
        (s.offload_optimizer != "none") + (s.offload_params != "none"),
        s.zero,
        RECOMPUTES.index(s.recompute),
        s.tp * s.pp,
        -s.micro_batch_size,
    )
