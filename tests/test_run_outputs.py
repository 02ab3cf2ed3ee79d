"""What a user sees of a run besides summary.json: the progress bar counts optimizer steps out of max_steps (not
"Epoch 0/-2" over micro-batches), and logger=tensorboard records the resolved config (hparams.yaml, the hparams
tab) and the run's results (hp_metric = final validation loss, summary/* scalars)."""

from __future__ import annotations

import pytest
import yaml
from conftest import NANO, assert_ok, read_summary, run_bigtrain


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_progress_bar_counts_steps_and_tensorboard_gets_config_and_results(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [o for o in NANO if o != "trainer.progress=false"]
    proc = run_bigtrain(*overrides, "trainer.progress=true", "logger=tensorboard", run_dir=run_dir,
                        env={"COLUMNS": "160"})  # fmt: skip
    assert_ok(proc)
    steps = read_summary(run_dir)["steps"]
    assert "train steps" in proc.stdout and f" {steps}/{steps} " in proc.stdout, proc.stdout[-2000:]
    assert "Epoch 0/-2" not in proc.stdout
    hparams = yaml.safe_load((run_dir / "tensorboard" / "hparams.yaml").read_text())
    assert hparams["model"]["name"] == "nano" and hparams["trainer"]["max_steps"] == steps

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    scalars = events.Tags()["scalars"]
    assert "time/forward_ms" in scalars and "summary/final_val_loss" in scalars
    (hp,) = events.Scalars("hp_metric")[-1:]
    assert hp.value == pytest.approx(read_summary(run_dir)["final_val_loss"])
