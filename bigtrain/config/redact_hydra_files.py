"""Hydra callback (`hydra.callbacks.redact_secrets` in conf/config.yaml): the files Hydra itself writes hold the
command line's overrides verbatim, so they get bigtrain's secret redaction as soon as they exist.

Hydra writes the sweep's `multirun.yaml` before its first job starts and a job's `.hydra/{config,hydra,overrides}
.yaml` (when hydra.output_subdir is set) just before the job function runs, so `on_job_start` rewrites both; the
job-level files of a sweep point are rewritten by the point itself (any launcher, SLURM included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from bigtrain.config.secrets import redact_yaml_file

HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


def redact_hydra_files(config: DictConfig) -> None:
    h = config.hydra
    if h.mode == RunMode.MULTIRUN:
        redact_yaml_file(Path(h.sweep.dir) / "multirun.yaml")
    if h.output_subdir:
        for name in HYDRA_FILES:
            redact_yaml_file(Path(h.runtime.output_dir) / h.output_subdir / name)


class RedactHydraFiles(Callback):
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        redact_hydra_files(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        redact_yaml_file(Path(config.hydra.sweep.dir) / "multirun.yaml")
