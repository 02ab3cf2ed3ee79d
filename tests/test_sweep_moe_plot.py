"""The sweep report's load-balance plot (bigtrain/sweep/moe_plot.py): drawn for the points whose summary records a
per-expert load, skipped when every point is dense. In-process, from Point records as read_points builds them."""

from __future__ import annotations

from bigtrain.sweep.moe_plot import FILENAME, moe_points, plot_expert_load
from bigtrain.sweep.points import Point


def point(name: str, model: str, load: list[float] | None) -> Point:
    summary = {"final_val_loss": 2.0, **({"moe_load_mean": load, "moe_dropped_frac_mean": 0.01} if load else {})}
    return Point(name, run_dir=None, status="completed", overrides=[f"model={model}"], summary=summary)


def test_load_plot_only_with_moe_points(tmp_path):
    dense = point("0", "tiny", None)
    balanced = point("1", "tiny-moe", [0.125] * 8)
    collapsed = point("2", "tiny-moe model.moe.aux_loss_coef=0", [0.86] + [0.02] * 7)
    assert plot_expert_load(tmp_path, [dense]) is None and not (tmp_path / FILENAME).exists()
    assert [p.name for p, _ in moe_points([dense, balanced, collapsed])] == ["1", "2"]
    path = plot_expert_load(tmp_path, [dense, balanced, collapsed])
    assert path == tmp_path / FILENAME and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5_000  # bars, labels and legend were drawn
