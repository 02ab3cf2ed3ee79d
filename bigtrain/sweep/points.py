"""One sweep point = one run directory under the sweep directory; `read_points` gathers what each one recorded.

A point directory holds (any of) status.json (sweep callback), config.yaml + metrics.csv + summary.json (training)
and plan.json (the planner, where it ran). Whatever is missing stays None, so a partly finished sweep still reads.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from bigtrain.parallel.slurm_jobs import ALIVE_SLURM_STATES, slurm_state
from bigtrain.sweep.status import process_alive, read_status

# plan.json keys for the planned per-device memory and throughput, in order of preference.
PLANNED_MEMORY_KEYS = ("peak_memory_bytes", "memory_per_device_bytes", "total_bytes", "memory_bytes")
PLANNED_THROUGHPUT_KEYS = ("tokens_per_s", "throughput_tokens_per_s")


@dataclass
class Point:
    name: str  # the run directory's name (Hydra's job number)
    run_dir: Path
    status: str  # completed | failed | running | unknown
    overrides: list[str] = field(default_factory=list)
    error: str | None = None
    summary: dict | None = None
    plan: dict | None = None
    train_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, train/loss)
    val_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, val/loss)
    wall_s: float | None = None
    slurm_job_id: str | None = None

    @property
    def final_train_loss(self) -> float | None:
        return self.train_curve[-1][1] if self.train_curve else None

    @property
    def final_val_loss(self) -> float | None:
        if self.summary and self.summary.get("final_val_loss") is not None:
            return self.summary["final_val_loss"]
        return self.val_curve[-1][1] if self.val_curve else None

    def measured(self, key: str):
        return (self.summary or {}).get(key)

    def planned(self, keys: tuple[str, ...]):
        for key in keys:
            value = (self.plan or {}).get(key)
            if isinstance(value, dict):  # plan.json's memory_per_device_bytes: the terms and their "total"
                value = value.get("total")
            if isinstance(value, int | float) and not isinstance(value, bool):
                return value
        return None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_curves(metrics_csv: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, train/loss) and (step, val/loss) rows of Lightning's CSVLogger file."""
    train: list[tuple[int, float]] = []
    val: list[tuple[int, float]] = []
    try:
        with metrics_csv.open(newline="") as f:
            for row in csv.DictReader(f):
                step = int(float(row.get("step") or 0))
                if row.get("train/loss"):
                    train.append((step, float(row["train/loss"])))
                if row.get("val/loss"):
                    val.append((step, float(row["val/loss"])))
    except OSError:
        pass
    return train, val


def is_point_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in ("status.json", "config.yaml", "summary.json"))


def _order(path: Path):
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


def read_point(run_dir: Path, sweep_over: bool) -> Point:
    status = read_status(run_dir) or {}
    summary = _read_json(run_dir / "summary.json")
    train, val = read_curves(run_dir / "metrics.csv")
    state = status.get("status") or ("completed" if summary else "unknown")
    error = status.get("error")
    if sweep_over and state in ("running", "unknown"):
        # The sweep has returned, so this job will not report any more: it was cancelled or killed from outside.
        # Unless SLURM still runs it (a sweep stops waiting at its first failed job), or its process still runs here
        # (task=report on a sweep in progress).
        slurm = slurm_state(status.get("slurm_job_id"))
        if slurm in ALIVE_SLURM_STATES or (slurm is None and process_alive(status)):
            state = "running"
        else:
            why = (
                f"SLURM job {status.get('slurm_job_id')} ended {slurm}" if slurm else "the job was cancelled or killed"
            )
            state, error = "failed", error or f"no result: {why} before it finished"
    return Point(
        name=run_dir.name,
        run_dir=run_dir,
        status=state,
        overrides=list(status.get("overrides") or []),
        error=error,
        summary=summary,
        plan=_read_json(run_dir / "plan.json"),
        train_curve=train,
        val_curve=val,
        wall_s=status.get("wall_s") if status.get("wall_s") is not None else (summary or {}).get("total_wall_s"),
        slurm_job_id=status.get("slurm_job_id"),
    )


def read_points(sweep_dir: Path, sweep_over: bool = False) -> list[Point]:
    """Every point of the sweep in job order. `sweep_over`: the sweep process has ended (see read_point)."""
    dirs = sorted((p for p in Path(sweep_dir).iterdir() if is_point_dir(p)), key=_order)
    return [read_point(d, sweep_over) for d in dirs]


def varying_overrides(points: list[Point]) -> list[list[str]]:
    """Each point's overrides that are not shared by every point: what the sweep varied."""
    if not points:
        return []
    common = set(points[0].overrides).intersection(*(set(p.overrides) for p in points[1:]))
    return [[o for o in p.overrides if o not in common or len(points) == 1] for p in points]
