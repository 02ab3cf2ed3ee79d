"""Asking SLURM about jobs, and the job-level actions bigtrain takes inside one (requeue, ending a broken step).

Plain subprocess calls to SLURM's own tools (scontrol, squeue, scancel): no SLURM Python bindings needed.
"""

from __future__ import annotations

import os
import shutil
import subprocess


def slurm_job_id() -> str | None:
    """The id `scontrol`/`squeue` know this job by: ARRAY_TASK form for array jobs (submitit submits arrays)."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


ALIVE_SLURM_STATES = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING")


def slurm_state(job_id: str) -> str | None:
    """SLURM's state for a job (RUNNING, CANCELLED, ...) or None where SLURM cannot say (no squeue, or the job ended
    longer ago than the controller keeps finished jobs: MinJobAge)."""
    if not job_id or shutil.which("squeue") is None:
        return None
    try:
        out = subprocess.run(
            ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    states = out.stdout.split()
    return states[0] if out.returncode == 0 and states else None


def end_job_step() -> None:
    """Cancel this job step (every task of it). A multi-task job whose task failed would otherwise wait forever:
    the other ranks block in a collective for a rank that is gone, and srun waits for them."""
    job, step = os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_STEP_ID")
    if job and step and shutil.which("scancel"):
        subprocess.run(["scancel", f"{job}.{step}"], timeout=30, check=False)
