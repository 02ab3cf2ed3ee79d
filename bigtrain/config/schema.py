"""Typed schemas for every config group.

The top-level `BigtrainConfig` is registered in Hydra's ConfigStore as `base_config` and is the first entry of
`conf/config.yaml`'s defaults list, so every group file merges into a typed node: a typo such as
`model.n_layr=3` or a string where an int belongs fails at compose time with Hydra's own message.

Names follow the field: nanoGPT's `n_layer`/`n_head`/`n_embd`/`block_size`/`vocab_size`, litgpt's
`global_batch_size`/`micro_batch_size`, DeepSpeed's key names where a value maps 1:1 onto its config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class MoEConfig:
    # Mixture of experts (bigtrain/model/moe.py). n_experts=0: a dense model (every other key is then unused).
    n_experts: int = 0
    top_k: int = 2  # experts per token: 1 = Switch, 2 = GShard / Mixtral
    # Assignments per expert = ceil(factor x top_k x tokens / n_experts); past it tokens skip the MLP (residual).
    capacity_factor: float = 1.25
    eval_capacity_factor: float = 2.0
    aux_loss_coef: float = 0.01  # Switch load-balancing loss weight (coef x E x sum_i f_i P_i)
    z_loss_coef: float = 0.001  # ST-MoE router z-loss weight
    every_n_layers: int = 1  # block i is an MoE block when i % every_n_layers == 0
    n_shared_experts: int = 0  # experts every token also goes through (DeepSeekMoE)


@dataclass
class ModelConfig:
    name: str = "tiny"
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    # Per-head width. None means n_embd // n_head; GPT-3 13B's table lists d_model=5140 with 40 heads of 128.
    head_dim: int | None = None
    block_size: int = 256
    vocab_size: int = 256
    dropout: float = 0.0
    bias: bool = True
    # The modern decoder (Llama 2/3; bigtrain/model/gpt.py). The defaults are GPT-2's.
    norm: str = "layernorm"  # layernorm | rmsnorm
    norm_eps: float = 1e-5
    mlp: str = "gelu"  # gelu | swiglu
    # MLP hidden width; None: 4 x n_embd (gelu) or Llama's rule (swiglu): int(8/3 n_embd) x ffn_dim_multiplier,
    # rounded up to a multiple of ffn_multiple_of (bigtrain/model/shapes.py).
    ffn_hidden_size: int | None = None
    ffn_multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    position: str = "learned"  # learned (a position table) | rope (rotary, in attention)
    rope_theta: float = 10000.0
    # Key/value heads: None = n_head (multi-head), 1 (multi-query), a divisor of n_head between (grouped-query).
    n_kv_head: int | None = None
    tie_embeddings: bool = True  # the output head reuses the token table
    moe: MoEConfig = field(default_factory=MoEConfig)
    # Recompute each block's activations in the backward pass (trades ~33% more compute for memory).
    activation_checkpointing: bool = False
    # A model by size: 7.5e9 picks n_layer / n_head / n_embd (GPT-3's aspect, heads of 128) within 0.5% of it,
    # replacing those of the model group before any task reads them (bigtrain/plan/sizing.py). null: the shape above.
    n_params: float | None = None
    # The parameter count the source publishes, and where it comes from: tests hold the model to it.
    published_n_params: int | None = None
    published_n_active_params: int | None = None  # mixtures of experts: parameters one token passes through
    source: str = ""


@dataclass
class ParallelismConfig:
    # single | ddp | tp | pipeline (later: fsdp, deepspeed)
    name: str = "single"
    # torch.distributed backend; None picks gloo on CPU and nccl on GPU.
    process_group_backend: str | None = None
    # Tensor- and pipeline-parallel degrees. The planner reads them; data-parallel size = world / (tp * pp).
    tp: int = 1
    pp: int = 1
    # Expert-parallel degree (mixture-of-experts models, parallelism=ddp or fsdp): the experts of every MoE block
    # are split over ep data-parallel ranks, tokens travel by all_to_all (bigtrain/parallel/expert_parallel.py).
    ep: int = 1
    # parallelism=tp: also shard every parameter over the data-parallel axis with FSDP2 (2-D parallelism).
    fsdp: bool = False
    # parallelism=pipeline: the micro-batch schedule, gpipe (all forwards, then all backwards) or 1f1b.
    schedule: str = "gpipe"
    # Interleaved 1F1B (Narayanan et al. 2021, sec. 2.2.2): model chunks per pipeline rank; the bubble shrinks to
    # (pp-1)/(v x m) and the first stage holds 1 + (pp-1)/(pp x v) times more activations. Planned (task=plan) only.
    virtual_stages: int = 1


@dataclass
class ZeroConfig:
    # DeepSpeed ZeRO stage: 0 (plain DP), 1 (optimizer states), 2 (+ gradients), 3 (+ parameters).
    stage: int = 0
    # DeepSpeed's bucket sizes, in elements.
    reduce_bucket_size: int = 200_000_000
    allgather_bucket_size: int = 200_000_000
    overlap_comm: bool = True
    # ZeRO-3 keeps tensors with fewer elements than this whole on every rank (DeepSpeed's default: it saves
    # all-gathers of biases and LayerNorm gains); 0 partitions every tensor. The planner reads the same value.
    stage3_param_persistence_threshold: int = 100_000
    contiguous_gradients: bool = True


@dataclass
class OffloadConfig:
    # none | cpu (optimizer states) | cpu-params (optimizer states + parameters) | nvme (both, ZeRO-Infinity)
    name: str = "none"
    optimizer: str = "none"  # none | cpu | nvme: DeepSpeed's offload_optimizer.device
    params: str = "none"  # none | cpu | nvme: DeepSpeed's offload_param.device
    nvme_path: str | None = None
    pin_memory: bool = True


@dataclass
class HardwareConfig:
    name: str = "cpu"
    accelerator: str = "cpu"  # cpu | gpu
    devices: int = 1  # per node; on CPU each device is one process
    nodes: int = 1
    device_memory_gib: float = 16.0
    # Peak dense matrix throughput per device, from the vendor's datasheet.
    peak_tflops_bf16: float = 0.5
    peak_tflops_fp16: float = 0.5
    peak_tflops_fp32: float = 0.5
    host_memory_gib: float = 16.0  # per node
    # Per-device bandwidth for collectives, GB/s: within a node (NVLink) and between nodes (InfiniBand share).
    intra_node_bandwidth_gbps: float = 10.0
    inter_node_bandwidth_gbps: float = 1.0
    price_per_device_hour: float = 0.05  # USD, on-demand list price
    # For the planner's offload estimates: host <-> device link per device (PCIe), NVMe read/write and capacity
    # per node. Zero capacity means the node has no NVMe for ZeRO-Infinity.
    host_device_bandwidth_gbps: float = 16.0
    nvme_bandwidth_gbps: float = 2.0
    nvme_capacity_gib: float = 0.0
    # Node-level shared links and achieved fractions (bigtrain/plan/bandwidth.py; each hardware file says where its
    # values come from). The host<->device bandwidth all of a node's devices share at once (the PCIe switches'
    # uplinks to the CPU sockets); None: no shared cap, each device gets host_device_bandwidth_gbps.
    pcie_node_bandwidth_gbps: float | None = None
    # Fraction of the datasheet intra-/inter-node bandwidth that collectives reach (nccl-tests' bus bandwidth over
    # the datasheet); 1.0: the datasheet figure.
    intra_node_efficiency: float = 1.0
    inter_node_efficiency: float = 1.0
    # The host's side of optimizer offload: CPU cores per node, DeepSpeed's CPU Adam rate per core (fp32 elements
    # per second; measured with DeepSpeedCPUAdam, bigtrain/plan/schedule.py) and the host's memory bandwidth (GB/s
    # per node; None: no cap), which bounds CPU Adam on many-core hosts.
    host_cores: int = 1
    cpu_adam_elements_per_s_per_core: float = 4.0e8
    host_memory_bandwidth_gbps: float | None = None
    precision: str = "32-true"  # the default training precision on this hardware
    cpus_per_device: int = 1  # for the SLURM launcher
    # SLURM (hydra/launcher=slurm): the partition to submit to (None: the cluster's default) and the time limit.
    slurm_partition: str | None = None
    slurm_time_limit_min: int = 60


@dataclass
class DataConfig:
    name: str = "stdlib"
    # "stdlib" (this interpreter's standard-library source, offline everywhere) or a path to a text file / folder.
    source: str = "stdlib"
    tokenizer: str = "byte"  # byte | bpe | gpt2
    bpe_vocab_size: int = 4096
    # Local folder with GPT-2's vocab.bpe + encoder.json (tokenizer=gpt2); None uses tiktoken's cache.
    tokenizer_path: str | None = None
    val_fraction: float = 0.05
    # Cap on corpus bytes read (None: all of it).
    max_bytes: int | None = None
    # Where prepared token files go; one sub-folder per (source, tokenizer) fingerprint.
    cache_dir: str = "${oc.env:BIGTRAIN_DATA_DIR,${oc.env:HOME,.}/.cache/bigtrain/data}"
    # A prepared dataset folder (from task=prepare) to train on as is; None prepares `source` into cache_dir.
    prepared_dir: str | None = None
    num_workers: int = 0


@dataclass
class OptimConfig:
    name: str = "adamw"
    lr: float = 2e-3
    min_lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    # Applied to matrices only: biases, LayerNorm and embeddings-as-vectors are exempt (GPT-2/3 practice).
    weight_decay: float = 0.1
    warmup_steps: int = 20
    decay: str = "cosine"  # cosine | constant
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    fused: bool | None = None  # None: fused AdamW on GPU, foreach on CPU


@dataclass
class LoggerConfig:
    name: str = "csv"  # csv | tensorboard | wandb
    project: str = "bigtrain"
    entity: str | None = None  # wandb team or user; None: the key's default entity
    run_name: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    mode: str = "offline"  # wandb: offline | online | disabled


@dataclass
class TrainerConfig:
    max_steps: int = 500
    val_check_interval: int = 100  # optimizer steps between validations
    val_batches: int = 8  # micro-batches per rank in each validation
    global_batch_size: int = 16  # sequences per optimizer step, across all data-parallel ranks
    micro_batch_size: int = 16  # sequences per forward pass per rank
    precision: str = "${hardware.precision}"
    seed: int = 1337
    log_every_n_steps: int = 10
    checkpoint_every_n_steps: int = 250
    keep_last: int = 3  # newest step checkpoints kept (last.ckpt links the newest)
    on_nonfinite: str = "stop"  # stop | skip: what a NaN/inf loss or gradient does
    progress: bool = True
    step_time: bool = True  # the step-time breakdown (time/*, perf/*, memory/*): bigtrain/training/step_time.py
    # torch.compile the model (Module.compile: state-dict keys unchanged). Pays off on GPU after the first steps,
    # which compile; needs a C++ compiler on CPU.
    compile: bool = False
    # CPU threads per process: auto (idle OpenMP threads sleep, torch picks the count) or a number
    # (bigtrain/training/threads.py; an OMP_WAIT_POLICY / OMP_NUM_THREADS already in the environment wins).
    threads: str = "auto"
    sample_tokens: int = 200  # tokens of text sampled from the trained model at the end; 0 skips
    sample_prompt: str = "def "
    # Resume from this checkpoint (Lightning's ckpt_path: a .ckpt file, or a sharded DeepSpeed/FSDP folder).
    ckpt_path: str | None = None


@dataclass
class GenerateConfig:
    max_new_tokens: int = 200
    temperature: float = 0.8  # 0: greedy (argmax), deterministic
    top_k: int | None = 40  # None: no top-k cut
    top_p: float | None = None  # nucleus sampling; None or 1.0: off
    seed: int = 1337
    kv_cache: bool = True  # reuse past keys/values (same tokens as without, one position of compute per token)
    num_samples: int = 1
    stream: bool = True  # print tokens as they come


@dataclass
class EvalConfig:
    # Text files to score with the checkpoint's tokenizer; empty: the prepared validation split of its data.
    files: list[str] = field(default_factory=list)
    # Cap on tokens scored (null: all); scoring walks non-overlapping block_size windows from the start. 64k tokens
    # give the mean loss to ~0.01 nats in seconds; the whole stdlib validation split (~1.5M) took 688 s for nano.
    max_tokens: int | None = 65536
    batch_size: int = 16  # windows per forward pass


@dataclass
class ExportConfig:
    out_dir: str | None = None  # None: RUN_DIR/hf


@dataclass
class DistillConfig:
    """task=distill: loss = alpha x CE(student, labels) + (1 - alpha) x T^2 x KL(teacher_T || student_T), the
    softmaxes taken at temperature T (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network")."""

    alpha: float = 0.5  # weight of the hard-label cross-entropy, in [0, 1]; 1 is plain training
    temperature: float = 2.0  # T > 0; the T^2 factor keeps the soft-target gradients' scale independent of T
    # The teacher's architecture; name "none": no teacher. task=distill fills it from the teacher checkpoint, so the
    # planner (which reads no checkpoints) counts the teacher's weights and forward FLOPs. To plan a distillation
    # without a checkpoint: `task=plan +model@distill.teacher_model=gpt2-350m`.
    teacher_model: ModelConfig = field(default_factory=lambda: ModelConfig(name="none"))


@dataclass
class QuantizeConfig:
    """task=quantize: post-training int8 quantization of a checkpoint's linear layers with torchao."""

    # int8-weight-only: int8 weights with one fp32 scale per output row, activations stay float (any device);
    # int8-dynamic: also quantize each activation row to int8 at run time (int8 x int8 matmuls)
    scheme: str = "int8-weight-only"
    eval_tokens: int = 131072  # validation tokens scored before and after (perplexity); 0 skips the comparison
    out: str | None = None  # None: RUN_DIR/model-int8.pt


@dataclass
class PlanConfig:
    """What `task=plan` prints and what the pre-flight check of `task=train` enforces (bigtrain/plan)."""

    format: str = "table"  # table | json
    plot: bool = False  # write plan.png: memory per device for every zero stage x offload
    search: bool = False  # enumerate parallel layouts, keep those that fit, rank them
    rank_by: str = "time"  # time | cost
    # Assumed model FLOPs utilisation. 0.4 sits between the ~0.2-0.3 of GPT-3/Gopher/MT-NLG and PaLM's 0.462
    # (Chowdhery et al. 2022, "PaLM", Table 3); Megatron-LM reports 0.41-0.56 for 22B-1T (Korthikanti et al. 2022).
    mfu: float = 0.4
    # A measured or published end-to-end rate, TFLOP/s per device of hardware FLOPs (recomputation included, like
    # Megatron-LM's 140 for 175B on A100s), used instead of mfu: pipeline bubble and communication are inside it.
    achieved_tflops: float | None = None
    # A finished training run's directory: plan this config with the efficiency that run measured (its summary.json
    # tokens/s over its own config's FLOPs and peak), carried to this hardware's peak (bigtrain/plan/from_run.py).
    from_run: str | None = None
    # Fraction of device memory kept free for the CUDA context, allocator fragmentation and NCCL buffers.
    headroom: float = 0.1
    # Tokens to train on for time and cost; None: trainer.max_steps x global_batch_size x block_size.
    train_tokens: int | None = None
    # none | selective | full (Korthikanti et al. 2022); None follows model.activation_checkpointing (full / none).
    activation_recompute: str | None = None
    # Megatron sequence parallelism: shards the LayerNorm/dropout activations across the tp ranks too.
    sequence_parallel: bool = False
    # Offload the activations kept for the backward pass to host memory (DeepSpeed's cpu_checkpointing with
    # recomputation, torch's save_on_cpu without): device memory falls to the working layers, PCIe carries them
    # down and back every micro-batch (bigtrain/plan/schedule.py).
    activation_offload: bool = False
    # How model states are counted: engine (what DeepSpeed / torch allocate) | paper (the ZeRO paper's formulas) |
    # deepspeed-estimator (DeepSpeed's estimate_zero2/3_model_states_mem_needs, GPU and host columns). The plan's
    # JSON reports every total whichever is used (model_states_bytes).
    accounting: str = "engine"
    # The estimator's arguments: the model is built under deepspeed.zero.Init (bigtrain does so at ZeRO-3), and
    # DeepSpeed's additional_buffer_factor on its host figures.
    zero_init: bool = True
    additional_buffer_factor: float = 1.5
    # One process's memory before its model (interpreter, torch, Lightning, loader), GiB; None: measured once per
    # install and cached (~/.cache/bigtrain/process-baseline.json; bigtrain/plan/process.py).
    process_baseline_gib: float | None = None
    enforce: bool = True  # task=train refuses a config the plan says cannot fit; false: warn and go on
    max_nodes: int = 16  # search: node counts 1, 2, 4, ... up to this
    top: int = 10  # search: rows printed


@dataclass
class BigtrainConfig:
    task: str = "train"  # a module of bigtrain/tasks: train, prepare, ...
    # auto: continue from the newest good checkpoint in this run directory (set hydra.run.dir), or start fresh;
    # a path: that checkpoint file, or the newest good one of that run directory.
    resume: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    parallelism: ParallelismConfig = field(default_factory=ParallelismConfig)
    zero: ZeroConfig = field(default_factory=ZeroConfig)
    offload: OffloadConfig = field(default_factory=OffloadConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # A checkpoint to use (task=generate/eval/export): a Lightning .ckpt file, a run directory, a sharded
    # DeepSpeed checkpoint directory, or a Hugging Face GPT-2 or Llama directory.
    ckpt: str | None = None
    # Start training from this checkpoint's weights (same kinds as ckpt), with a fresh optimizer and schedule.
    init_from: str | None = None
    prompt: str | None = None  # task=generate: the prompt text (or prompt_file)
    prompt_file: str | None = None
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    # task=distill: the teacher checkpoint (same kinds as ckpt); the student is the `model` group.
    teacher: str | None = None
    distill: DistillConfig = field(default_factory=DistillConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    # task=report: the multirun directory whose comparison report to (re)build.
    sweep_dir: str | None = None
    # task=report: training run directories to compare planned with measured (the calibration report); with
    # sweep_dir, its points are added.
    runs: list[str] = field(default_factory=list)
    # Free-form notes a recipe carries (its expected result); not read by code.
    notes: dict[str, Any] = field(default_factory=dict)


def register_configs() -> None:
    """Put the schemas into Hydra's ConfigStore and bigtrain's resolvers into OmegaConf (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=BigtrainConfig)
    from bigtrain.config.resolvers import register_resolvers

    register_resolvers()
