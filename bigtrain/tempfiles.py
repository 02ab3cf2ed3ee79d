"""Temporary files named `NAME.tmp-PID` (atomic writes build under such a name, then rename into place): the ones
whose process is gone are leftovers of a kill, and are removed when the next run starts."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

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
