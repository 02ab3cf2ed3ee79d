"""Refuse, in one line and before anything is submitted, a SLURM sweep whose GPUs per node no node can give.

hydra/launcher=slurm asks for `--gpus-per-node` from the hardware group (hardware=a100-80g-x8: 8). On a cluster
without GPUs (the local one of scripts/slurm/, a CPU partition) sbatch rejects the job and submitit ends the sweep
in a 48-line traceback. The nodes' GPUs are read from `sinfo` (its GRES column); without sinfo, or when it fails,
nothing is checked and SLURM has the last word.
"""

from __future__ import annotations

import re
import shutil
import subprocess

# One GRES entry: "gpu:8", "gpu:a100:8", "gpu:a100:8(S:0-1)", "gpu" (a count of 1).
_GRES = re.compile(r"^gpu(?::[^:(,]+)*?(?::(\d+))?(?:\(.*\))?$")


def node_gpus(gres: str) -> int:
    """GPUs one node offers, from sinfo's GRES field ("(null)", "gpu:a100:8(S:0-1),nvme:1", ...)."""
    total = 0
    for entry in re.split(r",(?![^(]*\))", gres.strip()):  # commas inside "(S:0-1)" are not separators
        match = _GRES.match(entry.strip())
        if match:
            total += int(match.group(1) or 1)
    return total


def cluster_node_gpus(partition: str | None = None) -> list[int] | None:
    """GPUs per node of the cluster (or of `partition`), or None when sinfo cannot tell."""
    sinfo = shutil.which("sinfo")
    if sinfo is None:
        return None
    cmd = [sinfo, "-h", "-N", "-o", "%G", *(["-p", partition] if partition else [])]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return [node_gpus(line) for line in lines] if proc.returncode == 0 and lines else None


def gres_problem(gpus_per_node: int | None, partition: str | None, nodes: list[int] | None) -> str | None:
    """The one-line refusal when no node offers `gpus_per_node` GPUs; None when it fits or cannot be known."""
    if not gpus_per_node or nodes is None or max(nodes) >= gpus_per_node:
        return None
    where = f"partition {partition}" if partition else "this cluster"
    most = max(nodes)
    offer = f"at most {most} GPUs per node" if most else "no GPUs"
    return (
        f"hydra/launcher=slurm asks for {gpus_per_node} GPUs per node (hydra.launcher.gpus_per_node, from "
        f"hardware.devices on a gpu hardware) but {where} offers {offer} ({len(nodes)} nodes, sinfo GRES); use "
        "hardware=cpu, fewer hardware.devices, or a GPU partition (hydra.launcher.partition=...)"
    )
