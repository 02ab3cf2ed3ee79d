"""Read a wandb offline run file (run-ID.wandb) back with wandb's own reader, `wandb leet inspect --json` (wandb
>= 0.2x ships it with its Go core): one JSON object per record, history items and config already decoded.

Why the CLI and not a Python API: wandb 0.31 has no Python reader for its transaction log (the old
`wandb.sdk.internal.datastore` is gone with the Python core); `leet inspect --json` is the documented way to print
the records (its --help shows `wandb leet inspect --json | grep '"type":"history"'`), and it follows wandb's own
format changes, which a hand-written parser of the LevelDB-style framing would not. wandb is pinned below 0.32 in
pyproject.toml, so a change of this JSON's shape arrives with a deliberate upgrade."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path


def _wandb_cli() -> list[str]:
    exe = shutil.which("wandb", path=str(Path(sys.executable).parent)) or shutil.which("wandb")
    return [exe] if exe else [sys.executable, "-m", "wandb"]


@lru_cache(maxsize=32)
def _records(path: str, mtime: float) -> tuple[dict, ...]:
    out = subprocess.run(
        [*_wandb_cli(), "leet", "inspect", "--json", path], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    return tuple(json.loads(line) for line in out.splitlines() if line.startswith("{"))


def records(path: Path) -> tuple[dict, ...]:
    """Every record of the file, in order, as {"num": N, "type": T, T: {...}}."""
    path = Path(path)
    return _records(str(path), path.stat().st_mtime)


def history(path: Path) -> list[dict]:
    """Every history row as {key: value}."""
    return [r["history"]["item"] for r in records(path) if r["type"] == "history"]


def summary(path: Path) -> dict:
    """The run summary as wandb keeps it: every summary update of the file applied in order."""
    out: dict = {}
    for r in records(path):
        if r["type"] == "summary":
            out.update(r["summary"].get("update", {}))
    return out


def run_record(path: Path) -> dict | None:
    """The run record: run_id, display_name, project, run_group, tags, config ({"update": {key: value}})."""
    return next((r["run"] for r in records(path) if r["type"] == "run"), None)


def run_files(run_dir: Path) -> list[Path]:
    """The run's offline files, oldest first (a resumed run adds one offline-run-* folder per attempt)."""
    return sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"))
