"""task=dashboard: the wandb workspace built offline from a real 2-point sweep that logged to wandb. Its panels name
exactly metrics the runs logged (read back from their .wandb files), every standard panel a CPU run can fill is
there (so renaming a metric in the trainer breaks this test, not a user's dashboard), and the sweep section is
keyed by the swept override and by results every run's wandb summary holds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import wandb_records
from conftest import NANO, REPO, compose

from bigtrain.tasks import dashboard as dashboard_task
from bigtrain.training.dashboard import SECTIONS, SPEC_FILE, SWEEP_RESULTS, X_AXIS, panel_plan, spec_panels

# Standard panel keys a single-process CPU run cannot log: GPU memory, DDP's all-reduce wait.
NOT_ON_ONE_CPU_PROCESS = {"memory/allocated_mib", "memory/reserved_mib", "time/collectives_wait_ms"}
STANDARD = ["Loss", "Optimization", "Throughput", "Step time", "Memory"]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("dashboard") / "sweep"
    short = ["trainer.max_steps=6", "trainer.val_check_interval=3", "trainer.sample_tokens=0"]
    proc = subprocess.run(
        [sys.executable, "-m", "bigtrain", "-m", *NANO, *short, "logger=wandb", "optim.lr=0.002,0.004",
         f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=500,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return sweep_dir


def wandb_file(run_dir):
    (path,) = wandb_records.run_files(run_dir)
    return path


def build(target, tmp_path, capsys) -> tuple[dict, str]:
    cfg = compose("task=dashboard", "logger.project=bigtrain-test", f"sweep_dir={target}")
    result = dashboard_task.run(cfg, tmp_path / "task-run")
    out = capsys.readouterr().out
    assert result["url"] is None and result["spec"] == str(target / SPEC_FILE)
    return json.loads((target / SPEC_FILE).read_text()), out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_run_dashboard_panels_are_the_metrics_the_run_logged(sweep_dir, tmp_path, capsys):
    run_dir = sweep_dir / "0"
    logged = set().union(*(row.keys() for row in wandb_records.history(wandb_file(run_dir))))
    spec, out = build(run_dir, tmp_path, capsys)
    assert "push it later" in out and "logger.mode=online" in out
    panels = spec_panels(spec)
    assert list(panels) == STANDARD
    used = {key for configs in panels.values() for c in configs for key in c["metrics"]}
    assert used <= logged, used - logged
    assert all(c["xAxis"] == X_AXIS for configs in panels.values() for c in configs) and X_AXIS in logged
    # Every standard panel key that a one-process CPU run can log is on the dashboard: a metric renamed in the
    # trainer, or a panel naming a metric nobody logs, fails here.
    standard = {k for _, ps in SECTIONS for _, keys in ps for k in keys}
    assert used == standard - NOT_ON_ONE_CPU_PROCESS
    step_time = next(c["metrics"] for c in panels["Step time"] if "time/forward_ms" in c["metrics"])
    assert step_time == ["time/data_ms", "time/forward_ms", "time/backward_ms", "time/optimizer_ms", "time/other_ms"]
    assert ["memory/planned_mib", "memory/peak_mib"] in [c["metrics"] for c in panels["Memory"]]
    assert not (tmp_path / "task-run").exists()  # the spec went into the run directory, nothing else was left


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sweep_dashboard_compares_runs_by_the_swept_override(sweep_dir, tmp_path, capsys):
    spec, _ = build(sweep_dir, tmp_path, capsys)
    panels = spec_panels(spec)
    assert list(panels) == ["Sweep: optim.lr", *STANDARD]
    coords = next(c for c in panels["Sweep: optim.lr"] if "columns" in c)
    accessors = [col["accessor"] for col in coords["columns"]]
    assert accessors == ["config:optim.value.lr"] + [f"summary:{k}" for k in SWEEP_RESULTS]
    records = [wandb_records.run_record(wandb_file(sweep_dir / p)) for p in ("0", "1")]
    assert [r["config"]["update"]["optim"]["lr"] for r in records] == [0.002, 0.004]
    for point in ("0", "1"):  # every result the sweep section plots is in each run's wandb summary
        summary = wandb_records.summary(wandb_file(sweep_dir / point))
        assert all(isinstance(summary.get(k), int | float) for k in SWEEP_RESULTS), summary
    # The runset shows this sweep's runs: filtered by the wandb group they logged under.
    (group_filter,) = spec["spec"]["section"]["runSets"][0]["filters"]["filters"]
    assert group_filter["key"]["name"] == "group" and {r["run_group"] for r in records} == {group_filter["value"]}


def test_moe_section_appears_when_moe_metrics_were_logged():
    keys = {"train/loss", "val/loss", "moe/load_balance_loss", "moe/expert_load_max"}
    plan = dict(panel_plan(keys))
    assert list(plan) == ["Loss", "MoE load"]
    assert [ys for _, ys in plan["MoE load"]] == [["moe/expert_load_max"], ["moe/load_balance_loss"]]
    assert [s for s, _ in panel_plan(None)] == STANDARD  # no run to read: every standard panel, no MoE
