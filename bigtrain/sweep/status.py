"""status.json in each sweep point's run directory: what the point is doing or how it ended.

Written by the sweep callback (rank zero only): `running` when the job starts, `completed` or `failed` (with the
error's one line) when it ends. A job that is killed from outside (scancel, node failure, OOM killer) never reaches
its end, so its file still says `running`; once the sweep is over the report calls such a point failed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path

from bigtrain.config.secrets import redact
from bigtrain.parallel.slurm_jobs import slurm_job_id

STATUS_FILE = "status.json"


def is_rank_zero() -> bool:
    """Rank zero of a job, whoever started it: SLURM tasks (SLURM_PROCID) or torchrun-style launchers (RANK)."""
    for var in ("RANK", "SLURM_PROCID"):
        if var in os.environ:
            return os.environ[var] == "0"
    return True


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
    tmp.write_text(json.dumps(redact(status), indent=2, default=str))  # overrides and errors may hold secrets
    tmp.replace(run_dir / STATUS_FILE)
    return status


def job_started(run_dir: Path, overrides: list[str], job_num: int) -> dict:
    previous = read_status(run_dir) or {}
    return write_status(
        run_dir,
        status="running",
        # As the user typed them: bigtrain's CLI shim quotes numeric group choices (zero='2') for Hydra.
        overrides=[re.sub(r"^([\w/.+~-]+)='(\d+)'$", r"\1=\2", o) for o in overrides],
        job_num=job_num,
        started=previous.get("started", time.time()),  # a requeued job keeps its first start
        attempts=previous.get("attempts", 0) + 1,
        host=socket.gethostname(),
        pid=os.getpid(),
        slurm_job_id=slurm_job_id(),
        error=None,
    )


def job_ended(run_dir: Path, ok: bool, error: BaseException | str | None = None) -> dict:
    ended = time.time()
    started = (read_status(run_dir) or {}).get("started", ended)
    if isinstance(error, BaseException):
        error = f"{type(error).__name__}: {error}"
    line = str(error).strip().splitlines()[0] if error is not None else None
    return write_status(
        run_dir, status="completed" if ok else "failed", ended=ended, wall_s=ended - started, error=line
    )


def process_alive(status: dict) -> bool:
    """The job's process still runs on this host (a point of a basic-launcher sweep that is still going)."""
    if status.get("host") != socket.gethostname() or not status.get("pid"):
        return False
    try:
        os.kill(int(status["pid"]), 0)
    except (OSError, ValueError):
        return False
    return True
