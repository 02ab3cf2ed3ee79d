"""A full disk, an exhausted quota, a file-size limit or a read-only file system, met while a run writes, as one
line: what happened, where, and that what was written before is intact (checkpoints, the config and the summary are
written to a temporary name and renamed into place, so a failed write leaves the previous file as it was).

The OSError often arrives wrapped (torch.save's zip writer raises a RuntimeError while handling it), so the whole
exception chain is searched."""

from __future__ import annotations

import errno
import os
from pathlib import Path

REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "a file-size limit was reached",
    errno.EROFS: "the file system is read-only",
}


def disk_cause(exc: BaseException) -> OSError | None:
    """The disk OSError in exc's chain (cause or context), if any."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in REASONS:
            return e
        todo += [e.__cause__, e.__context__]
    return None


def disk_error_line(exc: BaseException, run_dir: Path) -> str | None:
    """One line for a disk error anywhere in exc's chain, else None."""
    cause = disk_cause(exc)
    if cause is None:
        return None
    where = f" writing {cause.filename}" if cause.filename else f" writing into {run_dir}"
    from bigtrain.training.checkpointing import CHECKPOINT_DIR, checkpoint_step

    steps = sorted((run_dir / CHECKPOINT_DIR).glob("step-*.ckpt"), key=checkpoint_step)
    kept = f"the newest complete checkpoint is {steps[-1]}" if steps else "no checkpoint was written yet"
    return (
        f"{REASONS[cause.errno]} ({os.strerror(cause.errno)}){where}; what was written before is intact and {kept}; "
        f"free space (or write elsewhere) and continue with resume=auto hydra.run.dir={run_dir}"
    )
