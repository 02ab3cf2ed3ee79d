"""Values outside their domain, unknown keys, unresolvable interpolations, bad run directories and command-line
shapes each end in one line naming the value and what would be valid (bigtrain/config/domains.py, launch_checks.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bigtrain.config import validate
from bigtrain.config.compose import compose_config
from bigtrain.config.launch_checks import check_cli_shape, check_launch, folder_problem
from bigtrain.errors import ConfigError
from tests.conftest import run_bigtrain

REFUSED = {
    "seed": (["trainer.seed=-5"], "trainer.seed=-5 must be >= 0"),
    "eps-nan": (["optim.eps=nan"], "optim.eps=nan must be a finite number in (0, 1]"),
    "lr-inf": (["optim.lr=inf"], "optim.lr=inf must be a finite number"),
    "weight-decay-nan": (["optim.weight_decay=nan"], "optim.weight_decay=nan must be a finite number"),
    "grad-clip": (["optim.grad_clip=-inf"], "optim.grad_clip=-inf must be a finite number"),
    "betas": (["optim.betas=[0.9,1.5]"], "optim.betas=[0.9, 1.5]: each element must be in [0, 1)"),
    "memory": (["task=plan", "hardware.device_memory_gib=0"], "hardware.device_memory_gib=0.0 must be a positive"),
    "tflops": (["task=plan", "hardware.peak_tflops_fp32=0"], "hardware.peak_tflops_fp32=0.0: cpu has no fp32"),
    "bandwidth": (["hardware.inter_node_bandwidth_gbps=-1"], "hardware.inter_node_bandwidth_gbps=-1.0 must be a pos"),
    "price": (["hardware.price_per_device_hour=nan"], "hardware.price_per_device_hour=nan must be a finite number"),
    "bpe-vocab": (["data.bpe_vocab_size=100"], "data.bpe_vocab_size=100 must be in [258, 65536]"),
    "huge-batch": (["trainer.global_batch_size=1099511627776"], "trainer.global_batch_size=1099511627776 must be in"),
    "unknown-key": (["+trainer.max_step=5"], "unknown key trainer.max_step: not in bigtrain's schema"),
    "unknown-top": (["+new.key=1"], "unknown key new: not in bigtrain's schema"),
    # refused twice over: not in the schema, and not on the _target_ allow-list (whose guard on Hydra's composition,
    # once installed in this process by the CLI or an earlier test, speaks first)
    "target-in-schema": (["+optim._target_=torch.optim.SGD"], ("unknown key optim._target_", "SGD is not allowed")),
    "interpolation": (["trainer.precision=${nope}"], "a value does not resolve: Interpolation key 'nope' not found"),
    "env-unset": (["logger.project=${oc.env:BIGTRAIN_NO_SUCH_VAR}"], "a value does not resolve"),
    "source-empty": (["data.source="], "data.source='' is empty"),
    "cache-empty": (["data.cache_dir="], "data.cache_dir='' is empty"),
    "project-path": (["logger.project=team/../x"], "logger.project=team/../x must be a plain name"),
    "backend": (["parallelism.process_group_backend=bogus"], "parallelism.process_group_backend=bogus is unknown"),
    "sample-prompt": (["trainer.sample_prompt="], "trainer.sample_prompt='' is empty"),
    "generate-prompt": (["task=generate", "ckpt=x", "prompt="], "prompt='' is empty"),
    "group-list": (["model=[nano,tiny]"], "model=[nano,tiny] lists several model choices"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_in_one_line(name):
    overrides, message = REFUSED[name]
    with pytest.raises(ConfigError) as info:
        validate(compose_config(overrides))
    messages = (message,) if isinstance(message, str) else message
    assert any(m in str(info.value) for m in messages), str(info.value)
    assert "\n" not in str(info.value)


def test_free_form_notes_and_empty_sample_with_no_sample_are_accepted():
    cfg = compose_config(["+notes.expected.loss=1.5", "trainer.sample_prompt=", "trainer.sample_tokens=0"])
    validate(cfg)
    assert cfg.notes.expected.loss == 1.5


def test_data_cache_on_a_file_is_refused(tmp_path):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match=r"data.cache_dir=.*/f is a file, not a folder"):
        validate(compose_config([f"data.cache_dir={a_file}"]))
    with pytest.raises(ConfigError, match=r"data.cache_dir=.*/f/sub cannot be made: .*/f is a file"):
        validate(compose_config([f"data.cache_dir={a_file}/sub"]))


@pytest.mark.parametrize("folder", ["/", "/etc", "~"])
def test_system_and_home_folders_are_not_run_dirs(folder):
    problem = folder_problem("hydra.run.dir", folder)
    assert problem and "is a system or home folder" in problem


def test_command_line_shapes():
    with pytest.raises(ConfigError, match=r"-p/--package only selects what --cfg prints"):
        check_cli_shape(["-p", "model"])
    check_cli_shape(["--cfg", "job", "-p", "model"])
    with pytest.raises(ConfigError, match=r"hydra.run.dir=/ is a system or home folder"):
        check_cli_shape(["task=plan", "hydra.run.dir=/"])
    with pytest.raises(ConfigError, match=r"hydra.sweep.dir=/etc"):
        check_cli_shape(["-m", "zero=0,1", "hydra.sweep.dir=/etc"])
    with pytest.raises(ConfigError, match=r"parallelism=\[ddp,single\] lists several parallelism choices"):
        check_launch(["parallelism=[ddp,single]"], Path("/tmp/x/run"))


@pytest.fixture
def read_only_folder(tmp_path):
    """A read-only tmpfs (root can write anywhere else: permission bits do not stop it)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    if os.geteuid() == 0:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], capture_output=True)
        if proc.returncode == 0:
            yield mount
            subprocess.run(["umount", str(mount)], check=False)
            return
    mount.chmod(0o555)  # not root: permission bits are enough
    yield mount
    mount.chmod(0o755)


def test_read_only_run_dir_and_cache_are_refused(read_only_folder):
    problem = folder_problem("hydra.run.dir", read_only_folder / "run")
    assert problem and "is not writable" in problem, problem
    with pytest.raises(ConfigError, match=r"data.cache_dir=.* is not writable"):
        validate(compose_config([f"data.cache_dir={read_only_folder}/cache"]))


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["-p", "model"], "bigtrain: error: -p/--package only selects what --cfg prints"),
        (["task=plan", "hydra.run.dir=/"], "bigtrain: error: hydra.run.dir=/ is a system or home folder"),
        (["model=[nano,tiny]", "task=plan"], "bigtrain: error: model=[nano,tiny] lists several model choices"),
        (["task=plan", "hardware.device_memory_gib=0"], "bigtrain: error: hardware.device_memory_gib=0.0 must be"),
        (["+foo=1"], "bigtrain: error: unknown key foo"),
    ],
)
def test_cli_refuses_in_one_line(tmp_path, args, message):
    proc = (
        run_bigtrain(*args, timeout=120) if "hydra.run.dir=/" in args else run_bigtrain(*args, run_dir=tmp_path / "r")
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith(message), proc.stderr
    assert not (tmp_path / "r").exists()
