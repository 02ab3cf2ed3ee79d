"""The Optuna recipe (`hydra/sweeper=lr_batch_search`) runs a real 3-trial search with the installed
hydra-optuna-sweeper and optuna: each trial trains, reports its final validation loss as the objective, and the
sweeper writes its pick."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version

import pytest
import yaml
from conftest import NANO, REPO


def test_the_sweeper_plugin_is_the_current_release():
    """hydra-optuna-sweeper 1.3 (max_failure_rate, custom search space) is what the recipe's keys are written for."""
    major, minor = (int(x) for x in version("hydra-optuna-sweeper").split(".")[:2])
    assert (major, minor) >= (1, 3)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_optuna_recipe_runs_a_three_trial_search(tmp_path):
    sweep_dir = tmp_path / "sweep"
    # The recipe searches micro_batch_size in (4, 8, 16): leave it out of the fixed overrides, 16 sequences a step.
    fixed = [o for o in NANO if not o.startswith(("trainer.micro_batch_size=", "trainer.global_batch_size="))]
    steps = [
        "trainer.max_steps=3",
        "trainer.val_check_interval=3",
        "trainer.sample_tokens=0",
        "trainer.global_batch_size=16",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "bigtrain", "-m", "hydra/sweeper=lr_batch_search", "hydra.sweeper.n_trials=3",
         *fixed, *steps, f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=380,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    losses = {}
    for point in range(3):
        summary = json.loads((sweep_dir / str(point) / "summary.json").read_text())
        losses[point] = summary["final_val_loss"]
    assert not (sweep_dir / "3").exists()  # n_trials=3 means three points, no more
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["name"] == "optuna"
    # The sweeper's best value is the smallest objective the trials returned: the runs' own final val loss.
    assert best["best_value"] == pytest.approx(min(losses.values()))
    assert set(best["best_params"]) == {"optim.lr", "trainer.micro_batch_size"}
    assert 1e-4 <= best["best_params"]["optim.lr"] <= 1e-2
    assert best["best_params"]["trainer.micro_batch_size"] in (4, 8, 16)
