"""Sharded checkpoints say when they are whole: rank zero writes a COMPLETE file once every rank's part is saved.

A sharded checkpoint (DeepSpeed, FSDP sharded, tensor parallel, pipeline) is a folder that every rank writes its own
part of. A kill during the save leaves a folder that looks like a checkpoint but cannot be loaded; DeepSpeed even
writes its `latest` tag on rank zero before the other ranks are done. So after the save every rank meets at a
barrier and only then does rank zero write COMPLETE (atomically); resume accepts a folder only with it
(training/checkpointing.py: check_loadable) and otherwise falls back to the previous checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from bigtrain.atomic import atomic_write

# Written into a sharded checkpoint's folder by rank zero after every rank saved its part; a folder without it is
# a save that was cut short (training/checkpointing.py: check_loadable refuses it).
COMPLETE_MARKER = "COMPLETE"


def write_complete_marker(folder: Path, world_size: int) -> None:
    atomic_write(folder / COMPLETE_MARKER, lambda f: f.write(f"all {world_size} ranks saved their part\n".encode()))


def clear_complete_marker(folder: Path) -> None:
    if folder.is_dir():
        (folder / COMPLETE_MARKER).unlink(missing_ok=True)


def before_sharded_save(strategy, filepath) -> None:
    """A re-save over an existing folder (last.ckpt on preemption) is not complete until it is done again."""
    if strategy.is_global_zero:
        clear_complete_marker(Path(filepath))


def after_sharded_save(strategy, filepath) -> None:
    strategy.barrier("sharded checkpoint saved")  # every rank's part is on disk past this point
    if strategy.is_global_zero and Path(filepath).is_dir():
        write_complete_marker(Path(filepath), world_size=strategy.world_size)


class MarksCompleteCheckpoints:
    """Put first in a sharded strategy's bases: its save_checkpoint then ends with the COMPLETE marker, and its
    load_checkpoint reads every file weights-only (DeepSpeed's engine and torch DCP load through their own
    torch.load(weights_only=False) / pickle.load, which bigtrain.safe_load.weights_only_loads reroutes)."""

    def load_checkpoint(self, checkpoint_path, *args, **kwargs):
        from pytorch_lightning.strategies import DeepSpeedStrategy

        from bigtrain.safe_load import weights_only_loads

        if isinstance(self, DeepSpeedStrategy):
            from bigtrain.parallel.safe_globals import allow_deepspeed_globals

            allow_deepspeed_globals()
        with weights_only_loads():
            return super().load_checkpoint(checkpoint_path, *args, **kwargs)

    def save_checkpoint(self, checkpoint, filepath, storage_options=None) -> None:
        before_sharded_save(self, filepath)
        super().save_checkpoint(checkpoint, filepath, storage_options)
        after_sharded_save(self, filepath)
