"""Where a training step's time goes: data wait, forward, backward, optimizer step (and, under DDP, the part of the
gradient all-reduce that backward waited for), with tokens/s, model TFLOP/s per device, MFU / HFU against the
hardware's datasheet peak, memory, and the learning rate. Logged every `trainer.log_every_n_steps` to every logger
(`time/*`, `perf/*`, `memory/*`, `train/lr`) and summarised in summary.json.

How it is timed: Lightning already wraps each region of its loop in a profiler action
(`[_TrainingEpochLoop].train_dataloader_next`, `[Strategy]X.batch_to_device`, `[Strategy]X.training_step`,
`[Strategy]X.backward`, `[LightningModule]M.optimizer_step` / `optimizer_zero_grad` / `lr_scheduler_step`);
`StepTimeProfiler` is a Lightning `Profiler` that adds up the exclusive time of those actions per step (the optimizer
step's own time is what remains of it after the forward and backward it runs inside its closure: clipping, the
gradient-norm and non-finite checks, the update). Whatever falls outside them (Lightning's loop, callbacks,
`self.log` bookkeeping, writing logs and checkpoints) is `time/other_ms`; validation is left out of the step. Under manual optimization
(the pipeline module) the whole schedule is one training_step and counts as forward.

On GPU the regions end with `torch.cuda.synchronize()` so kernel time lands in the region that launched it: only
on the steps that are logged, so the other steps keep their host/device overlap; on CPU every step is timed.

Rolling tokens/s, FLOP/s per device and MFU come from Lightning's `Throughput` utility (the core of its
`ThroughputMonitor`, which itself times micro-batches, synchronises CUDA on every batch and knows no CPU peak).
"""

from __future__ import annotations

import os
import resource
import sys
import time

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.throughput import Throughput
from pytorch_lightning.profilers import Profiler

PARTS = ("data", "forward", "backward", "optimizer")
# Lightning's profiler action names (suffixes after the class name) -> the part of the step they time.
_ACTIONS = {
    "train_dataloader_next": "data",
    "batch_to_device": "data",
    "training_step": "forward",
    "backward": "backward",
    "optimizer_step": "optimizer",
    "optimizer_zero_grad": "optimizer",
    "lr_scheduler_step": "optimizer",
}
MIB = 2**20


def _part_of(action: str) -> str | None:
    if action.startswith(("[_TrainingEpochLoop]", "[Strategy]", "[LightningModule]")):
        return _ACTIONS.get(action.rsplit(".", 1)[-1])
    return None


class StepTimeProfiler(Profiler):
    """Exclusive seconds per part of the current step, from the actions Lightning's loop already profiles."""

    def __init__(self) -> None:
        super().__init__()
        self.parts = dict.fromkeys(PARTS, 0.0)
        self.sync = None  # torch.cuda.synchronize while a GPU step is being measured, else None
        self.paused = False  # during validation: its batch transfers are not the training step's data wait
        self._parts_cache: dict[str, str | None] = {}
        self._stack: list[list] = []  # [part, started, seconds of tracked actions nested inside]

    def start(self, action_name: str) -> None:
        part = self._parts_cache.get(action_name, 0)
        if part == 0:
            part = self._parts_cache[action_name] = _part_of(action_name)
        if part is None or self.paused:
            return
        if self.sync is not None:
            self.sync()
        self._stack.append([part, time.perf_counter(), 0.0])

    def stop(self, action_name: str) -> None:
        if self._parts_cache.get(action_name) is None or not self._stack or self.paused:
            return
        if self.sync is not None:
            self.sync()
        part, started, nested = self._stack.pop()
        took = time.perf_counter() - started
        self.parts[part] += took - nested
        if self._stack:
            self._stack[-1][2] += took

    def take(self) -> dict[str, float]:
        """This step's seconds per part, and start the next step from zero."""
        parts, self.parts = self.parts, dict.fromkeys(PARTS, 0.0)
        return parts


def memory_now(device: torch.device) -> dict[str, float]:
    """MiB in use now: allocated / reserved / peak allocated on GPU; resident set size and its peak on CPU."""
    if device.type == "cuda":
        return {
            "memory/allocated_mib": torch.cuda.memory_allocated(device) / MIB,
            "memory/reserved_mib": torch.cuda.memory_reserved(device) / MIB,
            "memory/peak_mib": torch.cuda.max_memory_allocated(device) / MIB,
        }
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    out = {"memory/peak_mib": peak / MIB}
    try:
        with open("/proc/self/statm") as f:
            out["memory/rss_mib"] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB
    except OSError:  # not Linux: the peak is all there is
        pass
    return out


