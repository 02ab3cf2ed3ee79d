"""Stop cleanly on SIGTERM (SLURM preemption and time limits) and on the first SIGINT (Ctrl-C).

The handler only sets a flag: no collectives or I/O inside a signal handler. At the next optimizer-step boundary
the ranks agree on the flag (a one-element all-reduce, since the signal may have reached only one of them), save
a checkpoint together and stop, so the job can be requeued and resumed with resume=auto. A second Ctrl-C falls
through to Python's KeyboardInterrupt. Lightning's own SIGTERM handler (which forwards the signal to child ranks
and broadcasts from inside the handler) is replaced for the duration of the fit and restored afterwards.
"""

from __future__ import annotations

import signal

import pytorch_lightning as pl
import torch

from bigtrain.config.layout import ends_accumulation


class GracefulStop(pl.Callback):
    def __init__(self, checkpoint_path_for) -> None:
        self.checkpoint_path_for = checkpoint_path_for  # step -> Path of the checkpoint to write
        self.received: str | None = None
        self.stopped_at: int | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGINT and self.received is not None:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # the second press interrupts now
            raise KeyboardInterrupt
        self.received = self.received or name

    def on_train_start(self, trainer: pl.Trainer, module) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handler)

    def on_train_batch_end(self, trainer: pl.Trainer, module, outputs, batch, batch_idx: int) -> None:
        if not ends_accumulation(batch_idx, trainer.accumulate_grad_batches):
            return
        flag = torch.tensor(1.0 if self.received else 0.0, device=module.device)
        if trainer.world_size > 1:
            flag = trainer.strategy.reduce(flag, reduce_op="max")
        if flag.item() > 0:
            self.received = self.received or "SIGTERM"  # another rank got it
            self.stopped_at = trainer.global_step
            trainer.save_checkpoint(self.checkpoint_path_for(trainer.global_step))
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, module) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
