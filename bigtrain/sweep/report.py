"""The sweep report: one row per point (what it varied, losses, throughput, memory, plan vs measured, wall time,
status) as report.md / report.csv / report.json in the sweep directory, a rich table on the console, and two plots:
loss_curves.png (train and validation loss of every point, overlaid) and throughput_memory.png (tokens/s and peak
memory per point); with mixture-of-experts points also expert_load.png (moe_plot.py)."""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path

from bigtrain.config.secrets import redact_text
from bigtrain.sweep.points import (
    PLANNED_MEMORY_KEYS,
    PLANNED_THROUGHPUT_KEYS,
    Point,
    read_points,
    varying_overrides,
)

COLUMNS = (
    "point",
    "overrides",
    "status",
    "final_train_loss",
    "final_val_loss",
    "tokens_per_s",
    "planned_tokens_per_s",
    "peak_memory_mib",
    "planned_memory_mib",
    "wall_s",
    "error",
)
MIB = 2**20


def _mib(value) -> float | None:
    return value / MIB if isinstance(value, int | float) else None


def rows_of(points: list[Point]) -> list[dict]:
    rows = []
    for point, varied in zip(points, varying_overrides(points), strict=True):
        rows.append(
            {
                "point": point.name,
                "overrides": " ".join(redact_text(o) for o in varied),  # each alone: `+x.api_token=...`
                "status": point.status,
                "final_train_loss": point.final_train_loss,
                "final_val_loss": point.final_val_loss,
                "tokens_per_s": point.measured("tokens_per_s"),
                "planned_tokens_per_s": point.planned(PLANNED_THROUGHPUT_KEYS),
                "peak_memory_mib": _mib(point.measured("peak_memory_bytes")),
                "planned_memory_mib": _mib(point.planned(PLANNED_MEMORY_KEYS)),
                "wall_s": point.wall_s,
                "error": redact_text(point.error) if point.error else None,
            }
        )
    return rows


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def write_tables(sweep_dir: Path, rows: list[dict]) -> list[Path]:
    md = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(_cell(r[c]).replace("|", "\\|") for c in COLUMNS) + " |" for r in rows]
    paths = [sweep_dir / "report.md", sweep_dir / "report.csv", sweep_dir / "report.json"]
    paths[0].write_text(f"# Sweep report: {sweep_dir}\n\n" + "\n".join(md) + "\n")
    with paths[1].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    paths[2].write_text(json.dumps({"sweep_dir": str(sweep_dir), "points": rows}, indent=2))
    return paths


def print_table(sweep_dir: Path, rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sweep report: {sweep_dir}", header_style="bold")
    shown = [c for c in COLUMNS if c != "error"]
    for c in shown:
        table.add_column(c, justify="left" if c in ("overrides", "status") else "right")
    for r in rows:
        style = {"failed": "red", "running": "yellow"}.get(r["status"])
        table.add_row(*(_cell(r[c]) for c in shown), style=style)
    console = Console(width=200)
    console.print(table)
    for r in rows:
        if r["error"]:
            console.print(f"point {r['point']} {r['status']}: {r['error']}")


def _label(point: Point, varied: list[str]) -> str:
    return f"{point.name}: {' '.join(redact_text(o) for o in varied) or '(defaults)'}" + (
        "" if point.status == "completed" else f" [{point.status}]"
    )


def plot_losses(sweep_dir: Path, points: list[Point]) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window (SLURM nodes and CI have no display)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for i, (point, varied) in enumerate(zip(points, varying_overrides(points), strict=True)):
        color = f"C{i % 10}"
        if point.train_curve:
            steps, losses = zip(*point.train_curve, strict=True)
            ax.plot(steps, losses, color=color, alpha=0.8, label=f"{_label(point, varied)} train")
        if point.val_curve:
            steps, losses = zip(*point.val_curve, strict=True)
            ax.plot(steps, losses, color=color, marker="o", linestyle="--", label=f"{_label(point, varied)} val")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"loss curves, {len(points)} points")
    ax.grid(alpha=0.3)
    if ax.has_data():
        ax.legend(fontsize=7)
    path = sweep_dir / "loss_curves.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def value_scale(values: list[float]) -> str:
    """'log' when the positive bars of one panel span more than 10x (planned vs measured on CPU), else 'linear'."""
    positive = [v for v in values if v and v > 0]
    return "log" if positive and max(positive) / min(positive) > 10 else "linear"


def plot_throughput_memory(sweep_dir: Path, rows: list[dict]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Point number and what it varied, wrapped and capped so long override lists cannot squeeze the plots away.
    labels = [
        "\n".join([r["point"], *textwrap.wrap(r["overrides"], 28, max_lines=4, placeholder=" ...")]) for r in rows
    ]
    x = range(len(rows))
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(rows) + 4), 4.8))
    for ax, key, planned, title in (
        (left, "tokens_per_s", "planned_tokens_per_s", "throughput (tokens/s)"),
        (right, "peak_memory_mib", "planned_memory_mib", "peak memory per process (MiB)"),
    ):
        values = [r[key] or 0.0 for r in rows]
        colors = ["C0" if r["status"] == "completed" else "C3" for r in rows]
        plans = [r[planned] for r in rows]
        shift = 0.2 if any(p is not None for p in plans) else 0.0  # side by side only when there is a plan
        ax.bar([i - shift for i in x], values, width=0.4, color=colors, label="measured")
        if shift:
            ax.bar([i + shift for i in x], [p or 0.0 for p in plans], width=0.4, color="C7", label="planned")
            ax.legend(fontsize=8)
        # The planner's figures are for the configured hardware: on CPU the planned tokens/s is ~100x and the planned
        # memory ~1/300 of what a run measures. On one linear axis the smaller bars vanish; a log axis shows both.
        ax.set_yscale(value_scale(values + [p for p in plans if p]))
        for i, r in enumerate(rows):
            if r["status"] != "completed":
                ax.annotate(r["status"], (i - shift, 0), ha="center", va="bottom", color="C3", fontsize=8)
            elif values[i] > 0:
                ax.annotate(f"{values[i]:,.3g}", (i - shift, values[i]), ha="center", va="bottom", fontsize=7)
            if shift and plans[i]:
                ax.annotate(f"{plans[i]:,.3g}", (i + shift, plans[i]), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(list(x), labels, fontsize=7)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = sweep_dir / "throughput_memory.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def build_report(sweep_dir: Path | str, sweep_over: bool = True, quiet: bool = False) -> dict:
    """Write the report files into sweep_dir and return {"rows": [...], "files": [...]}.

    `sweep_over`: the sweep process has ended, so points still marked running were killed (reported failed)."""
    sweep_dir = Path(sweep_dir)
    points = read_points(sweep_dir, sweep_over=sweep_over)
    rows = rows_of(points)
    files = write_tables(sweep_dir, rows)
    files += [plot_losses(sweep_dir, points), plot_throughput_memory(sweep_dir, rows)]
    from bigtrain.sweep.moe_plot import plot_expert_load  # expert_load.png, only when MoE runs are present

    files += [path for path in [plot_expert_load(sweep_dir, points)] if path is not None]
    if not quiet:
        print_table(sweep_dir, rows)
        print(f"sweep report: {', '.join(str(f) for f in files)}")
    return {"rows": rows, "files": [str(f) for f in files]}
