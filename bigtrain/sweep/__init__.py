"""Sweeps: per-point status records, the comparison report (table + plots), and the Hydra callback that builds it."""

from bigtrain.sweep.points import Point, read_points
from bigtrain.sweep.report import build_report

__all__ = ["Point", "build_report", "read_points"]
