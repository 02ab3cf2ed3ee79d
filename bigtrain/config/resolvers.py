"""OmegaConf resolvers for values derived across groups in YAML (conf/hydra/launcher/slurm.yaml reads them)."""

from __future__ import annotations

import os
from datetime import datetime

from omegaconf import OmegaConf

# Share of a node's host memory a SLURM job asks for: the rest stays for the OS and SLURM's daemons (slurmd refuses
# a request above the node's RealMemory, which is itself below the physical total).
SLURM_MEMORY_SHARE = 0.8


def _gpus_per_node(accelerator: str, devices: int) -> int | None:
    return int(devices) if accelerator == "gpu" else None


def _slurm_mem_gb(host_memory_gib: float) -> int:
    return max(int(float(host_memory_gib) * SLURM_MEMORY_SHARE), 1)


def _experiment(recipe: str | None, model: str) -> str:
    """A SLURM job name: the recipe when one is used, else bigtrain-<model>."""
    return str(recipe) if recipe not in (None, "None", "null") else f"bigtrain-{model}"


def _run_stamp() -> str:
    """The last part of a single run's directory: the time, or the SLURM job under `srun` with several tasks, where
    every task composes the config itself and clocks a second apart would give each rank its own directory."""
    if os.environ.get("SLURM_JOB_ID") and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return f"slurm-{os.environ['SLURM_JOB_ID']}-{os.environ.get('SLURM_STEP_ID', '0')}"
    return datetime.now().strftime("%H-%M-%S")


def register_resolvers() -> None:
    for name, fn in (
        ("bigtrain.gpus_per_node", _gpus_per_node),
        ("bigtrain.slurm_mem_gb", _slurm_mem_gb),
        ("bigtrain.experiment", _experiment),
        ("bigtrain.run_stamp", _run_stamp),
    ):
        if not OmegaConf.has_resolver(name):
            # Cached per config, like Hydra's ${now:}: the run directory must not change between two reads.
            OmegaConf.register_new_resolver(name, fn, use_cache=name == "bigtrain.run_stamp")
