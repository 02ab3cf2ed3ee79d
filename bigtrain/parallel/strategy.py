"""The one place that turns the composed config into a Lightning strategy.

single -> one device, no process group; ddp -> DistributedDataParallel over every device of every node (gloo on
CPU, nccl on GPU); deepspeed -> DeepSpeed ZeRO stage 0-3 with offload (config dict from deepspeed_config.py);
fsdp -> torch FSDP (zero 3: full shard, 2: shard gradients + optimizer states, 0: no shard; offload=cpu-params:
parameters, gradients and optimizer step on the host); tp -> tensor parallel (+ FSDP2 over the data axis) on
Lightning's ModelParallelStrategy (tensor_parallel.py); pipeline -> torch.distributed.pipelining stages
(pipeline.py). DeepSpeed and FSDP get the CPU adapters of cpu_adapters.py when hardware.accelerator=cpu. Every
DDP-family strategy starts its extra ranks through bigtrain.worker.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from omegaconf import OmegaConf
from pytorch_lightning.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy, SingleDeviceStrategy, Strategy

from bigtrain.config.layout import Layout, layout_of
from bigtrain.parallel.cpu_adapters import CPUDeepSpeedMixin, CPUFSDPMixin, cpu_parallel_devices
from bigtrain.parallel.expert_strategy import ExpertParallelDDPMixin, ExpertParallelFSDPMixin
from bigtrain.parallel.launcher import RunDirLauncherMixin
from bigtrain.parallel.neutral_load import LoadsNeutralCheckpoints
from bigtrain.parallel.sharded_checkpoints import MarksCompleteCheckpoints

# zero stage -> FSDP sharding strategy (FSDP has no optimizer-only stage, so zero=1 is refused by validate).
FSDP_SHARDING = {0: "NO_SHARD", 2: "SHARD_GRAD_OP", 3: "FULL_SHARD"}


def process_group_backend(cfg) -> str:
    return cfg.parallelism.process_group_backend or ("nccl" if cfg.hardware.accelerator == "gpu" else "gloo")


class RunDirDDPStrategy(RunDirLauncherMixin, DDPStrategy):
    """DDPStrategy whose extra local ranks start through bigtrain.worker (see launcher.py)."""


class ExpertParallelDDPStrategy(ExpertParallelDDPMixin, RunDirDDPStrategy):
    """RunDirDDPStrategy with parallelism.ep > 1 (see expert_strategy.py)."""


class RunDirDeepSpeedStrategy(
    LoadsNeutralCheckpoints, MarksCompleteCheckpoints, RunDirLauncherMixin, DeepSpeedStrategy
):
    """Lightning's DeepSpeedStrategy, started through bigtrain.worker, with DeepSpeedCPUAdam when offloading.

    DeepSpeed runs the optimizer step of offloaded states on the host and insists on its own vectorised CPU Adam
    there; the LightningModule's AdamW (its decay groups and hyperparameters) is rebuilt as one, and the
    schedule rebound to it.
    """

    def __init__(self, run_dir: Path, offload_optimizer: bool, **kwargs):
        super().__init__(run_dir=run_dir, **kwargs)
        self.offload_optimizer = offload_optimizer

    def save_checkpoint(self, checkpoint, filepath, storage_options=None) -> None:
        if self.offload_optimizer and self.config["zero_optimization"]["offload_optimizer"]["device"] == "nvme":
            # DeepSpeed copies the NVMe swap files into the checkpoint with copytree(dirs_exist_ok=False), so
            # re-saving `last.ckpt` would fail on the previous save's copy: drop this rank's stale copy first.
            stale = Path(filepath) / "checkpoint" / "offloaded_tensors" / f"rank{self.global_rank:02d}"
            shutil.rmtree(stale, ignore_errors=True)
        super().save_checkpoint(checkpoint, filepath, storage_options)

    def _init_optimizers(self):
        optimizer, scheduler_config = super()._init_optimizers()
        if self.offload_optimizer:
            optimizer, scheduler_config = _as_cpu_adam(optimizer, scheduler_config)
        return optimizer, scheduler_config


class CPUDeepSpeedStrategy(CPUDeepSpeedMixin, RunDirDeepSpeedStrategy):
    """RunDirDeepSpeedStrategy on CPU processes (see cpu_adapters.py)."""


class RunDirFSDPStrategy(LoadsNeutralCheckpoints, MarksCompleteCheckpoints, RunDirLauncherMixin, FSDPStrategy):
    """Lightning's FSDPStrategy, started through bigtrain.worker, with gradient-norm clipping.

    Lightning's FSDPPrecision refuses norm clipping; its docs have the LightningModule call the FSDP root's own
    `clip_grad_norm_` (which takes the global norm across shards). Doing that here keeps the module
    strategy-agnostic.
    """

    def setup(self, trainer) -> None:
        super().setup(trainer)
        root = self.model
        self.precision_plugin.clip_grad_by_norm = lambda optimizer, clip_val: root.clip_grad_norm_(clip_val)


class CPUFSDPStrategy(CPUFSDPMixin, RunDirFSDPStrategy):
    """RunDirFSDPStrategy on CPU processes (see cpu_adapters.py)."""


class ExpertParallelFSDPStrategy(ExpertParallelFSDPMixin, RunDirFSDPStrategy):
    """RunDirFSDPStrategy with parallelism.ep > 1 (see expert_strategy.py)."""


class CPUExpertParallelFSDPStrategy(ExpertParallelFSDPMixin, CPUFSDPStrategy):
    """CPUFSDPStrategy with parallelism.ep > 1."""


def _as_cpu_adam(optimizer, scheduler_config):
    """The same AdamW (groups, lr, betas, eps, decay) as DeepSpeedCPUAdam, with its LambdaLR schedule rebound."""
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    first = optimizer.param_groups[0]
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in optimizer.param_groups]
    cpu_adam = DeepSpeedCPUAdam(
        groups, lr=first.get("initial_lr", first["lr"]), betas=first["betas"], eps=first["eps"], adamw_mode=True
    )
    if scheduler_config is not None:
        old = scheduler_config.scheduler
        if not isinstance(old, torch.optim.lr_scheduler.LambdaLR):
            raise TypeError(f"cannot move a {type(old).__name__} schedule onto DeepSpeedCPUAdam")
        scheduler_config.scheduler = torch.optim.lr_scheduler.LambdaLR(cpu_adam, old.lr_lambdas)
    return cpu_adam, scheduler_config


def ddp_settings(cfg, layout: Layout) -> dict:
    """DistributedDataParallel options for a GPT: gradients as views into the all-reduce buckets (no copy in and
    out of the buckets each step, one gradient-sized buffer less per rank); and for a dense model, whose every
    parameter gets a gradient every step, `static_graph` (DDP skips its per-step search for unused parameters and
    can reorder buckets to the order backward produces gradients). Not for a mixture of experts, which may leave an
    expert without tokens in a step, nor with gradient accumulation: DDP's static graph records its first iteration,
    and an accumulating micro-batch under `no_sync` there fails its reducer's assertion (torch 2.13)."""
    dense = OmegaConf.select(cfg, "model.moe.n_experts", default=0) == 0
    return {"gradient_as_bucket_view": True, "static_graph": dense and layout.trainer_accumulation == 1}


