"""Multi-process launches: more nodes than one machine without a cluster launcher is refused in one line (it used to
hang at the rendezvous), and the extra ranks train from exactly the config rank zero validated and recorded."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from bigtrain.config import validate
from bigtrain.config.compose import compose_config
from bigtrain.config.run_config import load_run_config
from bigtrain.config.secrets import redact
from bigtrain.errors import ConfigError
from bigtrain.tasks.train import save_run_config
from tests.conftest import run_bigtrain

TWO_NODES = ["parallelism=ddp", "hardware.nodes=2", "hardware.devices=1", "trainer.micro_batch_size=8"]
CLUSTER_ENV = ("SLURM_NTASKS", "SLURM_JOB_NAME", "TORCHELASTIC_RUN_ID", "NODE_RANK", "MASTER_ADDR", "GROUP_RANK")


def test_two_nodes_without_a_launcher_is_refused(monkeypatch):
    for key in CLUSTER_ENV:
        monkeypatch.delenv(key, raising=False)
    cfg = compose_config(TWO_NODES)
    validate(cfg)  # a valid description of a 2-node run (task=plan, a SLURM submission)...
    with pytest.raises(ConfigError, match=r"hardware.nodes=2 x hardware.devices=1 = 2 processes on 2 machines"):
        validate(cfg, launching=True)  # ...but not startable from here
    monkeypatch.setenv("NODE_RANK", "0")  # started by hand on each node, as Lightning documents
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    validate(cfg, launching=True)


def test_workers_read_exactly_what_rank_zero_validated(tmp_path):
    """Rank zero records the resolved config; the workers merge it onto the schema. Free-form notes, lists and
    values rank zero resolved (interpolations, environment) come back identical."""
    cfg = compose_config(
        ["model=nano", "+notes.foo=1", "+notes.nested.x=[1,2]", "logger.run_name=${model.name}-run", "optim.lr=3e-4"]
    )
    validate(cfg)
    save_run_config(cfg, tmp_path)
    worker = load_run_config(tmp_path)
    expected = redact(OmegaConf.to_container(cfg, resolve=True))
    assert OmegaConf.to_container(worker, resolve=True) == expected
    assert worker.logger.run_name == "nano-run" and worker.notes.foo == 1


@pytest.mark.slow
def test_cli_two_nodes_on_one_machine_is_one_line(tmp_path):
    proc = run_bigtrain(*TWO_NODES, "model=nano", "data.max_bytes=200000", run_dir=tmp_path / "run", timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("bigtrain: error: hardware.nodes=2 x hardware.devices=1")
    assert not (tmp_path / "run").exists()
