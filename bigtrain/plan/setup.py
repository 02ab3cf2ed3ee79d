"""The numbers a plan is computed from, read once from the composed config into a flat, frozen record.

Everything in bigtrain/plan works on `Setup` (plain ints, floats and strings, and the run's `Layout`), so the search
can vary one field with `Setup.vary` (`dataclasses.replace`) and plan thousands of layouts per second without
touching OmegaConf.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from bigtrain.config.layout import Layout, layout_of
from bigtrain.model.shapes import head_dim_of, model_ffn_hidden_size
from bigtrain.plan.process import Process, process_from

GIB = 1024**3


# Setup fields that belong to its Layout: `vary` routes them there.
LAYOUT_FIELDS = frozenset(f.name for f in fields(Layout) if f.init)


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
    # how the run is split (strategy, devices, nodes, tp, pp, zero, offload, precision, batch): the run's own
    layout: Layout
    # DeepSpeed's buffers
    reduce_bucket_size: int  # elements
    allgather_bucket_size: int  # elements
    persistence_threshold: int  # ZeRO-3 keeps tensors with fewer elements whole on every rank
    # numerics
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
    # the modern decoder's shape (defaults: GPT-2's; bigtrain/model/gpt.py)
    n_kv_head: int = 0  # key/value heads; 0: n_head
    ffn_hidden_size: int = 0  # MLP hidden width; 0: 4 x n_embd
    mlp: str = "gelu"  # gelu (2 matrices) | swiglu (3)
    norm: str = "layernorm"  # layernorm (gain + bias) | rmsnorm (gain only)
    position: str = "learned"  # learned (a block_size x n_embd table) | rope (no parameters)
    tie_embeddings: bool = True
    # plan.accounting: how model states are counted (bigtrain/plan/memory.py: engine | paper | deepspeed-estimator)
    accounting: str = "engine"
    # DeepSpeed's estimator arguments (plan.accounting=deepspeed-estimator; bigtrain/plan/estimator.py)
    zero_init: bool = True
    additional_buffer_factor: float = 1.5
    # A measured end-to-end rate (hardware FLOP/s per device: bubble and communication inside it) used instead of
    # mfu x peak; 0: plan with mfu. rate_source says where it came from (mfu | achieved_tflops | from_run).
    achieved_flops: float = 0.0
    rate_source: str = "mfu"
    # Mixture of experts (model.moe): routed experts per MoE block (0: dense), experts per token, which blocks
    # (i % moe_every == 0), experts every token also passes through.
    n_experts: int = 0
    top_k: int = 1
    moe_every: int = 1
    n_shared_experts: int = 0
    # Schedules and bandwidth (bigtrain/plan/schedule.py, bandwidth.py): activations offloaded to the host
    # (plan.activation_offload); the host<->device bandwidth a node's devices share (bytes/s; 0: no shared cap);
    # collectives' achieved fraction of the datasheet bandwidths; the host's CPU Adam (cores per node, fp32
    # elements/s per core, memory bandwidth in bytes/s per node, 0: no cap).
    activation_offload: bool = False
    pcie_node_bandwidth: float = 0.0
    intra_node_efficiency: float = 1.0
    inter_node_efficiency: float = 1.0
    host_cores: int = 1
    cpu_adam_rate_per_core: float = 4.0e8
    host_memory_bandwidth: float = 0.0
    capacity_factor: float = 1.0  # training capacity: an expert takes capacity_factor x its even share of tokens
    # task=distill: the frozen teacher, as a Setup of the same layout with the teacher's model dims (None: no teacher)
    teacher: Setup | None = None
    # What the process holds besides the model (baseline, data pages, loader workers; bigtrain/plan/process.py);
    # None: no process terms (a Setup built without a config).
    process: Process | None = None
    # DeepSpeed's zero.overlap_comm / zero.contiguous_gradients: double / single reduction buckets (memory.buffers)
    overlap_comm: bool = True
    contiguous_gradients: bool = True

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def ffn(self) -> int:
        return self.ffn_hidden_size or 4 * self.n_embd

    def vary(self, **changes) -> Setup:
        """A copy with some fields changed, Layout fields (zero=3, nodes=4, ...) included."""
        moved = {k: changes.pop(k) for k in list(changes) if k in LAYOUT_FIELDS}
        if moved:
            changes["layout"] = replace(self.layout, **moved)
        return replace(self, **changes)

    # The Layout's values, read through (the formulas say s.dp, s.zero, ...).
    parallelism = property(lambda self: self.layout.parallelism)
    devices = property(lambda self: self.layout.devices)  # per node
    nodes = property(lambda self: self.layout.nodes)
    tp = property(lambda self: self.layout.tp)
    pp = property(lambda self: self.layout.pp)
    zero = property(lambda self: self.layout.zero)
    offload_optimizer = property(lambda self: self.layout.offload_optimizer)  # none | cpu | nvme
    offload_params = property(lambda self: self.layout.offload_params)  # none | cpu | nvme
    precision = property(lambda self: self.layout.precision)
    micro_batch_size = property(lambda self: self.layout.micro_batch_size)
    global_batch_size = property(lambda self: self.layout.global_batch_size)
    world = property(lambda self: self.layout.world)
    dp = property(lambda self: self.layout.dp)
    accumulate = property(lambda self: self.layout.accumulate)
    sharded = property(lambda self: self.layout.sharded)
    virtual_stages = property(lambda self: self.layout.virtual_stages)


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


def setup_from(cfg, layout: Layout | None = None) -> Setup:
    """Read the composed config (model, zero, hardware, trainer, plan) and its Layout (validation's, or derived
    here from the same config) into a Setup."""
    m, hw, tr = cfg.model, cfg.hardware, cfg.trainer
    plan = cfg.plan if "plan" in cfg else None
    tokens = plan.train_tokens if plan is not None and plan.train_tokens else None
    setup = Setup(
        **model_dims(m),
        layout=layout or layout_of(cfg),
        reduce_bucket_size=int(cfg.zero.reduce_bucket_size),
        allgather_bucket_size=int(cfg.zero.allgather_bucket_size),
        # DeepSpeed's stage3_param_persistence_threshold (default 1e5) where the zero config carries it.
        persistence_threshold=int(cfg.zero.get("stage3_param_persistence_threshold", 100_000)),
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
        accounting=str(plan.get("accounting", "engine")) if plan is not None else "engine",
        zero_init=bool(plan.get("zero_init", True)) if plan is not None else True,
        additional_buffer_factor=float(plan.get("additional_buffer_factor", 1.5)) if plan is not None else 1.5,
    )
    setup = replace(setup, **bandwidth_fields(hw, plan))
    setup = with_rate(setup, plan)
    setup = replace(
        setup,
        overlap_comm=bool(cfg.zero.get("overlap_comm", True)),
        contiguous_gradients=bool(cfg.zero.get("contiguous_gradients", True)),
    )
    setup = replace(setup, process=process_from(cfg, setup.layout, measure=str(cfg.hardware.accelerator) == "cpu"))
    # task=distill: the frozen teacher, planned as the same layout with the teacher's model shape.
    t = cfg.distill.teacher_model if "distill" in cfg else None
    if t is not None and t.name != "none":
        setup = replace(setup, teacher=replace(setup, **model_dims(t)))
    return setup


def bandwidth_fields(hw, plan) -> dict:
    """The Setup fields of bigtrain/plan/schedule.py and bandwidth.py, from the hardware and plan groups."""
    pcie_node, host_mem = hw.get("pcie_node_bandwidth_gbps"), hw.get("host_memory_bandwidth_gbps")
    return dict(
        activation_offload=bool(plan.get("activation_offload", False)) if plan is not None else False,
        pcie_node_bandwidth=float(pcie_node) * 1e9 if pcie_node else 0.0,
        intra_node_efficiency=float(hw.get("intra_node_efficiency", 1.0)),
        inter_node_efficiency=float(hw.get("inter_node_efficiency", 1.0)),
        host_cores=int(hw.get("host_cores", 1)),
        cpu_adam_rate_per_core=float(hw.get("cpu_adam_elements_per_s_per_core", 4.0e8)),
        host_memory_bandwidth=float(host_mem) * 1e9 if host_mem else 0.0,
    )


def with_rate(setup: Setup, plan) -> Setup:
    """plan.achieved_tflops (per device, end to end) or plan.from_run (a finished run's measured efficiency, as a
    fraction of this hardware's peak) as the Setup's achieved rate; neither: mfu is used."""
    if plan is None:
        return setup
    if plan.get("achieved_tflops") is not None:
        return replace(setup, achieved_flops=float(plan.achieved_tflops) * 1e12, rate_source="achieved_tflops")
    if plan.get("from_run") is not None:
        from bigtrain.plan.from_run import measured

        efficiency = measured(plan.from_run)["efficiency"]
        return replace(setup, achieved_flops=efficiency * setup.peak_flops, rate_source="from_run")
    return setup


def model_dims(m) -> dict:
    """The Setup fields a `model` config node sets (the student's, or a distillation teacher's)."""
    return dict(
        n_layer=m.n_layer,
        n_head=m.n_head,
        n_embd=m.n_embd,
        head_dim=head_dim_of(m.n_embd, m.n_head, m.head_dim),
        block_size=m.block_size,
        vocab_size=m.vocab_size,
        bias=bool(m.bias),
        n_kv_head=int(m.get("n_kv_head") or m.n_head),
        ffn_hidden_size=model_ffn_hidden_size(m),
        mlp=str(m.get("mlp", "gelu")),
        norm=str(m.get("norm", "layernorm")),
        position=str(m.get("position", "learned")),
        tie_embeddings=bool(m.get("tie_embeddings", True)),
        **moe_dims(m),
    )


def moe_dims(m) -> dict:
    moe = m.get("moe") or {}
    if not moe.get("n_experts"):
        return {}
    return dict(
        n_experts=int(moe["n_experts"]),
        top_k=int(moe.get("top_k", 2)),
        moe_every=int(moe.get("every_n_layers", 1)),
        n_shared_experts=int(moe.get("n_shared_experts", 0)),
        capacity_factor=float(moe.get("capacity_factor", 1.0)),
    )
