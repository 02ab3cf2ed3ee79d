"""CPU adapters for Lightning's DeepSpeed and FSDP strategies: used only when hardware.accelerator=cpu.

Stock Lightning refuses both on CPU, although DeepSpeed (gloo, all ZeRO stages, CPU and NVMe offload) and torch
FSDP train there fine. The adapters change only what stands in the way:

- DeepSpeed: `setup_environment` raises for a non-CUDA accelerator, and `setup_distributed` insists that device
  indices equal local ranks (CPU devices have no index). DeepSpeed itself is pointed at its CPU accelerator (on a
  machine with GPUs it would pick CUDA), and its shared-memory all-reduce op is switched off: it only speeds up
  inference all-reduce, but compiling it costs ~30 s at every `init_distributed`. DeepSpeed's engine gets the
  local rank as its device rank (Lightning passes the device index, which CPU devices lack).
- FSDP: Lightning passes `device_id=root_device.index` (None on CPU, which makes FSDP look for CUDA); the adapter
  passes `device_id=cpu`. Checkpoints use the sharded state dict: gathering a full one crashes on CPU.

Every rank builds its own strategy, so each of these settings holds in every process.
"""

from __future__ import annotations

import torch
from lightning_fabric.utilities.seed import reset_seed
from pytorch_lightning.strategies.ddp import DDPStrategy


def use_deepspeed_cpu_accelerator() -> None:
    """Make DeepSpeed use its CPU accelerator and skip building the shm communication op."""
    import deepspeed.ops
    from deepspeed.accelerator import set_accelerator
    from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

    set_accelerator(CPU_Accelerator())
    # TorchBackend builds the op only if it is marked compatible; deepspeed.ops keeps this dict for the process.
    deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False


class CPUDeepSpeedMixin:
    """Mixed into a DeepSpeedStrategy subclass: the two CUDA-only checks removed, everything else Lightning's."""

    def setup_environment(self) -> None:
        use_deepspeed_cpu_accelerator()
        DDPStrategy.setup_environment(self)  # skips DeepSpeedStrategy's CUDA check; calls setup_distributed below

    def setup_distributed(self) -> None:
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    def _setup_model_and_optimizer(self, model, optimizer, lr_scheduler=None):
        """Lightning's, with device_rank = local rank: it passes root_device.index, None on CPU, which DeepSpeed's
        engine cannot compare (`device_rank >= 0`)."""
        import argparse

        import deepspeed

        engine, ds_optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=self.local_rank),
            config=self.config,
            model=model,
            model_parameters=[p for p in model.parameters() if p.requires_grad],
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            dist_init_required=False,
        )
        return engine, ds_optimizer


class CPUFSDPMixin:
    """Mixed into an FSDPStrategy subclass: wraps the model with device_id=cpu."""

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel

        if not any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            model = FullyShardedDataParallel(
                module=model,
                cpu_offload=self.cpu_offload,
                mixed_precision=self.mixed_precision_config,
                sharding_strategy=self.sharding_strategy,
                device_id=torch.device("cpu"),
                **self.kwargs,
            )
        return model


def cpu_parallel_devices(n: int) -> list[torch.device]:
    """One CPU 'device' per local process (each process is one data-parallel rank)."""
    return [torch.device("cpu")] * n
