"""Shared fixtures: compose the real config, run the real CLI in a subprocess, a small prepared corpus.

Every subprocess imports bigtrain from this checkout (PYTHONPATH), trains on a corpus prepared once per session in
a temporary cache, and logs wandb offline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# A small slice of the built-in corpus: enough windows for nano/tiny models, prepared in about a second.
SMALL_DATA = ["data.max_bytes=2000000"]
# A fast training run: the nano model, a few steps, no progress bar, short sample.
NANO = [
    "model=nano",
    "trainer.max_steps=12",
    "trainer.val_check_interval=6",
    "trainer.val_batches=2",
    "trainer.global_batch_size=8",
    "trainer.micro_batch_size=4",
    "trainer.log_every_n_steps=1",
    "trainer.progress=false",
    "trainer.sample_tokens=16",
    "optim.warmup_steps=2",
    *SMALL_DATA,
]


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory):
    """Data cache, wandb and torch-extension settings for the whole session, inherited by subprocesses."""
    saved = dict(os.environ)
    os.environ["BIGTRAIN_DATA_DIR"] = str(tmp_path_factory.mktemp("data-cache"))
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_SILENT"] = "true"
    # One thread per process: nano models gain nothing from more, and 2-process runs on 2 cores stay unoversubscribed.
    os.environ["OMP_NUM_THREADS"] = "1"
    # DeepSpeed ops a test builds go to bigtrain's keyed cache (as .ci/run sets), never torch's ~/.cache default.
    from bigtrain.parallel.ops_cache import use_extensions_cache

    use_extensions_cache()
    import torch

    torch.set_num_threads(1)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matrices: one intra-op thread is many times faster than two on a shared 2-core machine. Use with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")` in a module of in-process model tests."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def compose(*overrides: str):
    """The composed config exactly as `python -m bigtrain OVERRIDES` would see it (no run, no Hydra run dir)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from bigtrain.config import register_configs
    from bigtrain.config.cli import CONF_DIR, quote_numeric_group_choices

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=quote_numeric_group_choices(list(overrides)))


def run_bigtrain(*overrides: str, run_dir: Path | None = None, timeout: float = 600, env: dict | None = None):
    """Run `python -m bigtrain OVERRIDES` (with hydra.run.dir=run_dir) and return the CompletedProcess."""
    args = [sys.executable, "-m", "bigtrain", *overrides]
    if run_dir is not None:
        args.append(f"hydra.run.dir={run_dir}")
    return subprocess.run(
        args,
        cwd=run_dir.parent if run_dir is not None else REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    )


def start_bigtrain(*overrides: str, run_dir: Path, env: dict | None = None) -> subprocess.Popen:
    """Start `python -m bigtrain OVERRIDES` without waiting (in its own session, so a test can signal the whole
    process group); `finish` collects it. Two single-process runs side by side take about the time of one on
    two cores, while the test process waits. Output goes to unnamed files: no pipe can fill up and stall a run."""
    import tempfile

    args = [sys.executable, "-m", "bigtrain", *overrides, f"hydra.run.dir={run_dir}"]
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(
        args,
        cwd=run_dir.parent,
        env={**os.environ, **(env or {})},
        stdout=out,
        stderr=err,
        text=True,
        start_new_session=True,
    )
    proc.output_files = (out, err)
    return proc


def finish(proc: subprocess.Popen, timeout: float = 600) -> subprocess.CompletedProcess:
    """Wait for a run `start_bigtrain` started; its exit status and output as `run_bigtrain` returns them."""
    proc.wait(timeout=timeout)
    texts = []
    for f in proc.output_files:
        f.seek(0)
        texts.append(f.read())
        f.close()
    return subprocess.CompletedProcess(proc.args, proc.returncode, *texts)
