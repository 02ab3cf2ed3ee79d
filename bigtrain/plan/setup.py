"""The numbers a plan is computed from, read once from the composed config into a flat, frozen record.

Everything in bigtrain/plan works on `Setup` (plain ints, floats and strings), so the search can vary one field
with `dataclasses.replace` and plan thousands of layouts per second without touching OmegaConf.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bigtrain.config.validate import SHARDED_PARALLELISMS, sizes

GIB = 1024**3


@dataclass(frozen=True)
class Setup:
    # model
    n_layer: int
    n_head: int
    n_embd: int
    head_dim: int
    block_size: int  # s: sequence length
    vocab_size: int
    bias: bool
    # layout
    parallelism: str
    devices: int  # per node
    nodes: int
    tp: int
    pp: int
    zero: int
    offload_optimizer: str  # none | cpu | nvme
    offload_params: str  # none | cpu | nvme
    reduce_bucket_size: int  # elements
    allgather_bucket_size: int  # elements
    persistence_threshold: int  # ZeRO-3 keeps tensors with fewer elements whole on every rank
    # batch and numerics
    precision: str
    micro_batch_size: int
    global_batch_size: int
    recompute: str  # none | selective | full
    sequence_parallel: bool
    # hardware
    device_memory_bytes: float
    host_memory_bytes: float  # per node
    nvme_capacity_bytes: float  # per node
    peak_flops: float  # per device, at the training precision
    intra_node_bandwidth: float  # bytes/s per device
    inter_node_bandwidth: float  # bytes/s per device
    host_device_bandwidth: float  # bytes/s per device
    nvme_bandwidth: float  # bytes/s per node
    price_per_device_hour: float
    # assumptions
    mfu: float
    headroom: float
    train_tokens: int
    # task=distill: the frozen teacher, as a Setup of the same layout with the teacher's model dims (None: no teacher)
    teacher: Setup | None = None

    @property
    def world(self) -> int:
        return 1 if self.parallelism == "single" else self.devices * self.nodes

    @property
    def dp(self) -> int:
        return max(self.world // (self.tp * self.pp), 1)

    @property
    def accumulate(self) -> int:
        return max(self.global_batch_size // max(self.micro_batch_size * self.dp, 1), 1)

    @property
    def sharded(self) -> bool:
        """A ZeRO engine (DeepSpeed, or any strategy listed as sharded) keeps DeepSpeed's mixed-precision layout."""
        return self.parallelism in SHARDED_PARALLELISMS or self.parallelism == "deepspeed" or self.zero > 0


def peak_flops_for(hw, precision: str) -> float:
    """The datasheet peak for the precision the matrix multiplies run in (bf16 / fp16 / fp32), in FLOP/s."""
    p = str(precision)
    tflops = (
        hw.peak_tflops_bf16
        if p.startswith("bf16")
        else hw.peak_tflops_fp16
        if p.startswith("16")
        else hw.peak_tflops_fp32
    )
    return float(tflops) * 1e12


def recompute_of(cfg) -> str:
    chosen = cfg.plan.activation_recompute if "plan" in cfg else None
    if chosen is not None:
        return str(chosen)
    return "full" if cfg.model.activation_checkpointing else "none"


def setup_from(cfg) -> Setup:
    """Read the composed config (model, parallelism, zero, offload, hardware, trainer, plan) into a Setup."""
    m, par, hw, tr = cfg.model, cfg.parallelism, cfg.hardware, cfg.trainer
    plan = cfg.plan if "plan" in cfg else None
    s = sizes(cfg)  # world / dp / accumulate come from validate, the one place that derives them
    head_dim = m.head_dim or m.n_embd // m.n_head
    tokens = plan.train_tokens if plan is not None and plan.train_tokens else None
    setup = Setup(
        n_layer=m.n_layer,
        n_head=m.n_head,
        n_embd=m.n_embd,
        head_dim=head_dim,
        block_size=m.block_size,
        vocab_size=m.vocab_size,
        bias=bool(m.bias),
        parallelism=str(par.name),
        devices=hw.devices,
        nodes=hw.nodes,
        tp=par.tp,
        pp=par.pp,
        zero=int(cfg.zero.stage),
        offload_optimizer=str(cfg.offload.optimizer),
        offload_params=str(cfg.offload.params),
        reduce_bucket_size=int(cfg.zero.reduce_bucket_size),
        allgather_bucket_size=int(cfg.zero.allgather_bucket_size),
        # DeepSpeed's stage3_param_persistence_threshold (default 1e5) where the zero config carries it.
        persistence_threshold=int(cfg.zero.get("stage3_param_persistence_threshold", 100_000)),
        precision=str(tr.precision),
        micro_batch_size=tr.micro_batch_size,
        global_batch_size=tr.global_batch_size,
        recompute=recompute_of(cfg),
        sequence_parallel=bool(plan.sequence_parallel) if plan is not None else False,
        device_memory_bytes=float(hw.device_memory_gib) * GIB,
        host_memory_bytes=float(hw.host_memory_gib) * GIB,
        nvme_capacity_bytes=float(hw.nvme_capacity_gib) * GIB,
        peak_flops=peak_flops_for(hw, tr.precision),
        intra_node_bandwidth=float(hw.intra_node_bandwidth_gbps) * 1e9,
        inter_node_bandwidth=float(hw.inter_node_bandwidth_gbps) * 1e9,
        host_device_bandwidth=float(hw.host_device_bandwidth_gbps) * 1e9,
        nvme_bandwidth=float(hw.nvme_bandwidth_gbps) * 1e9,
        price_per_device_hour=float(hw.price_per_device_hour),
        mfu=float(plan.mfu) if plan is not None else 0.4,
        headroom=float(plan.headroom) if plan is not None else 0.1,
        train_tokens=int(tokens or tr.max_steps * tr.global_batch_size * m.block_size),
    )
    assert (setup.world, setup.dp) == (s.world, s.dp), "Setup must derive sizes exactly as validate.sizes does"
    t = cfg.distill.teacher_model if "distill" in cfg else None
    if t is not None and t.name != "none":
        head = t.head_dim or t.n_embd // t.n_head
        dims = dict(
            n_layer=t.n_layer,
            n_head=t.n_head,
            n_embd=t.n_embd,
            head_dim=head,
            vocab_size=t.vocab_size,
            block_size=t.block_size,
        )
        setup = replace(setup, teacher=replace(setup, **dims, bias=bool(t.bias)))
    return setup
