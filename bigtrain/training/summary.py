"""summary.json: what a run measured, written by rank zero and printed as a table."""

from __future__ import annotations

import json
from pathlib import Path


def write_summary(run_dir: Path, summary: dict) -> Path:
    path = run_dir / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    from bigtrain.config.secrets import redact

    tmp.write_text(json.dumps(redact(summary), indent=2, default=str))
    tmp.replace(path)
    return path


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def print_summary(summary: dict, title: str = "bigtrain run summary") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if isinstance(value, dict | list) or key == "sample":
            continue
        table.add_row(key, _fmt(value))
    Console().print(table)
