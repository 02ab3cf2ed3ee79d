"""A validation due at the step a run resumes from is run before training goes on.

Step checkpoints are written at the end of a training batch, before Lightning's validation of that same step; a
run killed between the two resumes from that checkpoint, and Lightning, restarting after the batch, skips the
validation it believes already ran. Its row would be missing from val_history, metrics.csv and the summary (an
uninterrupted run has it). This callback runs it at the start of the resumed run when the history lacks it.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from bigtrain.training.callbacks import _log


class ValidateDueOnResume(pl.Callback):
    def __init__(self, val_check_interval: int) -> None:
        self.every = val_check_interval
        self.ran_at: int | None = None  # the step it validated at, for tests and logs

    def on_train_start(self, trainer: pl.Trainer, module) -> None:
        step = trainer.global_step
        if step == 0 or trainer.limit_val_batches == 0 or step % self.every != 0 or step >= trainer.max_steps:
            return  # fresh run, no validation, not a validation step, or the final one (ValidationBookends runs it)
        if not hasattr(module, "evaluate") or any(s == step for s, _ in module.val_history):
            return
        loss = module.evaluate(trainer.datamodule.val_dataloader())  # every rank: it averages across them
        module.val_history.append((step, loss))
        module.val_history.sort(key=lambda item: item[0])
        # The row where Lightning's loop logs this validation: at its count of batches that stepped, one less than
        # global_step at that moment (an uninterrupted run's metrics.csv has the step-6 validation in row 5).
        _log(trainer, {"val/loss": loss, "val/ppl": float(torch.exp(torch.tensor(loss)))}, step=step - 1)
        self.ran_at = step
