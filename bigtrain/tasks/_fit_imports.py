"""What every rank's `fit` (tasks/train.py) imports, importable ahead of it: a rank started early
(`bigtrain.worker --wait`, see bigtrain/parallel/prestart.py) imports these while rank zero still prepares.
Not a task: the leading underscore keeps it out of the task list."""

from __future__ import annotations

import importlib

MODULES = (
    "torch",
    "bigtrain.tasks.train",
    "bigtrain.data.datamodule",
    "bigtrain.training.callbacks",
    "bigtrain.training.checkpointing",
    "bigtrain.training.guards",
    "bigtrain.training.loggers",
    "bigtrain.training.model_states",
    "bigtrain.training.module",
    "bigtrain.training.progress",
    "bigtrain.training.signals",
    "bigtrain.training.step_time",
    "bigtrain.parallel.gather",
    "bigtrain.parallel.strategy",
    "bigtrain.parallel.teardown",
)


def import_for_fit(extra: tuple[str, ...] = ()) -> None:
    """Import MODULES and `extra` (e.g. deepspeed), Lightning first and lean, as on every train path."""
    from bigtrain.training.lean_imports import import_lightning_lean

    import_lightning_lean()  # none of torchmetrics' optional extras
    for name in (*MODULES, *extra):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the run meets (and reports) the same failure where it needs the module
            pass
