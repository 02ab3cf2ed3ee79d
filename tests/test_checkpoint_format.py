"""Fast checks of the one format-detection place (bigtrain/parallel/checkpoint_format.py) and of the cross-layout
decision's refusals, on small files written here in bigtrain's own formats (the multi-process formats written by
the real strategies are covered by tests/test_layout_matrix.py and tests/test_resume_layouts.py)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from bigtrain.config import layout_of
from bigtrain.errors import BigtrainError
from bigtrain.parallel.checkpoint_format import check_same_shape, describe
from bigtrain.training.cross_layout import checkpoint_for_layout, same_layout
from tests.conftest import compose

NANO = ["model=nano", "trainer.global_batch_size=8", "trainer.micro_batch_size=4"]


def _save(path, cfg, step=4):
    blob = {"global_step": step, "state_dict": {}, "bigtrain_config": OmegaConf.to_container(cfg, resolve=True)}
    torch.save(blob, path)
    return path


def test_a_lightning_file_says_its_layout_step_and_shape(tmp_path):
    cfg = compose(*NANO, "parallelism=ddp", "hardware.devices=2")
    fmt = describe(_save(tmp_path / "step-0000004.ckpt", cfg))
    assert (fmt.format, fmt.parallelism, fmt.world, fmt.step) == ("lightning", "ddp", 2, 4)
    assert fmt.shape["n_layer"] == cfg.model.n_layer and "moe" not in fmt.shape  # dense: no MoE settings shown
    assert "parallelism=ddp world=2, step 4" in fmt.summary_line()
    assert same_layout(fmt, layout_of(cfg)) and not same_layout(fmt, layout_of(compose(*NANO)))


def test_another_model_shape_is_refused_naming_both(tmp_path):
    fmt = describe(_save(tmp_path / "a.ckpt", compose(*NANO)))
    with pytest.raises(BigtrainError) as e:
        check_same_shape(fmt, compose(*NANO, "model.n_layer=3").model)
    line = str(e.value)
    assert "\n" not in line and "checkpoint n_layer=2 vs this run's n_layer=3" in line, line


def test_a_pipeline_checkpoint_is_refused_in_one_line_under_another_layout(tmp_path):
    folder = tmp_path / "step-0000004.ckpt"
    folder.mkdir()
    _save(folder / "rank-0.ckpt", compose(*NANO, "parallelism=pipeline", "hardware.devices=2"))
    _save(folder / "rank-1.ckpt", compose(*NANO, "parallelism=pipeline", "hardware.devices=2"))
    assert describe(folder).format == "pipeline"
    single = compose(*NANO)
    with pytest.raises(BigtrainError, match="pipeline checkpoint .* cannot be converted to another layout yet"):
        checkpoint_for_layout(single, layout_of(single), folder, tmp_path / "run", log=lambda line: None)
    assert not (tmp_path / "run").exists()


def test_no_checkpoint_is_one_line(tmp_path):
    with pytest.raises(BigtrainError, match="no checkpoint bigtrain knows"):
        describe(tmp_path)
