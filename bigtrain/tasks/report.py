"""`task=report sweep_dir=DIR`: (re)build the comparison report of a finished or partly finished sweep.

Points still marked running are shown as running when SLURM still runs them and as failed otherwise (the same rule
as at the end of a sweep). Writes DIR/report.md, report.csv, report.json, loss_curves.png, throughput_memory.png.
"""

from __future__ import annotations

from pathlib import Path

from bigtrain.errors import ConfigError
from bigtrain.sweep.points import is_point_dir


def run(cfg, run_dir: Path) -> dict:
    if not cfg.sweep_dir:
        raise ConfigError("task=report needs sweep_dir=DIR (a multirun directory such as runs/multirun/DATE/TIME)")
    sweep_dir = Path(cfg.sweep_dir).expanduser()
    if not sweep_dir.is_dir() or not any(is_point_dir(p) for p in sweep_dir.iterdir()):
        raise ConfigError(
            f"sweep_dir={cfg.sweep_dir} holds no sweep points (folders with status.json, config.yaml or summary.json); "
            "give the directory a `-m` run printed as its sweep output dir"
        )
    if run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()  # Hydra made a run directory; the report goes into the sweep directory instead
    from bigtrain.sweep.report import build_report

    return build_report(sweep_dir, sweep_over=True)
