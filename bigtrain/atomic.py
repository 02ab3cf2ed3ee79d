"""Files that a kill at any moment leaves either old or new, never half written; and the temporary files
(`NAME.tmp-PID`, built under that name, then renamed into place) whose writer is gone, which are leftovers of a kill
and are removed when the next run starts."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """`write` into a temporary file beside `path`, flush and fsync it, rename it over `path`, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


_PID_TMP = re.compile(r"\.tmp-(\d+)$")


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _stale(path: Path, min_age_s: float) -> bool:
    m = _PID_TMP.search(path.name)
    if not m or pid_alive(int(m.group(1))):
        return False
    try:
        return time.time() - path.stat().st_mtime >= min_age_s
    except OSError:
        return False


def remove_stale(folder: Path, pattern: str = "*", min_age_s: float = 0.0) -> list[str]:
    """Delete `NAME.tmp-PID` files and folders in `folder` whose process is gone (and, for folders other hosts
    may share, untouched for min_age_s: a PID is only known on its own host); their names."""
    removed = []
    if not folder.is_dir():
        return removed
    for path in sorted(folder.glob(pattern)):
        if _stale(path, min_age_s):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed
