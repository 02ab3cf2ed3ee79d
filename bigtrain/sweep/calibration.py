"""The calibration report: how close the planner came, over any set of finished training runs.

For each run directory (its summary.json, written at the end of training, and plan.json, the planner's figures for
that run's own config) three quantities, planned beside measured, with measured / planned:
- model-state bytes per rank: planned params + grads + optimizer vs the real tensors after the first optimizer step;
- peak memory per rank: planned device total vs the measured peak (CUDA's max allocated on GPU, the process's peak
  RSS on CPU: the summary says which);
- tokens/s: planned (at plan.mfu or a measured rate, on the configured hardware's datasheet) vs measured.
The summary already holds them (bigtrain/plan/compare.py); a summary written before that reads its plan.json.
Per quantity the report gives the median ratio and the median relative error |measured / planned - 1| over the
runs that have both numbers: the planner's calibration on this set of runs.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from bigtrain.errors import ConfigError

CALIBRATION_FILE = "calibration.json"
# quantity -> (summary key of the planned value, summary key of the measured value, unit for the table)
QUANTITIES = {
    "model_state_bytes": ("planned_model_state_bytes", "measured_model_state_bytes", "bytes"),
    "peak_memory_bytes": ("planned_peak_memory_bytes", "measured_peak_memory_bytes", "bytes"),
    "tokens_per_s": ("planned_tokens_per_s", "tokens_per_s", "tokens/s"),
}


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"{what}: {path} cannot be read ({type(e).__name__}); is it a finished training run?"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what}: {path} holds no JSON object; is it a finished training run?")
    return data


def _from_plan(plan: dict | None) -> dict:
    """The planned values from plan.json, for summaries that do not carry them."""
    mem = (plan or {}).get("memory_per_device_bytes") or {}
    states = [mem.get(k) for k in ("params", "grads", "optimizer")]
    return {
        "planned_model_state_bytes": sum(states) if all(_number(v) is not None for v in states) else None,
        "planned_peak_memory_bytes": mem.get("total"),
        "planned_tokens_per_s": (plan or {}).get("tokens_per_s"),
    }


def read_run(run_dir: Path, what: str) -> dict:
    """One row: the run's planned and measured values and their ratios (None where either is missing)."""
    summary = _read_json(run_dir / "summary.json", what)
    plan_file = run_dir / "plan.json"
    fallback = _from_plan(_read_json(plan_file, what) if plan_file.is_file() else None)
    row: dict = {
        "run_dir": str(run_dir),
        "model": summary.get("model"),
        "parallelism": summary.get("parallelism"),
        "zero_stage": summary.get("zero_stage"),
        "world_size": summary.get("world_size"),
        "status": summary.get("status"),
        "peak_memory_measure": summary.get("peak_memory_measure"),
    }
    for quantity, (planned_key, measured_key, _) in QUANTITIES.items():
        planned = _number(summary.get(planned_key))
        planned = planned if planned is not None else _number(fallback.get(planned_key))
        measured = _number(summary.get(measured_key))
        if measured is None and quantity == "peak_memory_bytes":
            measured = _number(summary.get("peak_memory_bytes"))
        row[f"planned_{quantity}"] = planned
        row[f"measured_{quantity}"] = measured
        row[f"{quantity}_ratio"] = measured / planned if planned and measured is not None else None
    return row


def medians(rows: list[dict]) -> dict:
    """Per quantity: runs compared, the median measured/planned ratio and the median relative error."""
    out = {}
    for quantity in QUANTITIES:
        ratios = [r[f"{quantity}_ratio"] for r in rows if r[f"{quantity}_ratio"] is not None]
        out[quantity] = {
            "runs": len(ratios),
            "median_ratio": statistics.median(ratios) if ratios else None,
            "median_error": statistics.median(abs(x - 1) for x in ratios) if ratios else None,
        }
    return out


def run_dirs_of(runs: list[str]) -> list[Path]:
    """The given run directories, each checked to hold a summary.json (one error line naming every bad one)."""
    bad = []
    dirs = []
    for given in runs:
        path = Path(str(given)).expanduser()
        if not path.is_dir():
            bad.append(f"{given} is not a directory")
        elif not (path / "summary.json").is_file():
            bad.append(f"{given} has no summary.json (not a finished training run)")
        else:
            dirs.append(path)
    if bad:
        raise ConfigError(f"runs: {'; '.join(bad)}; give run directories of finished training runs (runs=[DIR1,DIR2])")
    return dirs


def sweep_run_dirs(sweep_dir: Path) -> list[Path]:
    """The sweep's points that finished training (failed or running points have no summary.json yet)."""
    from bigtrain.sweep.points import read_points

    return [p.run_dir for p in read_points(sweep_dir) if (p.run_dir / "summary.json").is_file()]


def _cell(value, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "bytes":
        from bigtrain.plan.units import gb

        return gb(value)
    if unit == "tokens/s":
        from bigtrain.plan.units import count

        return count(value)
    return f"{value:.3f}"


def print_table(title: str, rows: list[dict], summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, header_style="bold")
    table.add_column("run", justify="left")
    for quantity in QUANTITIES:
        name = quantity.removesuffix("_bytes")
        for kind in ("planned", "measured", "ratio"):
            table.add_column(f"{name} {kind}", justify="right")
    for r in rows:
        cells = [f"{r['run_dir']}\n{r['model']} {r['parallelism']} zero={r['zero_stage']} world={r['world_size']}"]
        for quantity, (_, _, unit) in QUANTITIES.items():
            cells += [
                _cell(r[f"planned_{quantity}"], unit),
                _cell(r[f"measured_{quantity}"], unit),
                _cell(r[f"{quantity}_ratio"]),
            ]
        table.add_row(*cells)
    cells = ["median (ratio / error)"]
    for quantity in QUANTITIES:
        m = summary[quantity]
        cells += ["", f"{m['runs']} runs", f"{_cell(m['median_ratio'])} / {_cell(m['median_error'])}"]
    table.add_row(*cells, style="bold")
    console = Console(width=220)
    console.print(table)
    measures = sorted({r["peak_memory_measure"] for r in rows if r["peak_memory_measure"]})
    if measures:
        console.print(f"peak memory measured as: {', '.join(measures)}; error = |measured / planned - 1|")


def build_calibration(run_dirs: list[Path], out_dir: Path, title: str, quiet: bool = False) -> dict:
    """Read every run, write out_dir/calibration.json, print the table; returns the JSON's content."""
    rows = [read_run(d, "task=report") for d in run_dirs]
    result = {"runs": rows, "median": medians(rows)}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / CALIBRATION_FILE
    path.write_text(json.dumps(result, indent=2))
    result["file"] = str(path)
    if not quiet:
        print_table(title, rows, result["median"])
        print(f"calibration report: {path}")
    return result
