"""Loggers from the `logger` group. CSV is always written (metrics.csv in the run directory, read by summaries and
reports); tensorboard or wandb come on top. Lightning's loggers write on rank zero only.

wandb: the run id lives in run_dir/wandb_run_id (and in every checkpoint), so a resumed or requeued run continues
the same wandb run (resume="allow") instead of starting a new one at step 0. Offline by default, so it needs no
network; online without an API key is refused by validation before anything runs.
"""

from __future__ import annotations

import contextlib
import csv
import os
import secrets
import string
import sys
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger
from pytorch_lightning.utilities import rank_zero_only

from bigtrain.config.secrets import redact, redact_text

WANDB_ID_FILE = "wandb_run_id"
CHECKPOINT_KEY = "wandb_run_id"


def wandb_run_id(run_dir: Path, ckpt_path: Path | None = None) -> str | None:
    """This run's wandb id: the one recorded in the run directory, else the checkpoint's, else a new one (rank zero
    records it). Other ranks get None: they never open a wandb run."""
    if rank_zero_only.rank != 0:
        return None
    path = Path(run_dir) / WANDB_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    run_id = None
    if ckpt_path is not None and Path(ckpt_path).is_file():
        from bigtrain.safe_load import load

        run_id = load(ckpt_path, mmap=True).get(CHECKPOINT_KEY)
    if run_id is None:
        run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # wandb's form
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id


def sweep_name(run_dir: Path) -> str | None:
    """The sweep a run directory belongs to (Hydra writes multirun.yaml into the sweep directory), as DATE/TIME."""
    sweep_dir = Path(run_dir).resolve().parent
    return f"{sweep_dir.parent.name}/{sweep_dir.name}" if (sweep_dir / "multirun.yaml").is_file() else None


class WandbIdInCheckpoint(pl.Callback):
    """Stores the wandb run id in each checkpoint, so a run resumed elsewhere from it keeps its wandb run."""

    def __init__(self, run_id: str | None) -> None:
        self.run_id = run_id

    def on_save_checkpoint(self, trainer, module, checkpoint: dict) -> None:
        if self.run_id:
            checkpoint[CHECKPOINT_KEY] = self.run_id


def continue_metrics_file(logger: CSVLogger) -> None:
    """Lightning's CSV writer deletes an existing metrics.csv when it starts; a resumed run keeps the rows of the
    attempts before it and appends (given the old header, the writer rewrites the file with the union of keys)."""
    path = Path(logger.log_dir) / "metrics.csv"
    if rank_zero_only.rank != 0 or not path.is_file():
        return
    previous = path.read_text()
    header = next(csv.reader(previous.splitlines()), [])
    writer = logger.experiment  # created here; it removes the file
    path.write_text(previous)
    writer.metrics_keys = sorted(header)


def build_loggers(cfg, run_dir: Path, ckpt_path: Path | None = None) -> list[Logger]:
    # Flushed every 10 logged rows, so a killed run loses at most that many rows of metrics.csv.
    csv_logger = CSVLogger(save_dir=str(run_dir), name="", version="", flush_logs_every_n_steps=10)
    if ckpt_path is not None:
        continue_metrics_file(csv_logger)
    loggers: list[Logger] = [csv_logger]
    lg = cfg.logger
    if lg.name == "tensorboard":
        from pytorch_lightning.loggers import TensorBoardLogger

        tensorboard = TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="")
        # The resolved config into hparams.yaml and the hparams tab (the module saves no hyperparameters of its own);
        # hp_metric, its placeholder, becomes the final validation loss at the end (summary_to_loggers).
        tensorboard.log_hyperparams(redact(OmegaConf.to_container(cfg, resolve=True)))
        loggers.append(tensorboard)
    elif lg.name == "wandb":
        import wandb
        from pytorch_lightning.loggers import WandbLogger

        if wandb.run is not None:
            # An earlier point of this sweep process left its run open (finished or failed): WandbLogger would log
            # this point into that run. Close it, so each point is its own wandb run.
            wandb.finish()
        # Never wait long on a network: offline needs none, online gives up after this many seconds.
        os.environ.setdefault("WANDB_INIT_TIMEOUT", "90")
        sweep = sweep_name(run_dir)
        wandb_logger = WandbLogger(
            project=lg.project,
            entity=lg.entity,
            # Names, group and tags are shown and stored like the config: redacted the same way.
            name=redact_text(lg.run_name or (f"{sweep}/{run_dir.name}" if sweep else run_dir.name)),
            group=redact_text(lg.group or sweep) if (lg.group or sweep) else None,
            tags=[redact_text(str(t)) for t in lg.tags],
            save_dir=str(run_dir),
            id=wandb_run_id(run_dir, ckpt_path),
            resume="allow",
            offline=lg.mode == "offline",
            mode=lg.mode,
            config=redact(OmegaConf.to_container(cfg, resolve=True)),
        )
        if rank_zero_only.rank == 0:
            with redacted_argv():  # wandb records sys.argv (and the program) when its run starts: start it here
                _ = wandb_logger.experiment
        loggers.append(wandb_logger)
    return loggers


@contextlib.contextmanager
def redacted_argv():
    """sys.argv with secrets replaced while a library reads it (wandb keeps the command line in its run files)."""
    saved = list(sys.argv)
    sys.argv[:] = [redact_text(a) for a in saved]
    try:
        yield
    finally:
        sys.argv[:] = saved


def summary_to_loggers(loggers: list[Logger], summary: dict) -> None:
    """bigtrain's summary (first/final val loss, peak memory, planned vs measured, tokens/s, MFU, ...) where each
    logger keeps a run's results: wandb's run summary; TensorBoard's `hp_metric` (the final validation loss, which
    its hparams tab sets beside the config) and `summary/*` scalars. Scalars only; rank zero only."""
    if rank_zero_only.rank != 0:
        return
    scalars = redact({k: v for k, v in summary.items() if isinstance(v, int | float | str | bool) and k != "sample"})
    numbers = {k: float(v) for k, v in scalars.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.summary.update(scalars)
        elif type(logger).__name__ == "TensorBoardLogger":
            metrics = {f"summary/{k}": v for k, v in numbers.items()}
            if summary.get("final_val_loss") is not None:
                metrics["hp_metric"] = float(summary["final_val_loss"])
            logger.log_metrics(metrics, step=int(summary.get("steps") or 0))
            logger.save()
