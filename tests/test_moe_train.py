"""tiny-moe trained end to end on one process through the real CLI: the loss falls, the routing metrics reach
metrics.csv and summary.json, a resume from a mid-run checkpoint repeats the uninterrupted run's losses exactly, and
the checkpoint consolidates (the plain GPT loads it) and generates."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from tests.conftest import SMALL_DATA, assert_ok, read_summary, run_bigtrain

RUN = [
    "model=tiny-moe",
    "trainer.max_steps=12",
    "trainer.val_check_interval=6",
    "trainer.val_batches=2",
    "trainer.global_batch_size=8",
    "trainer.micro_batch_size=4",
    "trainer.log_every_n_steps=1",
    "trainer.checkpoint_every_n_steps=6",
    "trainer.progress=false",
    "trainer.sample_tokens=16",
    "optim.warmup_steps=2",
    *SMALL_DATA,
]


def rows(run_dir: Path) -> dict[int, dict]:
    with open(run_dir / "metrics.csv") as f:
        return {int(r["step"]): r for r in csv.DictReader(f) if r.get("train/loss")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("moe") / "run"
    assert_ok(run_bigtrain(*RUN, run_dir=run_dir))
    return run_dir


@pytest.mark.slow
def test_tiny_moe_trains_and_reports_routing(trained):
    s = read_summary(trained)
    assert s["status"] == "completed" and s["steps"] == 12
    assert s["final_val_loss"] < 0.8 * s["first_val_loss"]
    load = s["moe_load_mean"]
    assert len(load) == 8 and sum(load) == pytest.approx(1.0, abs=1e-4) and min(load) > 0
    assert 0.0 <= s["moe_dropped_frac_mean"] < 1.0 and s["moe_aux_loss_mean"] >= 1.0 - 1e-3  # E sum f P >= ~1
    row = rows(trained)[5]
    assert {f"moe/load_e{i}" for i in range(8)} <= {k for k, v in row.items() if v}
    assert float(row["moe/load_max"]) >= 1 / 8 >= float(row["moe/load_min"])


@pytest.mark.slow
def test_resume_repeats_the_run_exactly(trained, tmp_path):
    ckpt = trained / "checkpoints" / "step-0000006.ckpt"
    run_dir = tmp_path / "resumed"
    assert_ok(run_bigtrain(*RUN, f"resume={ckpt}", run_dir=run_dir))
    ref, got = rows(trained), rows(run_dir)
    for step in range(6, 12):
        for key in ("train/loss", "moe/aux_loss", "moe/dropped_frac"):
            assert got[step][key] == ref[step][key], (step, key)
    assert read_summary(run_dir)["final_val_loss"] == read_summary(trained)["final_val_loss"]


@pytest.mark.slow
def test_consolidate_and_generate(trained, tmp_path):
    from bigtrain.model import GPT, GPTConfig

    out = tmp_path / "cons"
    assert_ok(run_bigtrain("task=consolidate", f"ckpt={trained / 'checkpoints' / 'last.ckpt'}", run_dir=out))
    sd = torch.load(out / "consolidated.pt", weights_only=True)
    gpt = GPT(GPTConfig(**sd["model"]))
    gpt.load_state_dict(sd["state_dict"])
    assert gpt.config.moe.n_experts == 8 and gpt.moe_stats() == {}
    gen = tmp_path / "gen"
    proc = run_bigtrain("task=generate", f"ckpt={trained}", "prompt=def", "generate.max_new_tokens=20", run_dir=gen)
    assert_ok(proc)
    saved = json.loads((gen / "generated.json").read_text())
    assert saved["prompt"] == "def" and len(saved["completions"]) == 1 and saved["completions"][0]


TWO = [
    "model=tiny-moe",
    "model.n_layer=2",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.val_batches=1",
    "trainer.global_batch_size=8",
    "trainer.micro_batch_size=4",
    "trainer.log_every_n_steps=1",
    "trainer.progress=false",
    "trainer.sample_tokens=8",
    "optim.warmup_steps=2",
    *SMALL_DATA,
]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("moe1") / "run"
    # trainer.val_batches counts per rank: one process validates on the two batches the two ranks share out.
    assert_ok(run_bigtrain(*TWO, "trainer.val_batches=2", run_dir=run_dir))
    return read_summary(run_dir)


@pytest.mark.slow
@pytest.mark.parametrize("layout", [["parallelism=ddp"], ["parallelism=deepspeed", "zero=2"], ["parallelism=fsdp"]])
def test_data_parallel_layouts_follow_the_single_process_run(one_process, layout, tmp_path):
    """Every data-parallel strategy MoE allows (bigtrain/config/moe_rules.py) on 2 CPU processes: each rank routes
    its own micro-batch with its own capacity, which is what one process accumulating the same two micro-batches
    does, so the validation losses agree. (The routing means in summary.json are rank zero's micro-batches only.)"""
    run_dir = tmp_path / "run"
    assert_ok(run_bigtrain(*TWO, "hardware.devices=2", *layout, run_dir=run_dir))
    s = read_summary(run_dir)
    assert s["final_val_loss"] == pytest.approx(one_process["final_val_loss"], abs=1e-5)
    assert s["world_size"] == 2 and s["moe_aux_loss_mean"] > 0
