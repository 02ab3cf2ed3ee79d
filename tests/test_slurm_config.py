"""hydra/launcher=slurm takes its sizes from the hardware group (composed for real, nothing submitted)."""

from __future__ import annotations

from omegaconf import OmegaConf


def launcher(*overrides: str) -> dict:
    from hydra import compose, initialize_config_dir

    from bigtrain.config import register_configs
    from bigtrain.config.cli import CONF_DIR

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", *overrides], return_hydra_config=True)
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)  # ${hydra:...} resolution, as in a real run
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


def test_gpu_hardware_sizes_the_job():
    got = launcher("hardware=a100-80g-x8", "hardware.nodes=4", "recipe=cpu-tiny", "hardware.slurm_partition=gpu")
    assert got["_target_"].endswith("SlurmLauncher")
    assert (got["nodes"], got["tasks_per_node"], got["gpus_per_node"]) == (4, 8, 8)
    assert (got["cpus_per_task"], got["mem_gb"], got["timeout_min"]) == (16, int(2048 * 0.8), 60)
    assert (got["partition"], got["name"]) == ("gpu", "cpu-tiny")  # named after the experiment (the recipe)


def test_cpu_hardware_asks_for_no_gpus_and_everything_can_be_overridden():
    got = launcher("hardware.devices=2", "hydra.launcher.timeout_min=5", "hydra.launcher.mem_gb=3")
    assert (got["tasks_per_node"], got["gpus_per_node"], got["cpus_per_task"]) == (2, None, 1)
    assert (got["timeout_min"], got["mem_gb"], got["name"]) == (5, 3, "bigtrain-tiny")
    assert got["signal_delay_s"] > 0 and got["max_num_timeout"] >= 1  # requeue on the time-limit signal


def test_wandb_online_without_a_key_is_refused_before_anything_runs(tmp_path, monkeypatch):
    import pytest
    from conftest import compose

    from bigtrain.config import validate
    from bigtrain.errors import ConfigError

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login
    with pytest.raises(ConfigError, match="logger.mode=online needs WANDB_API_KEY"):
        validate(compose("logger=wandb", "logger.mode=online"), launching=True)
    validate(compose("logger=wandb"), launching=True)  # offline needs nothing


def test_ranks_started_by_srun_share_one_run_directory(monkeypatch):
    from conftest import compose

    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "2")
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from bigtrain.config.cli import CONF_DIR

    compose()  # registers bigtrain's resolvers
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("config", return_hydra_config=True)
    assert cfg.hydra.run.dir.endswith("/slurm-77-0")
