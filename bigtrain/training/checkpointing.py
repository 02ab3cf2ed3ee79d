"""Checkpoints that survive crashes: atomic writes, the newest *good* checkpoint found on resume, keep_last.

A checkpoint file is written under a temporary name in the same folder, flushed and fsynced, then renamed over
its final name (rename is atomic on POSIX), so a kill at any moment leaves either the old file or the new one,
never half of one. On resume, candidates are tried newest first; a truncated or corrupt file is reported in one
line and the previous one is used.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

import bigtrain.safe_load as safe_load
from bigtrain.atomic import atomic_write
from bigtrain.errors import BigtrainError
from bigtrain.parallel.sharded_checkpoints import COMPLETE_MARKER

CHECKPOINT_DIR = "checkpoints"
_STEP = re.compile(r"step-(\d+)\.ckpt$")


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        atomic_write(Path(path), lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict[str, Any]:
        # bigtrain checkpoints hold only tensors and plain containers: load them without unpickling code.
        return safe_load.load(path, map_location=map_location or "cpu")


class KeepLastCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, keeping the newest keep_last step checkpoints of the folder, including those
    of an earlier (killed, then resumed) process that Lightning's own top-k bookkeeping does not know about."""

    def __init__(self, keep_last: int, **kwargs):
        super().__init__(save_top_k=-1, **kwargs)
        self.keep_last = keep_last

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        if trainer.global_step > 0:  # resumed: that step's checkpoint exists (maybe another layout's folder at its
            self._last_global_step_saved = trainer.global_step  # name), so never write it again

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            steps = sorted(Path(filepath).parent.glob("step-*.ckpt"), key=checkpoint_step, reverse=True)
            for old in steps[self.keep_last :]:
                old.unlink(missing_ok=True) if old.is_file() else shutil.rmtree(old, ignore_errors=True)


def checkpoint_callback(run_dir: Path, every_n_steps: int, keep_last: int) -> ModelCheckpoint:
    """step-NNNNNNN.ckpt every n steps and at the end, the newest keep_last kept, last.ckpt linking the newest."""
    return KeepLastCheckpoint(
        keep_last,
        dirpath=run_dir / CHECKPOINT_DIR,
        filename="step-{step:07d}",
        every_n_train_steps=every_n_steps,
        save_last="link",
        auto_insert_metric_name=False,
        save_on_train_epoch_end=True,
    )


def checkpoint_step(path: Path) -> int:
    m = _STEP.search(path.name)
    return int(m.group(1)) if m else -1


def _newest_first(folder: Path) -> list[Path]:
    """step-*.ckpt by step, newest first, with last.ckpt put first when it is a file of its own (a requeue or
    signal saves there) newer than every step checkpoint; a last.ckpt link adds nothing."""
    if not folder.is_dir():
        return []
    steps = sorted(folder.glob("step-*.ckpt"), key=checkpoint_step, reverse=True)
    last = folder / "last.ckpt"
    if last.exists() and not last.is_symlink():
        if not steps or last.stat().st_mtime >= max(p.stat().st_mtime for p in steps):
            return [last, *steps]
        return [*steps, last]
    return steps


def check_loadable(path: Path) -> str | None:
    """None when `path` is a complete checkpoint, else a one-phrase reason. A checkpoint that holds more than
    tensors and plain data is not a damaged one to skip but a refused one: UnsafeCheckpointError."""
    if path.is_dir():  # sharded checkpoints are folders that every rank writes its part of
        if not (path / COMPLETE_MARKER).is_file():
            return f"an incomplete sharded checkpoint (no {COMPLETE_MARKER} file: its save was cut short)"
        _allow_deepspeed_globals(path)
        try:
            safe_load.verify_folder(path)  # here, on one process, before any rank's strategy reads a part of it
        except safe_load.UnreadableCheckpointError as e:
            return f"unreadable ({e})"
        return None
    try:
        ckpt = safe_load.load(path)
    except safe_load.UnsafeCheckpointError:
        raise
    except Exception as e:  # a truncated zip, a bad pickle, an unreadable file: all mean "not this one"
        return f"unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "global_step" not in ckpt:
        return "not a bigtrain/Lightning checkpoint (no state_dict or global_step)"
    return None


def _allow_deepspeed_globals(folder: Path) -> None:
    if (folder / "latest").is_file():  # only a DeepSpeed folder needs (and may import) DeepSpeed's types
        from bigtrain.parallel.safe_globals import allow_deepspeed_globals

        allow_deepspeed_globals()


def find_resume_checkpoint(resume: str | None, run_dir: Path, log=print) -> Path | None:
    """The checkpoint to resume from.

    resume=None: none. resume=auto: the newest good step-*.ckpt in run_dir/checkpoints, or None for a fresh run.
    resume=PATH: that checkpoint file, or the newest good one in that run directory; it must exist."""
    if resume is None:
        return None
    if resume == "auto":
        folder = run_dir / CHECKPOINT_DIR
    else:
        target = Path(resume).expanduser()
        if not target.exists():
            raise BigtrainError(
                f"resume={resume} does not exist; give a checkpoint file, a run directory, or resume=auto"
            )
        if target.is_file() or target.suffix == ".ckpt":  # a file, or a sharded checkpoint's folder
            reason = check_loadable(target)
            if reason:
                raise BigtrainError(f"resume={resume} cannot be used: {reason}")
            return target
        folder = target / CHECKPOINT_DIR if (target / CHECKPOINT_DIR).is_dir() else target
    candidates = _newest_first(folder)
    for candidate in candidates:
        reason = check_loadable(candidate)
        if reason is None:
            return candidate
        log(f"bigtrain: checkpoint {candidate} is {reason}; trying the previous one")
    if resume != "auto":
        raise BigtrainError(f"resume={resume}: no usable step-*.ckpt checkpoint in {folder}")
    return None
