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


def test_a_weights_only_checkpoint_is_refused_in_one_line_under_another_layout(tmp_path):
    """task=quantize's int8 file holds no optimizer state: it cannot carry a run to another layout."""
    path = tmp_path / "int8.ckpt"
    torch.save(
        {"quantization": "int8", "state_dict": {}, "bigtrain_config": OmegaConf.to_container(compose(*NANO))}, path
    )
    assert describe(path).format == "int8"
    ddp = compose(*NANO, "parallelism=ddp", "hardware.devices=2")
    with pytest.raises(BigtrainError, match="int8 checkpoint .* cannot be converted to another layout yet"):
        checkpoint_for_layout(ddp, layout_of(ddp), path, tmp_path / "run", log=lambda line: None)
    assert not (tmp_path / "run").exists()


def test_pipeline_and_tensor_parallel_layouts_are_told_apart(tmp_path):
    folder = tmp_path / "step-0000004.ckpt"
    folder.mkdir()
    pipeline = compose(*NANO, "parallelism=pipeline", "hardware.devices=2")
    _save(folder / "rank-0.ckpt", pipeline)
    _save(folder / "rank-1.ckpt", pipeline)
    fmt = describe(folder)
    assert (fmt.format, fmt.pp, fmt.world) == ("pipeline", 2, 2)
    assert same_layout(fmt, layout_of(pipeline)) and not same_layout(fmt, layout_of(compose(*NANO)))
    tp, tp_fsdp = (compose(*NANO, f"parallelism={p}", "hardware.devices=2") for p in ("tp", "tp-fsdp"))
    fmt = describe(_save(tmp_path / "tp.ckpt", tp))
    assert same_layout(fmt, layout_of(tp)) and not same_layout(fmt, layout_of(tp_fsdp))  # FSDP2 on top differs


def test_no_checkpoint_is_one_line(tmp_path):
    with pytest.raises(BigtrainError, match="no checkpoint bigtrain knows"):
        describe(tmp_path)