def ddp_collectives_wait_ms(strategy) -> float | None:
    """Mean time per backward that DDP's gradient all-reduce did not overlap with compute, from DDP's own runtime
    statistics (sampled by its reducer on iterations 1-10 and every 100th). None where the strategy exposes none."""
    model = getattr(strategy, "model", None)
    logging_data = getattr(model, "_get_ddp_logging_data", None)
    if logging_data is None:
        return None
    stats = logging_data()
    comm, overlap = stats.get("avg_backward_comm_time"), stats.get("avg_backward_compute_comm_overlap_time")
    if not comm:
        return None
    return max(comm - (overlap or 0), 0) / 1e6  # ns -> ms


class StepTimeBreakdown(pl.Callback):
    """Logs the step-time breakdown every log_every_n_steps and keeps the run's means for summary.json.

    `flops_per_token` / `hardware_flops_per_token` and `planned_memory_bytes` come from the run's plan;
    `peak_flops` is the datasheet peak per device at the training precision, read from `peak_key`."""

    def __init__(
        self,
        profiler: StepTimeProfiler,
        tokens_per_step: int,
        flops_per_token: float,
        hardware_flops_per_token: float,
        peak_flops: float,
        peak_key: str,
        planned_memory_bytes: int | None = None,
    ) -> None:
        self.profiler = profiler
        self.tokens_per_step = tokens_per_step
        self.flops_per_token = flops_per_token
        self.hardware_flops_per_token = hardware_flops_per_token
        self.peak_flops = peak_flops
        self.peak_key = peak_key
        self.planned_memory_bytes = planned_memory_bytes
        self.steps: list[dict[str, float]] = []  # per measured step: seconds per part and of the whole step
        self.mfu_error: str | None = None
        self.collectives_wait_ms: float | None = None  # DDP's latest running mean, where the strategy exposes it
        self._last_end: float | None = None
        self._paused: float = 0.0
        self._paused_at: float | None = None
        self._train_time = 0.0
        self._window: list[dict[str, float]] = []
        self._throughput: Throughput | None = None
        self._measure_every = 1

    # --- when a step is measured
    def on_train_start(self, trainer, module) -> None:
        self._throughput = Throughput(
            available_flops=self.peak_flops or None,
            world_size=trainer.world_size,
            window_size=max(trainer.log_every_n_steps, 1) + 1,
        )
        # Its rates need a full window: start it at zero so the first logged row (after log_every_n_steps) has one.
        self._throughput.update(time=0.0, batches=0, samples=0, lengths=0, flops=0)
        self._measure_every = trainer.log_every_n_steps if module.device.type == "cuda" else 1
        self._arm(trainer, module)
        self._last_end = time.perf_counter()

    def _arm(self, trainer, module) -> None:
        """On GPU, synchronise inside the regions of the next step only when that step will be logged."""
        measured = (trainer.global_step + 1) % max(self._measure_every, 1) == 0
        self.profiler.sync = torch.cuda.synchronize if module.device.type == "cuda" and measured else None

    def on_validation_start(self, trainer, module) -> None:
        self._paused_at = time.perf_counter()
        self.profiler.paused = True

    def on_validation_end(self, trainer, module) -> None:
        self.profiler.paused = False
        if self._paused_at is not None:
            self._paused += time.perf_counter() - self._paused_at
            self._paused_at = None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches != 0 or self._last_end is None:
            return  # parts of an accumulating step add up until its optimizer step
        now = time.perf_counter()
        step_s = now - self._last_end - self._paused
        self._last_end, self._paused = now, 0.0
        parts = self.profiler.take()
        measured = trainer.global_step % max(self._measure_every, 1) == 0
        if measured:
            self._train_time += step_s
            record = {**parts, "step": step_s}
            self.steps.append(record)
            self._window.append(record)
            world = trainer.world_size
            self._throughput.update(
                time=self._train_time,
                batches=len(self.steps),
                samples=len(self.steps) * self.tokens_per_step // world,  # tokens stand in for samples: same ratios
                lengths=len(self.steps) * self.tokens_per_step // world,
                flops=int(self.tokens_per_step * self.flops_per_token / world),
            )
        if trainer.global_step % trainer.log_every_n_steps == 0 and self._window:
            self._log(trainer, module)
        self._arm(trainer, module)

    # --- what is logged
    def _log(self, trainer, module) -> None:
        n = len(self._window)
        mean = {k: sum(r[k] for r in self._window) / n for k in (*PARTS, "step")}
        self._window = []
        metrics = {f"time/{k}_ms": mean[k] * 1e3 for k in PARTS}
        metrics["time/step_ms"] = mean["step"] * 1e3
        metrics["time/other_ms"] = max(mean["step"] - sum(mean[k] for k in PARTS), 0.0) * 1e3
        wait = ddp_collectives_wait_ms(trainer.strategy)
        if wait is not None:
            metrics["time/collectives_wait_ms"] = self.collectives_wait_ms = wait  # inside backward, not a part
        if trainer.optimizers:  # the schedule's rate now (first parameter group: all groups share it)
            metrics["train/lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        metrics.update(self._flops_metrics(self._throughput.compute(), trainer.world_size))
        metrics.update(memory_now(module.device))
        if self.planned_memory_bytes:
            metrics["memory/planned_mib"] = self.planned_memory_bytes / MIB
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

    def _flops_metrics(self, computed: dict, world: int) -> dict[str, float]:
        flops_per_s = computed.get("device/flops_per_sec")
        if flops_per_s is None:
            return {}
        out = {
            "perf/tokens_per_s": computed["device/items_per_sec"] * world,
            "perf/tflops_per_device": flops_per_s / 1e12,
        }
        mfu = computed.get("device/mfu")
        if mfu is not None:
            mfu = self._checked(mfu, flops_per_s)
        if mfu is not None:
            out["perf/mfu"] = mfu
            out["perf/hfu"] = mfu * self.hardware_flops_per_token / self.flops_per_token
        return out

    def _checked(self, mfu: float, flops_per_s: float) -> float | None:
        """An MFU above 100% is impossible: the datasheet peak in the config is wrong. Say which key, once, and
        log no MFU from then on rather than a number nobody should believe."""
        if mfu <= 1.0 and self.mfu_error is None:
            return mfu
        if self.mfu_error is None:
            self.mfu_error = (
                f"measured {flops_per_s / 1e12:.3g} model TFLOP/s per device exceeds {self.peak_key}="
                f"{self.peak_flops / 1e12:g} (MFU {mfu:.0%}); set {self.peak_key} to this hardware's datasheet peak"
            )
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                if torch.distributed.get_rank() != 0:
                    return None
            print(f"bigtrain: error: {self.mfu_error}", file=sys.stderr)
        return None

    # --- the run's means, for summary.json
    def summary(self) -> dict:
        """Means over the measured steps after the first (graph warm-up, allocator growth)."""
        steps = self.steps[1:] or self.steps
        if not steps:
            return {}
        n = len(steps)
        mean = {k: sum(r[k] for r in steps) / n for k in (*PARTS, "step")}
        out = {f"time_{k}_ms": mean[k] * 1e3 for k in PARTS}
        out["time_step_ms"] = mean["step"] * 1e3
        out["time_other_ms"] = max(mean["step"] - sum(mean[k] for k in PARTS), 0.0) * 1e3
        if self.collectives_wait_ms is not None:
            out["time_collectives_wait_ms"] = self.collectives_wait_ms
        device_flops = self.tokens_per_step * self.flops_per_token / mean["step"] / self._world
        out["tflops_per_device"] = device_flops / 1e12
        mfu = device_flops / self.peak_flops if self.peak_flops else None
        out["mfu"] = None if self.mfu_error or mfu is None or mfu > 1 else mfu
        out["hfu"] = out["mfu"] * self.hardware_flops_per_token / self.flops_per_token if out["mfu"] else None
        if self.mfu_error or (mfu is not None and mfu > 1):
            out["mfu_error"] = self.mfu_error or f"MFU {mfu:.0%} above 100%: {self.peak_key} is too low"
        return out

    @property
    def _world(self) -> int:
        return self._throughput.world_size if self._throughput is not None else 1


def peak_key_for(precision: str) -> str:
    """The hardware key whose datasheet peak applies at this training precision (as the planner reads it)."""
    p = str(precision)
    return "hardware.peak_tflops_" + ("bf16" if p.startswith("bf16") else "fp16" if p.startswith("16") else "fp32")


def step_time_breakdown(cfg, tokens_per_step: int, planned: dict) -> tuple[StepTimeProfiler, StepTimeBreakdown]:
    """The profiler for the Trainer and the callback that reads it, with the FLOPs per token and planned memory of
    the run's plan and the datasheet peak of its hardware at its precision."""
    from bigtrain.plan.setup import peak_flops_for

    profiler = StepTimeProfiler()
    return profiler, StepTimeBreakdown(
        profiler,
        tokens_per_step,
        flops_per_token=planned["flops_per_token"],
        hardware_flops_per_token=planned["hardware_flops_per_token"],
        peak_flops=peak_flops_for(cfg.hardware, cfg.trainer.precision),
        peak_key=peak_key_for(cfg.trainer.precision),
        planned_memory_bytes=planned["memory_per_device_bytes"]["total"],
    )
