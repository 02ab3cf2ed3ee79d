"""`task=report`: the reports over finished runs.

- `sweep_dir=DIR`: (re)build the comparison report of a finished or partly finished sweep. Points still marked
  running are shown as running when SLURM still runs them and as failed otherwise (the same rule as at the end of a
  sweep). Writes DIR/report.md, report.csv, report.json, loss_curves.png, throughput_memory.png, and the calibration
  report of its finished points (DIR/calibration.json).
- `runs=[RUN_DIR,...]`: the calibration report (planned vs measured model-state bytes, peak memory and tokens/s, per
  run and the median error per quantity; bigtrain/sweep/calibration.py) of those training runs, written as
  calibration.json into this task's own run directory. Both may be given: the sweep's finished points join the runs.
"""

from __future__ import annotations

from pathlib import Path

from bigtrain.errors import ConfigError
from bigtrain.sweep.points import is_point_dir


def run(cfg, run_dir: Path) -> dict:
    runs = list(cfg.get("runs") or [])
    if not cfg.sweep_dir and not runs:
        raise ConfigError(
            "task=report needs sweep_dir=DIR (a multirun directory such as runs/multirun/DATE/TIME) or "
            "runs=[RUN_DIR,...] (training run directories to compare planned with measured)"
        )
    from bigtrain.sweep.calibration import build_calibration, run_dirs_of, sweep_run_dirs

    dirs = run_dirs_of(runs)  # checked before any file is written
    sweep_dir = Path(cfg.sweep_dir).expanduser() if cfg.sweep_dir else None
    if sweep_dir is not None and (not sweep_dir.is_dir() or not any(is_point_dir(p) for p in sweep_dir.iterdir())):
        raise ConfigError(
            f"sweep_dir={cfg.sweep_dir} holds no sweep points (folders with status.json, config.yaml or summary.json); "
            "give the directory a `-m` run printed as its sweep output dir"
        )
    result: dict = {}
    if sweep_dir is not None:
        if run_dir.is_dir() and not any(run_dir.iterdir()) and not runs:
            run_dir.rmdir()  # Hydra made a run directory; the report goes into the sweep directory instead
        from bigtrain.sweep.report import build_report

        result = build_report(sweep_dir, sweep_over=True)
        dirs = sweep_run_dirs(sweep_dir) + dirs
    if not dirs:  # a sweep none of whose points finished: its report says why; nothing to calibrate
        print(f"calibration report: no finished training run in sweep_dir={cfg.sweep_dir} (no summary.json)")
        return result
    out = run_dir if runs else sweep_dir
    title = f"planned vs measured: {len(dirs)} run{'s' if len(dirs) > 1 else ''}"
    result["calibration"] = build_calibration(dirs, out, title)
    return result
