"""The front doors behind `task=`: each module exposes run(cfg, run_dir) -> dict."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from bigtrain.config.validate import TASKS
from bigtrain.errors import ConfigError
from bigtrain.plan.sizing import apply_model_size


def run_task(cfg, run_dir: Path) -> dict:
    if cfg.task not in TASKS:
        raise ConfigError(f"task={cfg.task} is unknown; valid: {', '.join(TASKS)}")
    sized = apply_model_size(cfg)  # model.n_params: the shape every task sees (stderr keeps JSON stdout clean)
    if sized:
        print(sized, file=sys.stderr)
    return importlib.import_module(f"bigtrain.tasks.{cfg.task}").run(cfg, run_dir)
