"""status.json in each sweep point's run directory: what the point is doing or how it ended.

Written by the sweep callback (rank zero only): `running` when the job starts, `completed` or `failed` (with the
error's one line) when it ends. A job that is killed from outside (scancel, node failure, OOM killer) never reaches
its end, so its file still says `running`; once the sweep is over the report calls such a point failed.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

STATUS_FILE = "status.json"


def is_rank_zero() -> bool:
    """Rank zero of a job, whoever started it: SLURM tasks (SLURM_PROCID) or torchrun-style launchers (RANK)."""
    for var in ("RANK", "SLURM_PROCID"):
        if var in os.environ:
            return os.environ[var] == "0"
    return True


def slurm_job_id() -> str | None:
    """The id `scontrol`/`sacct` know this job by: ARRAY_TASK form for array jobs (submitit submits arrays)."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def read_status(run_dir: Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_status(run_dir: Path, **fields) -> dict:
    """Merge `fields` into run_dir/status.json (atomic replace, so a reader never sees half a file)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    status = {**(read_status(run_dir) or {}), **fields, "updated": time.time()}
    tmp = run_dir / f".{STATUS_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(status, indent=2, default=str))
    tmp.replace(run_dir / STATUS_FILE)
    return status


def job_started(run_dir: Path, overrides: list[str], job_num: int) -> dict:
    previous = read_status(run_dir) or {}
    return write_status(
        run_dir,
        status="running",
        overrides=overrides,
        job_num=job_num,
        started=previous.get("started", time.time()),  # a requeued job keeps its first start
        attempts=previous.get("attempts", 0) + 1,
        host=socket.gethostname(),
        slurm_job_id=slurm_job_id(),
        error=None,
    )


def job_ended(run_dir: Path, ok: bool, error: BaseException | None = None) -> dict:
    ended = time.time()
    started = (read_status(run_dir) or {}).get("started", ended)
    line = f"{type(error).__name__}: {error}".splitlines()[0] if error is not None else None
    return write_status(
        run_dir, status="completed" if ok else "failed", ended=ended, wall_s=ended - started, error=line
    )


ALIVE_SLURM_STATES = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING")


def slurm_state(job_id: str) -> str | None:
    """SLURM's state for a job (RUNNING, CANCELLED, ...) or None where SLURM cannot say (no squeue, job forgotten)."""
    import shutil
    import subprocess

    if not job_id or shutil.which("squeue") is None:
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    states = out.stdout.split()
    return states[0] if out.returncode == 0 and states else None
