"""Callbacks: validation loss at the run's two ends, the run's throughput, peak memory (the per-interval step-time
breakdown is in step_time.py)."""

from __future__ import annotations

import resource
import sys
import time

import pytorch_lightning as pl
import torch

from bigtrain.config.layout import ends_accumulation


def _log(trainer: pl.Trainer, metrics: dict, step: int) -> None:
    for logger in trainer.loggers:  # loggers write on rank zero only
        logger.log_metrics(metrics, step=step)


class ValidationBookends(pl.Callback):
    """Validation loss before the first step and after the last, so every run reports where it started and ended
    (Lightning's own loop validates every val_check_interval steps in between)."""

    def __init__(self) -> None:
        self.first: tuple[int, float] | None = None
        self.final: tuple[int, float] | None = None

    def _evaluate(self, trainer: pl.Trainer, module) -> float:
        return module.evaluate(trainer.datamodule.val_dataloader())

    def on_train_start(self, trainer: pl.Trainer, module) -> None:
        if trainer.global_step > 0 and module.val_history:  # resumed: the history came with the checkpoint
            self.first = module.val_history[0]
        if trainer.global_step == 0 and trainer.limit_val_batches != 0:
            loss = self._evaluate(trainer, module)
            self.first = (0, loss)
            module.val_history.append(self.first)
            _log(trainer, {"val/loss": loss, "val/ppl": float(torch.exp(torch.tensor(loss)))}, step=0)

    def on_train_end(self, trainer: pl.Trainer, module) -> None:
        if trainer.limit_val_batches == 0 or trainer.global_step < trainer.max_steps:
            return  # no validation configured, or stopped early by a signal: leave quickly
        if module.val_history and module.val_history[-1][0] == trainer.global_step:
            self.final = module.val_history[-1]
            return
        loss = self._evaluate(trainer, module)
        self.final = (trainer.global_step, loss)
        module.val_history.append(self.final)
        _log(trainer, {"val/loss": loss, "val/ppl": float(torch.exp(torch.tensor(loss)))}, step=trainer.global_step)


class Throughput(pl.Callback):
    """The run's training tokens/s across all ranks for summary.json: every optimizer step timed (validation
    excluded), the mean with the first step (graph warm-up, allocator growth) left out, and the median step.

    Lightning's `ThroughputMonitor` serves the rolling rates, and its `Throughput` utility computes the logged
    `perf/tokens_per_s`, TFLOP/s and MFU in `step_time.StepTimeBreakdown`. What it lacks, and this keeps: whole-run
    figures rather than a window, the median step (robust to other processes taking the cores for a moment), and
    timing per optimizer step rather than per micro-batch without a CUDA synchronisation on every batch."""

    def __init__(self, tokens_per_step: int) -> None:
        self.tokens_per_step = tokens_per_step
        self.step_times: list[float] = []
        self._last: float | None = None
        self._paused_at: float | None = None
        self.first_step_unix: float | None = None  # wall clock at the end of this process's first step

    def on_train_start(self, trainer, module) -> None:
        self._last = time.perf_counter()

    def on_validation_start(self, trainer, module) -> None:
        self._paused_at = time.perf_counter()

    def on_validation_end(self, trainer, module) -> None:
        if self._paused_at is not None and self._last is not None:
            self._last += time.perf_counter() - self._paused_at
        self._paused_at = None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        if not ends_accumulation(batch_idx, trainer.accumulate_grad_batches):
            return
        now = time.perf_counter()
        if self.first_step_unix is None:
            self.first_step_unix = time.time()
        if self._last is not None:
            self.step_times.append(now - self._last)
        self._last = now

    @property
    def tokens_per_s(self) -> float:
        times = self.step_times[1:] or self.step_times
        return self.tokens_per_step * len(times) / sum(times) if times else 0.0

    @property
    def median_tokens_per_s(self) -> float:
        """tokens/s of the median step: robust to other processes stealing the cores for a moment."""
        times = sorted(self.step_times[1:] or self.step_times)
        if not times:
            return 0.0
        mid = len(times) // 2
        return self.tokens_per_step / (times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak device memory of this process: allocated CUDA memory on GPU, resident set size on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB
