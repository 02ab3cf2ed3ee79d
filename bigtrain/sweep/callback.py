"""Hydra callback (`hydra.callbacks.sweep_report` in conf/config.yaml): per-point status files and the sweep report.

Runs in two places. In every job (the sweep process itself with the basic launcher, a SLURM task with submitit) it
records the point's status.json; rank zero only, since under SLURM every task of a multi-task job runs the job
function. In the sweep process it builds the report when the sweep ends. A point bigtrain refused returns a
FailedPoint (bigtrain/__main__.py) and is recorded failed here; Hydra 1.3 calls `on_multirun_end` only when no point
raised (its sweepers re-raise the first failed point once the batch is done), so the report is also built at
interpreter exit when the sweep ended in another error: a failed point still gets its report row.
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from bigtrain.errors import FailedPoint
from bigtrain.sweep.status import is_rank_zero, job_ended, job_started


def _is_sweep_point(config: DictConfig) -> bool:
    return config.hydra.mode == RunMode.MULTIRUN


class SweepReport(Callback):
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._pending: Path | None = None  # the sweep dir whose report is still owed

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = config.hydra.launcher
        if "slurm" in str(launcher.get("_target_", "")).lower():
            from bigtrain.sweep.slurm_gres import cluster_node_gpus, gres_problem

            partition = launcher.get("partition")
            problem = gres_problem(launcher.get("gpus_per_node"), partition, cluster_node_gpus(partition))
            if problem:
                print(f"bigtrain: error: {problem}", file=sys.stderr)
                sys.exit(2)  # before any job is submitted or sweep file written
        if self.enabled:
            self._pending = Path(config.hydra.sweep.dir).resolve()
            atexit.register(self._report_at_exit)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = self._pending
        self._report()
        if sweep_dir is None or not sweep_dir.is_dir():
            return
        from bigtrain.sweep.points import read_points

        failed = [p.name for p in read_points(sweep_dir, sweep_over=True) if p.status == "failed"]
        if failed:
            # Every point ran; the sweep still ends non-zero, as a failed run does (SystemExit: Hydra lets it
            # through without a traceback).
            print(f"bigtrain: error: sweep points {', '.join(failed)} failed (see the report)", file=sys.stderr)
            sys.exit(2)

    def _report_at_exit(self) -> None:
        if self._pending is not None and self._pending.is_dir():
            print("bigtrain: the sweep ended with an error; building the report of what ran", flush=True)
            self._report()

    def _report(self) -> None:
        sweep_dir, self._pending = self._pending, None
        if sweep_dir is not None and sweep_dir.is_dir():
            from bigtrain.sweep.report import build_report

            build_report(sweep_dir, sweep_over=True)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.enabled and _is_sweep_point(config) and is_rank_zero():
            job_started(
                Path(config.hydra.runtime.output_dir),
                list(config.hydra.overrides.task),
                int(config.hydra.job.num),
            )

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if not (self.enabled and _is_sweep_point(config)):
            return
        from hydra.core.utils import JobStatus

        value = job_return._return_value  # (reading .return_value of a failed job would raise its error)
        ok = job_return.status == JobStatus.COMPLETED and not isinstance(value, FailedPoint)
        if ok and is_rank_zero():
            job_ended(Path(config.hydra.runtime.output_dir), True)
        elif not ok:
            rank = os.environ.get("SLURM_PROCID", "0")
            error = value.error if isinstance(value, FailedPoint) else value
            job_ended(Path(config.hydra.runtime.output_dir), False, error if rank == "0" else f"rank {rank}: {error}")
            if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
                # The other tasks would wait for this one forever; end the step once submitit recorded the result.
                from bigtrain.parallel.slurm_jobs import end_job_step

                atexit.register(end_job_step)
