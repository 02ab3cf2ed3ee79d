"""The progress bar of a step-bounded run: Lightning's rich bar, counting optimizer steps out of trainer.max_steps.

Lightning's own bar counts micro-batches of the current epoch against a total in optimizer steps ("24/12" with
gradient accumulation 2) and describes the run as "Epoch 0/-2" (a run bounded by max_steps has max_epochs=-1)."""

from __future__ import annotations

from pytorch_lightning.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    @property
    def total_train_batches(self) -> int:
        return self.trainer.max_steps  # optimizer steps of the whole run, resumed ones included

    def _get_train_description(self, current_epoch: int) -> str:
        return "train steps"

    def on_train_epoch_start(self, trainer, module) -> None:
        super().on_train_epoch_start(trainer, module)
        self._update(self.train_progress_bar_id, trainer.global_step)  # a resumed run starts where it left off

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, module, outputs, batch, batch_idx)
        self._update(self.train_progress_bar_id, trainer.global_step)
        self.refresh()
