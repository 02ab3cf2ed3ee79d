"""Stop cleanly on SIGTERM (SLURM preemption and time limits) and on the first SIGINT (Ctrl-C).

The handler only sets a flag: no collectives or I/O inside a signal handler. The ranks agree on the flag (a
one-element all-reduce, since the signal may have reached only one of them), save a checkpoint together and stop,
so the job can be requeued and resumed with resume=auto. With several ranks the all-reduce is asynchronous: started
at one optimizer-step boundary and read at the next, so no step waits on it and the ranks stop together one step
after the signal reached the first of them. A second Ctrl-C falls
through to Python's KeyboardInterrupt. Lightning's own SIGTERM handler (which forwards the signal to child ranks
and broadcasts from inside the handler) is replaced for the duration of the fit and restored afterwards; so is the
flag broadcast Lightning's training loop makes before every step, which only that handler could set.
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
        self._pending = None  # (work, tensor) of the all-reduce started at the last step boundary

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
        # Lightning broadcasts `trainer.received_sigterm` from rank zero before every training step (a blocking
        # collective). Only Lightning's own SIGTERM handler sets it, and it is replaced above, so the broadcast would
        # always carry 0: this callback's agreement covers it.
        epoch_loop = trainer.fit_loop.epoch_loop
        if hasattr(epoch_loop, "_broadcast_sigterm_tensor"):
            epoch_loop._broadcast_sigterm_tensor = lambda: None

    def _any_rank_received(self, trainer: pl.Trainer, module) -> bool:
        """Whether any rank had received a signal at the previous step boundary; starts the all-reduce that the
        next boundary reads. Every rank gets the same answer at the same step, so they stop together."""
        seen = False
        if self._pending is not None:
            work, flag = self._pending
            work.wait()
            seen = flag.item() > 0
            self._pending = None
        if not seen:
            flag = torch.tensor([1.0 if self.received else 0.0], device=module.device)
            self._pending = (torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX, async_op=True), flag)
        return seen

    def on_train_batch_end(self, trainer: pl.Trainer, module, outputs, batch, batch_idx: int) -> None:
        if not ends_accumulation(batch_idx, trainer.accumulate_grad_batches):
            return
        stop = self._any_rank_received(trainer, module) if trainer.world_size > 1 else self.received is not None
        if stop:
            self.received = self.received or "SIGTERM"  # another rank got it
            self.stopped_at = trainer.global_step
            trainer.save_checkpoint(self.checkpoint_path_for(trainer.global_step))
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, module) -> None:
        if self._pending is not None:  # every rank started it: finish it before any other collective
            self._pending[0].wait()
            self._pending = None
        trainer.fit_loop.epoch_loop.__dict__.pop("_broadcast_sigterm_tensor", None)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
