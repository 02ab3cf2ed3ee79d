"""The Layout: how a run is split, derived once from the composed config, frozen, torch-free, self-checking."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import FrozenInstanceError, replace

import pytest

from bigtrain.config import validate
from bigtrain.config.layout import Layout, ends_accumulation, layout_of
from bigtrain.errors import ConfigError
from tests.conftest import compose


def test_sizes_of_every_strategy():
    ddp = Layout(parallelism="ddp", devices=4, nodes=2, micro_batch_size=2, global_batch_size=64)
    assert (ddp.world, ddp.dp, ddp.accumulate) == (8, 8, 4)
    assert (ddp.dp_shard, ddp.dp_replicate) == (1, 8)
    assert (ddp.loader_batch_size, ddp.trainer_accumulation, ddp.pipeline_microbatches) == (2, 4, 1)

    single = Layout(parallelism="single", devices=1, micro_batch_size=4, global_batch_size=16)
    assert (single.world, single.dp, single.accumulate, single.trainer_devices) == (1, 1, 4, 1)

    zero1 = replace(ddp, parallelism="deepspeed", zero=1)
    assert (zero1.dp_shard, zero1.dp_replicate) == (8, 1)
    assert replace(ddp, parallelism="fsdp", zero=0).dp_shard == 1  # FSDP NO_SHARD replicates
    assert replace(ddp, parallelism="fsdp", zero=3).dp_shard == 8

    tp = Layout(parallelism="tp", devices=4, tp=2, fsdp=True, micro_batch_size=2, global_batch_size=8)
    assert (tp.dp, tp.dp_shard, tp.accumulate) == (2, 2, 2)

    pipe = Layout(parallelism="pipeline", devices=4, pp=2, micro_batch_size=2, global_batch_size=16)
    assert (pipe.dp, pipe.accumulate, pipe.pipeline_microbatches) == (2, 4, 4)
    # A pipelined rank loads its whole batch at once; the schedule, not the Trainer, accumulates.
    assert (pipe.loader_batch_size, pipe.trainer_accumulation) == (8, 1)


def test_frozen_and_replace_recomputes_derived_sizes():
    a = Layout(parallelism="ddp", devices=2, micro_batch_size=4, global_batch_size=32)
    with pytest.raises(FrozenInstanceError):
        a.dp = 3  # type: ignore[misc]
    b = replace(a, nodes=2)
    assert (a.world, a.dp, a.accumulate) == (2, 2, 4) and (b.world, b.dp, b.accumulate) == (4, 4, 2)


def test_every_broken_rule_in_one_line():
    bad = Layout(parallelism="pipeline", devices=3, pp=2, schedule="1f1b", micro_batch_size=4, global_batch_size=4)
    with pytest.raises(ConfigError) as err:
        bad.check()
    line = str(err.value)
    assert "\n" not in line
    assert "dp(1) x tp(1) x pp(2) = 2 != device count 3" in line
    assert "parallelism.schedule=1f1b needs at least pp=2 micro-batches per step" in line
    assert "parallelism.ep=2 needs a mixture-of-experts model" in "; ".join(replace(bad, ep=2).problems())
    assert Layout(devices=0).problems() == ["hardware.devices=0 must be a positive number"]
    uneven = Layout(parallelism="ddp", devices=2, micro_batch_size=4, global_batch_size=20)
    assert uneven.problems() == [
        "trainer.global_batch_size=20 is not divisible by trainer.micro_batch_size=4 x data-parallel size 2 (= 8); "
        "valid global sizes near it: 16 or 24; valid micro sizes for 20: 1, 2, 5, 10"
    ]
    ok = Layout(parallelism="ddp", devices=2, micro_batch_size=4, global_batch_size=16)
    assert ok.check() is ok and ok.problems() == []


def test_validation_returns_the_layout_of_the_composed_config():
    cfg = compose("parallelism=deepspeed", "zero=2", "hardware.devices=2", "trainer.micro_batch_size=8")
    layout = validate(cfg)
    assert layout == layout_of(cfg)
    assert (layout.parallelism, layout.world, layout.zero, layout.dp_shard) == ("deepspeed", 2, 2, 2)
    assert layout.accumulate == cfg.trainer.global_batch_size // (8 * 2)
    assert layout.as_dict()["dp"] == 2


def test_planner_embeds_the_layout_and_varies_it():
    from bigtrain.plan import setup_from

    cfg = compose("task=plan", "model=gpt2-124m", "hardware=a100-80g-x8", "parallelism=ddp")
    s = setup_from(cfg)
    assert s.layout == layout_of(cfg) and s.dp == 8
    four = s.vary(nodes=4, zero=3, recompute="full")
    assert (four.world, four.dp, four.zero, four.recompute, s.zero) == (32, 32, 3, "full", 0)


def test_last_micro_batch_of_an_accumulation():
    assert [ends_accumulation(i, 3) for i in range(6)] == [False, False, True, False, False, True]
    assert all(ends_accumulation(i, 1) for i in range(4))


def test_layout_and_planner_import_no_torch():
    code = "import sys, bigtrain.config.layout, bigtrain.plan; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_strategy_has_traits():
    from bigtrain.config.layout import PARALLELISMS
    from bigtrain.parallel.traits import TRAITS, traits_of

    assert set(TRAITS) == set(PARALLELISMS)
    deepspeed = traits_of(Layout(parallelism="deepspeed", devices=2, zero=2))
    assert deepspeed.sharded_checkpoint and deepspeed.summary_fields(Layout(parallelism="deepspeed", zero=2)) == {
        "zero_stage": 2
    }
    assert traits_of(Layout(parallelism="ddp", devices=2)).summary_fields(Layout(zero=0)) == {"zero_stage": None}
    assert traits_of(Layout(parallelism="pipeline", devices=2, pp=2)).manual_optimization
