"""Sweeps with the basic launcher: every point in its own run directory, a report table + plots at the end, a failed
point shown as failed while the others still run, and `task=report` rebuilding the report."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from conftest import NANO, REPO

from bigtrain.sweep.report import COLUMNS, build_report
from bigtrain.sweep.status import job_ended, job_started

REPORT_FILES = ("report.md", "report.csv", "report.json", "loss_curves.png", "throughput_memory.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sweep(sweep_dir, *overrides, timeout=600):
    """`python -m bigtrain -m OVERRIDES hydra.sweep.dir=SWEEP_DIR` -> CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "bigtrain", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def report_rows(sweep_dir) -> list[dict]:
    return json.loads((sweep_dir / "report.json").read_text())["points"]


def assert_report_files(sweep_dir) -> None:
    for name in REPORT_FILES:
        assert (sweep_dir / name).is_file(), f"{name} missing from {sorted(p.name for p in sweep_dir.iterdir())}"
    for name in ("loss_curves.png", "throughput_memory.png"):
        assert (sweep_dir / name).read_bytes()[:8] == PNG_MAGIC
    with (sweep_dir / "report.csv").open() as f:
        assert tuple(csv.DictReader(f).fieldnames) == COLUMNS


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ddp_sweep_report_shows_the_failed_point_and_the_others_finish(tmp_path):
    """Two processes per point (DDP on CPU); point 0 is refused by validation in one line (no Hydra traceback),
    point 1 still trains, the report shows both and the sweep exits 2."""
    sweep_dir = tmp_path / "sweep"
    proc = sweep(sweep_dir, *NANO, "parallelism=ddp", "hardware.devices=2", "optim.lr=-1,0.004")
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Error executing job" not in proc.stderr, proc.stderr[-3000:]
    assert "bigtrain: error: sweep point 0: optim.lr=-1.0 must be a positive number" in proc.stderr, proc.stderr
    assert "bigtrain: error: sweep points 0 failed" in proc.stderr, proc.stderr
    assert "sweep report:" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_report_files(sweep_dir)
    failed, done = report_rows(sweep_dir)
    assert (failed["point"], failed["status"], failed["overrides"]) == ("0", "failed", "optim.lr=-1")
    assert "optim.lr=-1.0 must be a positive number" in failed["error"]
    assert (done["point"], done["status"], done["overrides"]) == ("1", "completed", "optim.lr=0.004")
    summary = json.loads((sweep_dir / "1" / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert done["final_val_loss"] == pytest.approx(summary["final_val_loss"])
    assert done["tokens_per_s"] == pytest.approx(summary["tokens_per_s"])
    assert done["peak_memory_mib"] == pytest.approx(summary["peak_memory_bytes"] / 2**20)
    assert done["final_train_loss"] < 5.6 and done["wall_s"] > 0  # ln(256) = 5.55 is chance
    assert "failed" in (sweep_dir / "report.md").read_text()

    # task=report rebuilds it from the run directories alone
    for name in REPORT_FILES:
        (sweep_dir / name).unlink()
    rebuilt = subprocess.run(
        [sys.executable, "-m", "bigtrain", "task=report", f"sweep_dir={sweep_dir}", f"hydra.run.dir={tmp_path}/r"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert "sweep report" in rebuilt.stdout and "optim.lr=0.004" in rebuilt.stdout
    assert_report_files(sweep_dir)
    assert [r["status"] for r in report_rows(sweep_dir)] == ["failed", "completed"]
    assert not (tmp_path / "r").exists()  # the report task leaves no empty run directory behind


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_zero_stage_sweep_report(tmp_path):
    """The issue's sweep: `zero=0,1,2,3` on CPU, 2 processes each, under parallelism=deepspeed."""
    sweep_dir = tmp_path / "sweep"
    steps = ["trainer.max_steps=4", "trainer.val_check_interval=4"]
    proc = sweep(sweep_dir, *NANO, *steps, "parallelism=deepspeed", "hardware.devices=2", "zero=0,1,2,3")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_report_files(sweep_dir)
    rows = report_rows(sweep_dir)
    assert [r["overrides"] for r in rows] == [f"zero={z}" for z in range(4)]
    assert all(r["status"] == "completed" and r["final_val_loss"] and r["tokens_per_s"] for r in rows)


def test_report_of_a_partly_finished_sweep(tmp_path):
    """A point still running while the sweep process lives is 'running'; once the sweep is over, a point that never
    reported (killed from outside) is 'failed'. Real status files, written by the functions the callback calls."""
    sweep_dir = tmp_path / "sweep"
    job_started(sweep_dir / "0", ["optim.lr=0.001", "model=nano"], 0)
    job_ended(sweep_dir / "0", ok=False, error=ValueError("boom\nsecond line"))
    job_started(sweep_dir / "1", ["optim.lr=0.002", "model=nano"], 1)
    (sweep_dir / "1" / "metrics.csv").write_text("step,train/loss,val/loss\n0,5.5,\n0,,5.4\n1,5.0,\n")

    live = build_report(sweep_dir, sweep_over=False, quiet=True)["rows"]
    assert [(r["overrides"], r["status"]) for r in live] == [
        ("optim.lr=0.001", "failed"),
        ("optim.lr=0.002", "running"),
    ]
    assert live[0]["error"] == "ValueError: boom"
    assert (live[1]["final_train_loss"], live[1]["final_val_loss"]) == (5.0, 5.4)

    # This test process wrote point 1's status, so it is alive: still running even for a finished sweep's report.
    assert build_report(sweep_dir, sweep_over=True, quiet=True)["rows"][1]["status"] == "running"
    status = json.loads((sweep_dir / "1" / "status.json").read_text())
    (sweep_dir / "1" / "status.json").write_text(json.dumps({**status, "pid": 2**22 + 1}))  # above Linux's pid_max
    over = build_report(sweep_dir, sweep_over=True, quiet=True)["rows"]
    assert over[1]["status"] == "failed" and "cancelled or killed" in over[1]["error"]
    assert_report_files(sweep_dir)


def test_report_task_refuses_a_directory_without_points(tmp_path):
    from conftest import compose

    from bigtrain.errors import ConfigError
    from bigtrain.tasks.report import run

    with pytest.raises(ConfigError, match=f"sweep_dir={tmp_path} holds no sweep points"):
        run(compose("task=report", f"sweep_dir={tmp_path}"), tmp_path / "r")
    with pytest.raises(ConfigError, match="task=report needs sweep_dir=DIR"):
        run(compose("task=report"), tmp_path / "r")
