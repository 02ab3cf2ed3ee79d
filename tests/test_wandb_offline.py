"""logger=wandb, offline: the run file read back holds every logged step's loss, the resolved config, and the run
id the run directory records."""

from __future__ import annotations

import pytest
import wandb_records
from conftest import NANO, assert_ok, read_summary, run_bigtrain

from bigtrain.sweep.points import read_curves


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_wandb_offline_file_holds_every_logged_step(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_bigtrain(*NANO, "logger=wandb", "logger.tags=[nano,ci]", "logger.run_name=wb-test", run_dir=run_dir)
    assert_ok(proc)
    (path,) = wandb_records.run_files(run_dir)
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    assert path.name == f"run-{run_id}.wandb"
    rows = wandb_records.history(path)
    train = {r["trainer/global_step"]: r["train/loss"] for r in rows if "train/loss" in r}
    val = {r["trainer/global_step"]: r["val/loss"] for r in rows if "val/loss" in r}
    steps = read_summary(run_dir)["steps"]
    assert sorted(train) == list(range(steps))  # log_every_n_steps=1: every step
    csv_train, csv_val = read_curves(run_dir / "metrics.csv")
    assert train == pytest.approx(dict(csv_train)) and val == pytest.approx(dict(csv_val))
    record = wandb_records.run_record(path)
    assert (record["run_id"], record["display_name"], record["tags"]) == (run_id, "wb-test", ["nano", "ci"])
    config = record["config"]["update"]
    assert config["model"]["name"] == "nano" and "max_steps" in config["trainer"]
    # bigtrain's summary is the wandb run summary too
    summary = wandb_records.summary(path)
    assert summary["final_val_loss"] == pytest.approx(read_summary(run_dir)["final_val_loss"])
    assert summary["steps"] == steps and summary["status"] == "completed"
