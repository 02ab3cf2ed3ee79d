"""Bad input of every kind ends in one line of bigtrain's own error type; NaNs are never silent; secrets stay out
of written files; `_target_` is allow-listed."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml

from bigtrain.config.validate import validate
from bigtrain.data import prepare, read_meta
from bigtrain.errors import ConfigError, DataError
from bigtrain.training.guards import NonFiniteError, NonFiniteGuard
from tests.conftest import NANO, SMALL_DATA, assert_ok, compose, read_summary, run_bigtrain

# ---------------------------------------------------------------- config fuzz

# The generated override-set fuzz lives in tests/test_config_fuzz.py.


@pytest.mark.slow
def test_cli_typo_is_one_bigtrain_line(tmp_path):
    proc = run_bigtrain("model.n_layr=3", run_dir=tmp_path / "run", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert (
        proc.stderr.startswith("bigtrain: error: Could not override 'model.n_layr'")
        and "valid keys there: name, n_layer" in proc.stderr
    )


# ---------------------------------------------------------------- NaN / inf


class _Poisoned(pl.LightningModule):
    """A linear model whose loss turns NaN at one step (a real Trainer; the poison stands in for a blow-up)."""

    def __init__(self, bad_step: int):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.bad_step = bad_step

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        return loss * float("nan") if self.global_step == self.bad_step else loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.1)

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.randn(64, 4))
        return torch.utils.data.DataLoader(data, batch_size=8)


def _fit(tmp_path: Path, policy: str, module: pl.LightningModule) -> NonFiniteGuard:
    guard = NonFiniteGuard(policy, tmp_path / "checkpoints")
    trainer = pl.Trainer(
        max_steps=6,
        callbacks=[guard],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(module)
    return guard


def test_nonfinite_step_is_skipped_without_touching_weights(tmp_path):
    torch.manual_seed(0)
    module = _Poisoned(bad_step=3)
    snapshots = []
    module.on_train_batch_start = lambda batch, idx: snapshots.append(module.layer.weight.detach().clone())
    guard = _fit(tmp_path, "skip", module)
    assert guard.skipped == [3]
    assert torch.equal(snapshots[3], snapshots[4])  # the poisoned step changed nothing
    assert not torch.equal(snapshots[2], snapshots[3]) and torch.isfinite(module.layer.weight).all()


def test_nonfinite_stop_names_the_step_and_last_checkpoint(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "step-0000002.ckpt").write_bytes(b"")
    with pytest.raises(
        NonFiniteError, match=r"non-finite loss or gradients at step 3; the last good checkpoint is .*step-0000002.ckpt"
    ):
        _fit(tmp_path, "stop", _Poisoned(bad_step=3))


@pytest.mark.slow
def test_cli_nan_stop_is_one_line(tmp_path):
    """A learning rate of 1e30 overflows the weights within a few steps: a real blow-up, stopped with one line."""
    proc = run_bigtrain(
        *NANO, "optim.lr=1e30", "optim.min_lr=0", "optim.warmup_steps=0", "optim.grad_clip=0", run_dir=tmp_path / "run"
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("bigtrain: error: non-finite loss or gradients at step "), proc.stderr[-3000:]


# ---------------------------------------------------------------- bad data


def _data_cfg(tmp_path: Path, source: str, **extra):
    cfg = compose("data=text", f"data.source={source}", *(f"data.{k}={v}" for k, v in extra.items())).data
    cfg.cache_dir = str(tmp_path / "cache")
    return cfg


def test_bad_data_each_ends_in_a_clear_data_error(tmp_path):
    binary = tmp_path / "weights.txt"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("naïve café".encode("latin-1"))
    cases = {
        str(binary): "looks binary (NUL bytes)",
        str(empty): "is empty",
        str(latin): "is not UTF-8 text (bad byte at offset",
        str(tmp_path / "missing.txt"): "does not exist",
        "/proc/self/mem": "cannot read /proc/self/mem",  # a file that exists but cannot be read, even by root
    }
    for source, message in cases.items():
        with pytest.raises(DataError, match=None) as info:
            prepare(_data_cfg(tmp_path, source, tokenizer="byte"), progress=False)
        assert message in str(info.value) and "\n" not in str(info.value), (source, str(info.value))


def test_half_written_preparation_is_never_loaded(tmp_path):
    src = tmp_path / "corpus.txt"
    src.write_text("some text to tokenize. " * 2000)
    folder = prepare(_data_cfg(tmp_path, str(src), tokenizer="byte"), progress=False)
    assert not list(folder.parent.glob("*.tmp-*"))  # built under a temporary name, renamed into place
    with open(folder / "train.bin", "r+b") as f:  # same size, different bytes: only the checksum can tell
        f.seek(10)
        f.write(b"\xff\xff")
    with pytest.raises(DataError, match="does not match its sha256 in meta.json"):
        read_meta(folder)


def test_vocabulary_too_large_for_uint16(tmp_path):
    src = tmp_path / "corpus.txt"
    src.write_text("abc " * 1000)
    folder = prepare(_data_cfg(tmp_path, str(src), tokenizer="byte"), progress=False)
    meta_path = folder / "meta.json"
    meta_path.write_text(meta_path.read_text().replace('"vocab_size": 256', '"vocab_size": 70000'))
    with pytest.raises(DataError, match="vocab_size 70000 does not fit the uint16 token files"):
        read_meta(folder)


# ---------------------------------------------------------------- secrets and _target_


@pytest.mark.slow
def test_secrets_from_the_environment_never_reach_written_files(tmp_path):
    secret = "sk-test-0123456789abcdef"
    run_dir = tmp_path / "run"
    proc = run_bigtrain(
        *NANO,
        *SMALL_DATA,
        "trainer.max_steps=2",
        "logger.run_name=${oc.env:WANDB_API_KEY}",
        "+notes.db_password=hunter22",
        run_dir=run_dir,
        env={"WANDB_API_KEY": secret},
    )
    assert_ok(proc)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["logger"]["run_name"] == "***" and config["notes"]["db_password"] == "***"
    for path in run_dir.rglob("*"):
        if path.is_file() and path.suffix in {".yaml", ".json", ".csv", ".txt"}:
            assert secret not in path.read_text() and "hunter22" not in path.read_text(), path
    assert secret not in proc.stdout + proc.stderr
    assert read_summary(run_dir)["status"] == "completed"


def test_target_outside_the_allow_list_is_refused():
    with pytest.raises(ConfigError, match=r"notes.x._target_=os.system is not allowed"):
        validate(compose("+notes.x._target_=os.system"))
    validate(compose("+notes.x._target_=torch.optim.AdamW"))
