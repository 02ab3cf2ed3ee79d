"""Loggers from the `logger` group. CSV is always written (metrics.csv in the run directory, read by summaries and
reports); tensorboard or wandb come on top. Lightning's loggers write on rank zero only."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger


def build_loggers(cfg, run_dir: Path) -> list[Logger]:
    loggers: list[Logger] = [CSVLogger(save_dir=str(run_dir), name="", version="")]
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
                config=OmegaConf.to_container(cfg, resolve=True),
            )
        )
    return loggers
