"""The front doors behind `task=`: each module exposes run(cfg, run_dir) -> dict."""

from __future__ import annotations

import importlib
from pathlib import Path

from bigtrain.config.validate import TASKS
from bigtrain.errors import ConfigError


def run_task(cfg, run_dir: Path) -> dict:
    if cfg.task not in TASKS:
        raise ConfigError(f"task={cfg.task} is unknown; valid: {', '.join(TASKS)}")
    return importlib.import_module(f"bigtrain.tasks.{cfg.task}").run(cfg, run_dir)
