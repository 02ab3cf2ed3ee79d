"""How a run is split across processes: one frozen, torch-free answer, derived once from the composed config.

world = devices x nodes (1 under parallelism=single) = dp x tp x pp; ep (expert parallel) splits a
mixture-of-experts model's experts over ep of the dp ranks: each expert is then replicated over dp / ep ranks (the
expert-data-parallel group, `edp`), while the dense parameters stay data-parallel over all dp ranks. Data
parallelism splits into dp_shard (ranks that partition the model states: ZeRO >= 1, FSDP's shard modes, FSDP2 over
tp's data axis) x dp_replicate (plain replicas). A step takes global_batch_size sequences: micro_batch_size per
forward pass per rank, `accumulate` = global / (micro x dp) forward passes per rank. Under pipeline parallelism
those micro-batches are the schedule's (each data-parallel rank loads its whole batch once and the schedule splits
it), so the Trainer accumulates nothing.

This module is the only place that computes dp and accumulation: validation derives the Layout (`layout_of`),
the planner embeds it (its search varies it with `dataclasses.replace`), and the strategy builder, DataModule,
Trainer arguments and summary read it. A new dimension is a new field and its rules here (torchtitan's
`ParallelDims` is the model). Invalid values never raise on construction: `problems()` names every broken rule,
`check()` raises them as one ConfigError line, so validation can report them with the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bigtrain.errors import ConfigError

PARALLELISMS = ("single", "ddp", "deepspeed", "fsdp", "tp", "pipeline")
SHARDED_PARALLELISMS: tuple[str, ...] = ("deepspeed", "fsdp")  # strategies that implement zero stages and offload
# Strategies that run parallelism.ep > 1 (bigtrain/parallel/expert_parallel.py). DeepSpeed is not among them: its
# engine only treats a parameter as an expert (reduced over the expert-data-parallel group, saved per ep rank) when
# it sits in deepspeed.moe.layer.MoE, a class the torch-only model cannot be (see parallel/expert_strategy.py).
EP_PARALLELISMS = ("ddp", "fsdp")
PIPELINE_SCHEDULES = ("gpipe", "1f1b")


@dataclass(frozen=True)
class Layout:
    parallelism: str = "single"  # the strategy that runs it (parallelism.name)
    nodes: int = 1
    devices: int = 1  # processes (accelerators) per node
    tp: int = 1  # tensor-parallel degree
    pp: int = 1  # pipeline stages
    ep: int = 1  # expert-parallel degree: ranks the experts of every MoE block are split over
    experts: int = 0  # routed experts per MoE block (model.moe.n_experts; 0: a dense model)
    zero: int = 0  # ZeRO stage (FSDP: 3 full shard, 2 grads + optimizer states, 0 none)
    offload_optimizer: str = "none"  # none | cpu | nvme
    offload_params: str = "none"  # none | cpu | nvme
    precision: str = "32-true"
    micro_batch_size: int = 1  # sequences per forward pass per rank
    global_batch_size: int = 1  # sequences per optimizer step, all data-parallel ranks together
    schedule: str = "gpipe"  # pipeline schedule (parallelism=pipeline)
    # Interleaved 1F1B (Narayanan et al. 2021, sec. 2.2.2): model chunks per pipeline rank, each of
    # n_layer / (pp x virtual_stages) layers; 1: the plain schedule. Planned only (bigtrain/plan/schedule.py).
    virtual_stages: int = 1
    fsdp: bool = False  # parallelism=tp also shards over its data axis (FSDP2)
    # Derived in __post_init__ (never passed; `replace` recomputes them).
    world: int = field(init=False)
    dp: int = field(init=False)
    accumulate: int = field(init=False)

    def __post_init__(self) -> None:
        world = 1 if self.parallelism == "single" else self.devices * self.nodes
        dp = max(world // max(self.tp * self.pp, 1), 1)
        accumulate = max(self.global_batch_size // max(self.micro_batch_size * dp, 1), 1)
        object.__setattr__(self, "world", world)
        object.__setattr__(self, "dp", dp)
        object.__setattr__(self, "accumulate", accumulate)

    # --- the data-parallel split -----------------------------------------------------------------------------
    @property
    def sharded(self) -> bool:
        """A ZeRO engine (DeepSpeed, or any strategy listed as sharded) or any ZeRO stage above 0."""
        return self.parallelism in SHARDED_PARALLELISMS or self.zero > 0

    @property
    def dp_shard(self) -> int:
        """Data-parallel ranks that partition model states among themselves."""
        if self.parallelism == "deepspeed" and self.zero >= 1:
            return self.dp
        if self.parallelism == "fsdp" and self.zero >= 2:
            return self.dp
        if self.parallelism == "tp" and self.fsdp:
            return self.dp
        return 1

    @property
    def dp_replicate(self) -> int:
        """Data-parallel groups that hold identical copies (DDP replicas; HSDP's outer dimension)."""
        return self.dp // self.dp_shard

    @property
    def edp(self) -> int:
        """Expert-data-parallel size: the dp ranks that hold the same experts (and average their gradients)."""
        return max(self.dp // max(self.ep, 1), 1)

    # --- batches -----------------------------------------------------------------------------------------------
    @property
    def pipelined(self) -> bool:
        return self.parallelism == "pipeline"

    @property
    def pipeline_microbatches(self) -> int:
        """Micro-batches the pipeline schedule splits each data-parallel rank's batch into (1 without stages)."""
        return self.accumulate if self.pipelined else 1

    @property
    def loader_batch_size(self) -> int:
        """Sequences per item the DataModule yields: a pipelined rank loads its whole batch at once."""
        return self.global_batch_size // self.dp if self.pipelined else self.micro_batch_size

    @property
    def trainer_accumulation(self) -> int:
        """Lightning's accumulate_grad_batches: the pipeline schedule accumulates inside one training step."""
        return 1 if self.pipelined else self.accumulate

    @property
    def trainer_devices(self) -> int:
        return 1 if self.parallelism == "single" else self.devices

    @property
    def trainer_nodes(self) -> int:
        return 1 if self.parallelism == "single" else self.nodes

    # --- rules ---------------------------------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Every broken invariant, each naming its numbers and what would be valid (empty when consistent)."""
        return self.degree_problems() + self.split_problems() + self.expert_problems() + self.batch_problems()

    def degree_problems(self) -> list[str]:
        """Device counts and degrees: positive, and one process under parallelism=single."""
        p: list[str] = []
        for key, value in (
            ("hardware.devices", self.devices),
            ("hardware.nodes", self.nodes),
            ("parallelism.tp", self.tp),
            ("parallelism.pp", self.pp),
            ("parallelism.ep", self.ep),
            ("parallelism.virtual_stages", self.virtual_stages),
        ):
            if value is None or value <= 0:
                p.append(f"{key}={value} must be a positive number")
        if self.parallelism == "single" and self.devices * self.nodes > 1:
            p.append(
                f"parallelism=single runs one process but hardware.devices={self.devices} x hardware.nodes="
                f"{self.nodes} = {self.devices * self.nodes}; use parallelism=ddp, or hardware.devices=1 "
                f"hardware.nodes=1"
            )
        return p

    def expert_problems(self, planning: bool = False) -> list[str]:
        """ep splits a mixture of experts over data-parallel ranks: an MoE model, a strategy that runs it (not asked
        of a plan, which may describe any engine), and an expert count and data-parallel size that ep divides."""
        if self.ep is None or self.ep <= 1 or min(self.devices, self.nodes, self.tp, self.pp) <= 0:
            return []  # ep=1 is always valid; non-positive values are reported as such
        if self.experts <= 0:
            return [
                f"parallelism.ep={self.ep} needs a mixture-of-experts model (model.moe.n_experts=0); "
                "use parallelism.ep=1"
            ]
        p: list[str] = []
        if not planning and self.parallelism not in EP_PARALLELISMS:
            p.append(
                f"parallelism={self.parallelism} cannot split experts (parallelism.ep={self.ep}); use parallelism="
                f"{' or '.join(EP_PARALLELISMS)}, or parallelism.ep=1"
            )
        if self.experts % self.ep:
            valid = [e for e in range(1, self.experts + 1) if self.experts % e == 0 and self.dp % e == 0]
            p.append(
                f"parallelism.ep={self.ep} does not divide model.moe.n_experts={self.experts}; valid ep: "
                f"{', '.join(map(str, valid))}"
            )
        if self.ep > self.world:
            p.append(f"parallelism.ep={self.ep} exceeds the {self.world} processes of this run; use ep<={self.world}")
        elif self.dp % self.ep:
            valid = [e for e in range(1, self.dp + 1) if self.dp % e == 0 and self.experts % e == 0]
            p.append(
                f"parallelism.ep={self.ep} does not divide the data-parallel size dp={self.dp} (world {self.world} / "
                f"(tp {self.tp} x pp {self.pp})); valid ep: {', '.join(map(str, valid))}"
            )
        return p

    def split_problems(self) -> list[str]:
        """dp x tp x pp must use every device; a 1F1B pipeline needs at least pp micro-batches."""
        if min(self.devices, self.nodes, self.tp, self.pp, self.ep) <= 0:
            return []  # reported as non-positive; the products would only repeat it
        p: list[str] = []
        if self.dp * self.tp * self.pp != self.world:
            p.append(
                f"dp({self.dp}) x tp({self.tp}) x pp({self.pp}) = {self.dp * self.tp * self.pp} != device count "
                f"{self.world} (hardware.devices={self.devices} x hardware.nodes={self.nodes}); use a device count "
                f"that is a multiple of tp x pp = {self.tp * self.pp}"
            )
        if self.virtual_stages > 1 and self.pp <= 1:
            p.append(
                f"parallelism.virtual_stages={self.virtual_stages} interleaves pipeline stages but parallelism.pp="
                f"{self.pp}; use parallelism.pp>1 or parallelism.virtual_stages=1"
            )
        elif self.virtual_stages > 1 and self.accumulate % self.pp != 0:
            # Megatron-LM's rule (schedules.py): its interleaved schedule cycles micro-batches in groups of pp.
            p.append(
                f"parallelism.virtual_stages={self.virtual_stages} (interleaved 1F1B) needs the micro-batches per step "
                f"to be a multiple of pp={self.pp}, but trainer.global_batch_size={self.global_batch_size} / "
                f"(micro_batch_size={self.micro_batch_size} x dp={self.dp}) = {self.accumulate}; use a global batch "
                f"of {self.micro_batch_size * self.dp * self.pp * max(1, -(-self.accumulate // self.pp))}"
            )
        if self.pipelined and self.schedule == "1f1b" and 0 < self.accumulate < self.pp:
            p.append(
                f"parallelism.schedule=1f1b needs at least pp={self.pp} micro-batches per step, but "
                f"trainer.global_batch_size={self.global_batch_size} / (micro_batch_size={self.micro_batch_size} "
                f"x dp={self.dp}) = {self.accumulate}; lower trainer.micro_batch_size or use parallelism.schedule=gpipe"
            )
        return p

    def batch_problems(self) -> list[str]:
        """global_batch_size must split into whole micro-batches on every data-parallel rank."""
        g, m, dp = self.global_batch_size, self.micro_batch_size, self.dp
        if g <= 0 or m <= 0 or g % (m * dp) == 0:
            return []  # non-positive sizes are reported with the other trainer keys
        unit = m * dp
        near = sorted({max(unit, g // unit * unit), (g // unit + 1) * unit})
        divisors = [d for d in range(1, g + 1) if g % (d * dp) == 0]
        return [
            f"trainer.global_batch_size={g} is not divisible by trainer.micro_batch_size={m} x data-parallel size "
            f"{dp} (= {unit}); valid global sizes near it: {' or '.join(map(str, near))}"
            + (f"; valid micro sizes for {g}: {', '.join(map(str, divisors[-6:]))}" if divisors else "")
        ]

    def check(self) -> Layout:
        """This layout, or one ConfigError naming every broken rule."""
        problems = self.problems()
        if problems:
            raise ConfigError("; ".join(problems))
        return self

    def as_dict(self) -> dict:
        """The layout as summary.json and plan.json record it."""
        return {
            "parallelism": self.parallelism,
            "nodes": self.nodes,
            "devices": self.devices,
            "world": self.world,
            "dp": self.dp,
            "dp_shard": self.dp_shard,
            "dp_replicate": self.dp_replicate,
            "tp": self.tp,
            "pp": self.pp,
            "ep": self.ep,
            "edp": self.edp,
            "zero": self.zero,
            "offload_optimizer": self.offload_optimizer,
            "offload_params": self.offload_params,
            "precision": self.precision,
            "micro_batch_size": self.micro_batch_size,
            "global_batch_size": self.global_batch_size,
            "accumulate": self.accumulate,
            "pipeline_microbatches": self.pipeline_microbatches,
            "virtual_stages": self.virtual_stages,
        }


def ends_accumulation(micro_batch_index: int, accumulate: int) -> bool:
    """Whether micro-batch `micro_batch_index` (0-based) is the last of an accumulation of `accumulate`: the one
    after which the optimizer steps. Callbacks that act at step boundaries ask this (pass Lightning's
    trainer.accumulate_grad_batches)."""
    return (micro_batch_index + 1) % accumulate == 0


def layout_of(cfg) -> Layout:
    """The Layout of a composed config (its parallelism, zero, offload, hardware and trainer groups). Never raises
    for bad values: validation reports them through `problems()`."""
    par, hw, tr = cfg.parallelism, cfg.hardware, cfg.trainer
    return Layout(
        parallelism=str(par.name),
        nodes=hw.nodes,
        devices=hw.devices,
        tp=par.tp,
        pp=par.pp,
        ep=par.get("ep", 1),
        experts=int(cfg.model.moe.n_experts) if "moe" in cfg.model else 0,
        zero=int(cfg.zero.stage) if cfg.zero.stage is not None else 0,
        offload_optimizer=str(cfg.offload.optimizer),
        offload_params=str(cfg.offload.params),
        precision=str(tr.precision),
        micro_batch_size=tr.micro_batch_size,
        global_batch_size=tr.global_batch_size,
        schedule=str(par.get("schedule", "gpipe")),
        fsdp=bool(par.get("fsdp", False)),
        virtual_stages=int(par.get("virtual_stages", 1)),
    )
