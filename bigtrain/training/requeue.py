"""Checkpoint and requeue on SLURM's warning signal (time limit near, or preemption).

submitit's sbatch script asks SLURM for `--signal=USR2@signal_delay_s` (hydra.launcher.signal_delay_s), sent to
every task. A signal arrives in the middle of a step, and at different moments on different ranks, so the handler
only raises a flag; after each optimizer step the ranks agree on it (a max-reduce of one number), all save
run_dir/checkpoints/last.ckpt together, rank zero runs `scontrol requeue`, and every task exits at once without
a result.
SLURM restarts the same job (same job id, SLURM_RESTART_COUNT + 1); submitit re-runs the same sweep point in the
same run directory, which resumes from that checkpoint (tasks/train.py) and continues the same wandb run.

Why not submitit's own handler or Lightning's auto-requeue: submitit's requeues without a training checkpoint, and
Lightning's saves inside the signal handler, where ranks interrupted at different points deadlock in the save's
collectives (and it does not install itself when submitit already holds the signal).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from bigtrain.config.layout import ends_accumulation
from bigtrain.parallel.slurm_jobs import slurm_job_id


def requeue_signal() -> signal.Signals:
    """The signal submitit asks SLURM for (SUBMITIT_PREEMPT_SIGNAL, default USR2)."""
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))


# Exit status of a task that checkpointed and requeued its job (a SLURM requeue ignores it).
EXIT_REQUEUED = 3


class RequeueOnSignal(pl.Callback):
    def __init__(self, run_dir: Path) -> None:
        self.checkpoint_path = Path(run_dir) / "checkpoints" / "last.ckpt"
        self.signalled = False
        self._previous = None

    def _on_signal(self, signum, frame) -> None:
        self.signalled = True

    def on_train_start(self, trainer, module) -> None:
        self._previous = signal.signal(requeue_signal(), self._on_signal)

    def on_train_end(self, trainer, module) -> None:
        if self._previous is not None:
            signal.signal(requeue_signal(), self._previous)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        if not ends_accumulation(batch_idx, trainer.accumulate_grad_batches):
            return  # only at optimizer-step boundaries: a checkpoint mid-accumulation would replay micro-batches
        flag = trainer.strategy.reduce(torch.tensor(float(self.signalled), device=module.device), reduce_op="max")
        if float(flag) == 0.0:
            return
        # Lightning logs this step's metrics only after the batch-end hooks; log them now, or the step that the
        # checkpoint ends on would be missing from metrics.csv and wandb (the resumed run starts after it).
        if hasattr(trainer, "_logger_connector"):
            trainer._logger_connector.update_train_step_metrics()
        trainer.save_checkpoint(self.checkpoint_path)  # every rank: sharded strategies save their own shards
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.save()
                if type(logger).__name__ == "WandbLogger" and logger._experiment is not None:
                    logger.experiment.finish()  # flush the wandb run: the requeued job continues it by id
        trainer.strategy.barrier("requeue")  # the last collective: after it, ranks leave one by one
        if trainer.is_global_zero:
            job = slurm_job_id()
            print(
                f"bigtrain: requeue signal: checkpoint at step {trainer.global_step} -> {self.checkpoint_path}; "
                f"requeueing SLURM job {job}",
                flush=True,
            )
            subprocess.run(["scontrol", "requeue", job], check=True, timeout=60)
        # Leave now, without unwinding: SLURM is already ending this instance, and an orderly exit would let a
        # teardown error (a peer rank already gone) reach Hydra and submitit, which would record this point as
        # finished with an error while SLURM runs it again.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_REQUEUED)
