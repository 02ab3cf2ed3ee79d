"""The one-line refusal of a SLURM sweep asking for more GPUs per node than the cluster's nodes have, from sinfo's
GRES column. Parsing and the rule are pure functions tested on sinfo's formats; the check against the real local
cluster (which has no GPUs) is the last test, which needs sinfo and a running cluster (the lead's SLURM tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import NANO, REPO

from bigtrain.sweep.slurm_gres import cluster_node_gpus, gres_problem, node_gpus


@pytest.mark.parametrize(
    ("gres", "gpus"),
    [
        ("(null)", 0),
        ("gpu:8", 8),
        ("gpu:a100:8", 8),
        ("gpu:a100:8(S:0-1)", 8),
        ("gpu:a100:4(S:0),gpu:v100:2(S:1)", 6),
        ("gpu:tesla:2(S:0-1,3),nvme:1", 2),
        ("gpu", 1),
        ("nvme:2", 0),
    ],
)
def test_gpus_per_node_from_sinfo_gres(gres, gpus):
    assert node_gpus(gres) == gpus


def test_refusal_names_the_request_and_what_the_cluster_has():
    problem = gres_problem(8, None, [0, 0])
    assert "asks for 8 GPUs per node" in problem and "offers no GPUs (2 nodes" in problem and "hardware=cpu" in problem
    assert "partition gpu offers at most 4 GPUs per node" in gres_problem(8, "gpu", [4, 2])
    assert gres_problem(8, None, [8, 0]) is None  # one node that can run it is enough
    assert gres_problem(None, None, [0]) is None  # a CPU sweep asks for no GPUs
    assert gres_problem(8, None, None) is None  # sinfo could not tell: SLURM decides


def gpu_sweep(tmp_path, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bigtrain", "-m", "hydra/launcher=slurm", "hardware=a100-80g-x8", *NANO,
         "optim.lr=1e-3,2e-3", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def assert_refused_in_one_line(proc, tmp_path) -> None:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("bigtrain: error: hydra/launcher=slurm asks for 8 GPUs")
    assert "Traceback" not in proc.stderr and not (tmp_path / "sweep" / ".submitit").exists()


@pytest.mark.slow
def test_gpu_sweep_is_refused_before_submitting_when_sinfo_shows_no_gpus(tmp_path):
    """The real entry point and Hydra callback; sinfo is a stand-in script printing a GPU-less node's GRES, because
    a session cannot start the SLURM cluster (the next test runs against the real one)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sinfo").write_text("#!/bin/sh\necho '(null)'\n")
    (bin_dir / "sinfo").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    assert_refused_in_one_line(gpu_sweep(tmp_path, env), tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("sinfo") is None, reason="needs SLURM's sinfo (the lead's SLURM test run)")
def test_gpu_sweep_on_the_local_cpu_cluster_is_refused_in_one_line(tmp_path):
    if cluster_node_gpus() is None:
        pytest.skip("sinfo reaches no cluster (start scripts/slurm/start_slurm.sh and export SLURM_CONF)")
    assert_refused_in_one_line(gpu_sweep(tmp_path), tmp_path)
