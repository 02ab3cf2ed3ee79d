"""Running as SLURM tasks: Lightning's SLURMEnvironment supplies the ranks.

Under `srun` (hydra/launcher=slurm submits through submitit, whose sbatch script runs one task per device), SLURM
has already started every process: each task runs bigtrain's job function itself and Lightning reads its rank from
SLURM_PROCID / SLURM_LOCALID / SLURM_NODEID and the world from SLURM_NTASKS. So bigtrain spawns no local ranks
there (see launcher.py), and rank zero alone prepares data and writes the run directory's files.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def launched_by_slurm() -> bool:
    """True inside a SLURM job step that Lightning will treat as its cluster (not an interactive allocation)."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment.detect()


def slurm_global_rank() -> int:
    return int(os.environ.get("SLURM_PROCID", "0")) if launched_by_slurm() else 0


def cluster_plugins() -> list:
    """Lightning's SLURM environment with its own auto-requeue off: bigtrain's RequeueOnSignal callback handles the
    preemption signal instead, at an optimizer-step boundary where every rank can checkpoint together."""
    if not launched_by_slurm():
        return []
    from lightning_fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)]


def config_ready_marker(run_dir: Path) -> Path:
    """A file rank zero writes after recording this attempt's config. The other tasks wait for it rather than for
    config.yaml, which a requeued attempt finds already there from the attempt before (with the old resume point)."""
    job = os.environ.get("SLURM_JOB_ID", "local")
    attempt = os.environ.get("SLURM_RESTART_COUNT", "0") or "0"
    return Path(run_dir) / f".config-ready-{job}-{attempt}"


def requeued_checkpoint(run_dir: Path) -> Path | None:
    """run_dir/checkpoints/last.ckpt when this SLURM job is a requeued attempt (SLURM_RESTART_COUNT > 0)."""
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0 and last.is_file():
        return last
    return None


def wait_for_file(path: Path, timeout_s: float, what: str) -> Path:
    """Block until rank zero has written `path` (the other SLURM tasks read the config it recorded)."""
    from bigtrain.errors import BigtrainError

    deadline = time.monotonic() + timeout_s
    while not path.is_file():
        if time.monotonic() > deadline:
            raise BigtrainError(f"waited {timeout_s:.0f} s for rank 0 to write {path} ({what}); see rank 0's log")
        time.sleep(0.2)
    return path