def build_strategy(cfg, run_dir: Path, layout: Layout | None = None) -> Strategy | str:
    """The Lightning strategy for cfg, split as `layout` says (validation's Layout of cfg when not given)."""
    layout = layout or layout_of(cfg)
    name, on_cpu = layout.parallelism, cfg.hardware.accelerator == "cpu"
    if name == "single":
        return SingleDeviceStrategy(device=torch.device("cpu") if on_cpu else torch.device("cuda", 0))
    ep = {"ep": layout.ep} if layout.ep > 1 else {}  # experts split over ep ranks (expert_strategy.py)
    if name == "ddp":
        cls = ExpertParallelDDPStrategy if ep else RunDirDDPStrategy
        return cls(run_dir=run_dir, process_group_backend=process_group_backend(cfg), **ep, **ddp_settings(cfg, layout))
    if name == "tp":
        from bigtrain.parallel.tensor_parallel import TensorParallelStrategy

        return TensorParallelStrategy(
            run_dir=run_dir,
            fsdp=layout.fsdp,
            data_parallel_size=layout.dp,
            tensor_parallel_size=layout.tp,
            process_group_backend=process_group_backend(cfg),
        )
    if name == "pipeline":
        from bigtrain.parallel.pipeline import PipelineStrategy

        return PipelineStrategy(
            run_dir=run_dir,
            dp=layout.dp,
            pp=layout.pp,
            schedule=layout.schedule,
            n_microbatches=layout.pipeline_microbatches,  # micro-batches of micro_batch_size in each dp rank's batch
            process_group_backend=process_group_backend(cfg),
        )
    devices = {"parallel_devices": cpu_parallel_devices(cfg.hardware.devices)} if on_cpu else {}
    if name == "deepspeed":
        from bigtrain.parallel.deepspeed_config import deepspeed_config
        from bigtrain.parallel.ops_cache import use_extensions_cache

        use_extensions_cache()
        cls = CPUDeepSpeedStrategy if on_cpu else RunDirDeepSpeedStrategy
        return cls(
            run_dir=run_dir,
            offload_optimizer=layout.offload_optimizer != "none",
            config=deepspeed_config(cfg),
            process_group_backend=process_group_backend(cfg),
            **devices,
        )
    if name == "fsdp":
        from torch.distributed.fsdp import CPUOffload, ShardingStrategy
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        from bigtrain.model.gpt import Block

        cls = CPUFSDPStrategy if on_cpu else RunDirFSDPStrategy
        if ep:
            cls = CPUExpertParallelFSDPStrategy if on_cpu else ExpertParallelFSDPStrategy
            ep["dense_sharded"] = layout.dp_shard > 1
        return cls(
            run_dir=run_dir,
            sharding_strategy=ShardingStrategy[FSDP_SHARDING[layout.zero]],
            cpu_offload=CPUOffload(offload_params=layout.offload_params == "cpu"),
            auto_wrap_policy=ModuleWrapPolicy({Block}),  # one FSDP unit per block; embeddings + final norm at the root
            state_dict_type="sharded",  # each rank writes its shard; a full state dict crashes on CPU
            process_group_backend=process_group_backend(cfg),
            **devices,
            **ep,
        )
    raise ValueError(f"no strategy for parallelism={name}")  # validate() rejects unknown names before this
