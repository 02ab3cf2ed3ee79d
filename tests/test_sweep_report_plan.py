"""The sweep report's planned columns read the plan.json a training run writes (whose per-device memory is a dict of
terms with their total), and the throughput/memory plot puts planned and measured figures that differ a hundredfold
(the planner's hardware figures vs a CPU run) on a log axis, where both stay visible."""

from __future__ import annotations

import json

import pytest
from conftest import compose

from bigtrain.plan import plan
from bigtrain.plan.compare import write_plan
from bigtrain.sweep.report import MIB, build_report, value_scale
from bigtrain.sweep.status import job_ended, job_started


def test_planned_memory_and_throughput_come_from_the_runs_plan(tmp_path):
    planned = plan(compose("model=nano"))
    assert isinstance(planned["memory_per_device_bytes"], dict)  # the shape that left the column empty
    point = tmp_path / "0"
    job_started(point, ["model=nano"], 0)
    write_plan(point, planned)
    (point / "summary.json").write_text(json.dumps({"tokens_per_s": 3000.0, "peak_memory_bytes": 480 * MIB}))
    job_ended(point, ok=True)
    (row,) = build_report(tmp_path, quiet=True)["rows"]
    assert row["planned_memory_mib"] == pytest.approx(planned["memory_per_device_bytes"]["total"] / MIB)
    assert row["planned_tokens_per_s"] == pytest.approx(planned["tokens_per_s"])
    # CPU: planned memory ~1.5 MiB vs 480 MiB measured RSS, planned tokens/s ~100x the measured ones
    assert value_scale([row["peak_memory_mib"], row["planned_memory_mib"]]) == "log"
    assert value_scale([row["tokens_per_s"], row["planned_tokens_per_s"]]) == "log"
    assert value_scale([3000.0, 4000.0, 0.0]) == "linear"  # comparable bars (and failed points at 0) stay linear
