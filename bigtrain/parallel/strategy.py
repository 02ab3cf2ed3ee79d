"""The one place that turns the composed config into a Lightning strategy.

single -> one device, no process group; ddp -> DistributedDataParallel over every device of every node (gloo on
CPU, nccl on GPU); tp -> tensor parallel (+ FSDP2 over the data axis) on Lightning's ModelParallelStrategy
(tensor_parallel.py); pipeline -> torch.distributed.pipelining stages (pipeline.py). Sharded strategies (DeepSpeed,
FSDP) are built here too, importing their libraries lazily.
"""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning.strategies import DDPStrategy, SingleDeviceStrategy, Strategy

from bigtrain.parallel.launcher import configure_run_dir_launcher


def process_group_backend(cfg) -> str:
    return cfg.parallelism.process_group_backend or ("nccl" if cfg.hardware.accelerator == "gpu" else "gloo")


class RunDirDDPStrategy(DDPStrategy):
    """DDPStrategy whose extra local ranks start through bigtrain.worker (see launcher.py)."""

    def __init__(self, run_dir: Path, **kwargs):
        super().__init__(**kwargs)
        self.run_dir = run_dir

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        configure_run_dir_launcher(self, self.run_dir)


def build_strategy(cfg, run_dir: Path) -> Strategy | str:
    name = cfg.parallelism.name
    if name == "single":
        import torch

        return SingleDeviceStrategy(device=torch.device("cuda", 0) if cfg.hardware.accelerator == "gpu" else "cpu")
    if name == "ddp":
        return RunDirDDPStrategy(run_dir=run_dir, process_group_backend=process_group_backend(cfg))
    if name == "tp":
        from bigtrain.parallel.tensor_parallel import TensorParallelStrategy

        world = cfg.hardware.devices * cfg.hardware.nodes
        return TensorParallelStrategy(
            run_dir=run_dir,
            fsdp=cfg.parallelism.fsdp,
            data_parallel_size=world // cfg.parallelism.tp,
            tensor_parallel_size=cfg.parallelism.tp,
            process_group_backend=process_group_backend(cfg),
        )
    if name == "pipeline":
        from bigtrain.config import sizes
        from bigtrain.parallel.pipeline import PipelineStrategy

        return PipelineStrategy(
            run_dir=run_dir,
            pp=cfg.parallelism.pp,
            schedule=cfg.parallelism.schedule,
            n_microbatches=sizes(cfg).accumulate,  # micro-batches of micro_batch_size in each dp rank's batch
            process_group_backend=process_group_backend(cfg),
        )
    raise ValueError(f"no strategy for parallelism={name}")  # validate() rejects unknown names before this
