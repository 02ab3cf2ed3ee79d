"""Loggers from the `logger` group. CSV is always written (metrics.csv in the run directory, read by summaries and
reports); tensorboard or wandb come on top. Lightning's loggers write on rank zero only."""

from __future__ import annotations

import csv
from pathlib import Path

from omegaconf import OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger

from bigtrain.config.secrets import redact


class ResumableCSVLogger(CSVLogger):
    """CSVLogger that appends to an existing metrics.csv (a resumed run) instead of crashing: Lightning's writer
    starts with no known columns and rewrites the file with only the new ones, which fails on the old rows."""

    @property
    def experiment(self):
        writer = super().experiment
        if not writer.metrics_keys and Path(writer.metrics_file_path).is_file():
            with open(writer.metrics_file_path, newline="") as f:
                writer.metrics_keys = sorted(csv.DictReader(f).fieldnames or [])
        return writer


def build_loggers(cfg, run_dir: Path) -> list[Logger]:
    # Flushed every 10 logged rows, so a killed run loses at most that many rows of metrics.csv.
    loggers: list[Logger] = [
        ResumableCSVLogger(save_dir=str(run_dir), name="", version="", flush_logs_every_n_steps=10)
    ]
    lg = cfg.logger
    if lg.name == "tensorboard":
        from pytorch_lightning.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=""))
    elif lg.name == "wandb":
        from pytorch_lightning.loggers import WandbLogger

        loggers.append(
            WandbLogger(
                project=lg.project,
                name=lg.run_name or run_dir.name,
                group=lg.group,
                tags=list(lg.tags),
                save_dir=str(run_dir),
                offline=lg.mode == "offline",
                mode=lg.mode,
                config=redact(OmegaConf.to_container(cfg, resolve=True)),
            )
        )
    return loggers
