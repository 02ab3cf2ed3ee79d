"""Each rule breaks with one line that names the values and what would be valid, before anything heavy runs."""

from __future__ import annotations

import os

import pytest

from bigtrain.config import validate
from bigtrain.errors import ConfigError
from tests.conftest import NANO, SMALL_DATA, compose, run_bigtrain

CASES = {
    "batch": (
        ["parallelism=ddp", "hardware.devices=2", "trainer.global_batch_size=20", "trainer.micro_batch_size=4"],
        "trainer.global_batch_size=20 is not divisible by trainer.micro_batch_size=4 x data-parallel size 2 (= 8); "
        "valid global sizes near it: 16 or 24",
    ),
    "heads": (
        ["model.n_embd=100", "model.n_head=3"],
        "model.n_embd=100 is not divisible by model.n_head=3; valid n_head near it: 1, 2, 4, 5, 10, 20",
    ),
    "single-with-devices": (["hardware.devices=2"], "parallelism=single runs one process but hardware.devices=2"),
    "unknown-task": (["task=fly"], "task=fly is unknown; valid: "),
    "tokenizer": (["data.tokenizer=wordpiece"], "data.tokenizer=wordpiece is unknown; valid: byte, bpe, gpt2"),
    "missing-prepared-dir": (
        ["data.prepared_dir=/nonexistent/data"],
        "data.prepared_dir=/nonexistent/data is not a prepared dataset",
    ),
    "zero-without-sharding": (["zero=2"], "zero.stage=2 needs a sharded strategy, but parallelism=single"),
    "fp16-on-cpu": (["trainer.precision=16-mixed"], "trainer.precision=16-mixed (fp16) is not supported on CPU"),
    "negative": (["trainer.micro_batch_size=-4"], "trainer.micro_batch_size=-4 must be a positive number"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_message(name):
    overrides, message = CASES[name]
    with pytest.raises(ConfigError) as info:
        validate(compose(*overrides))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as info:
        validate(compose("model.n_embd=100", "model.n_head=3", "task=fly"))
    assert "model.n_embd=100" in str(info.value) and "task=fly" in str(info.value)


def test_more_devices_than_the_machine_has():
    cfg = compose(
        "parallelism=ddp",
        f"hardware.devices={(os.cpu_count() or 1) * 4}",
        "trainer.global_batch_size=1024",
        "trainer.micro_batch_size=1",
    )
    validate(cfg)  # valid as a plan for another machine...
    with pytest.raises(ConfigError, match=r"CPU processes but this machine has \d+ cores"):
        validate(cfg, launching=True)  # ...but not launchable here
    gpu = compose(
        "parallelism=ddp", "hardware=a100-80g-x8", "trainer.global_batch_size=128", "trainer.micro_batch_size=2"
    )
    with pytest.raises(
        ConfigError,
        match="hardware.devices=8 GPUs per node but this machine has 0; use hardware.devices<=0 or hardware=cpu",
    ):
        validate(gpu, launching=True)


def test_default_config_is_valid():
    assert validate(compose(), launching=True).accumulate == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["parallelism=ddp", "hardware.devices=2", "trainer.global_batch_size=12", "trainer.micro_batch_size=4"],
            "trainer.global_batch_size=12 is not divisible",
        ),
        (["data=text", "data.source=/nonexistent/corpus.txt"], "data.source=/nonexistent/corpus.txt does not exist"),
        (["data.max_bytes=20000", "model.block_size=1024"], "corpus too short"),
        (["data.tokenizer=sentencepiece"], "data.tokenizer=sentencepiece is unknown"),
    ],
    ids=["batch", "missing-path", "short-corpus", "tokenizer"],
)
def test_cli_refuses_with_one_line_and_leaves_existing_run_dir_untouched(tmp_path, overrides, message):
    run_dir = tmp_path / "existing-run"
    run_dir.mkdir()
    (run_dir / "keep.txt").write_text("earlier results")
    proc = run_bigtrain(*NANO, *SMALL_DATA, *overrides, run_dir=run_dir, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("bigtrain: error: ") and message in lines[-1], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == ["keep.txt"]
    assert (run_dir / "keep.txt").read_text() == "earlier results"


@pytest.mark.slow
def test_cli_refusal_removes_the_empty_run_dir_hydra_made(tmp_path):
    run_dir = tmp_path / "fresh-run"
    proc = run_bigtrain("model.n_head=7", run_dir=run_dir, timeout=120)
    assert proc.returncode == 2 and "model.n_embd=192 is not divisible by model.n_head=7" in proc.stderr
    assert not run_dir.exists()
