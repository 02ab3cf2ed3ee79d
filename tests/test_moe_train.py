"""tiny-moe trained end to end on one process through the real CLI: the loss falls, the routing metrics reach
metrics.csv and summary.json, a resume from a mid-run checkpoint repeats the uninterrupted run's losses exactly, and
the checkpoint consolidates (the plain GPT loads it) and generates.

Independent single-process runs go side by side (one torch thread each, two cores; a run's losses do not depend on
what else runs): the 12-step run beside the 2-layer reference of the data-parallel tests, then its resume beside
task=consolidate and task=generate on its checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from tests.conftest import SMALL_DATA, assert_ok, finish, read_summary, run_bigtrain, start_bigtrain

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
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # every run of the module: the resume repeats the run bit for bit


def rows(run_dir: Path) -> dict[int, dict]:
    with open(run_dir / "metrics.csv") as f:
        return {int(r["step"]): r for r in csv.DictReader(f) if r.get("train/loss")}


@pytest.fixture(scope="module")
def trained(one_process_started, tmp_path_factory):
    """The 12-step run; the one-process reference of the data-parallel tests trains beside it."""
    run_dir = tmp_path_factory.mktemp("moe") / "run"
    assert_ok(run_bigtrain(*RUN, run_dir=run_dir, env=ONE_THREAD))
    return run_dir


@pytest.fixture(scope="module")
def continued(trained, tmp_path_factory) -> dict[str, Path]:
    """From the trained run, side by side: its resume from the step-6 checkpoint, task=consolidate of its last
    checkpoint and task=generate from its run dir."""
    root = tmp_path_factory.mktemp("continued")
    gen = ["task=generate", f"ckpt={trained}", "prompt=def", "generate.max_new_tokens=20"]
    runs = {
        "resumed": [*RUN, f"resume={trained / 'checkpoints' / 'step-0000006.ckpt'}"],
        "cons": ["task=consolidate", f"ckpt={trained / 'checkpoints' / 'last.ckpt'}"],
        "gen": gen,
    }
    procs = {name: start_bigtrain(*o, run_dir=root / name, env=ONE_THREAD) for name, o in runs.items()}
    for result in [finish(proc) for proc in procs.values()]:  # every run ended before any is judged
        assert_ok(result)
    return {name: root / name for name in runs}


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
def test_resume_repeats_the_run_exactly(trained, continued):
    run_dir = continued["resumed"]
    ref, got = rows(trained), rows(run_dir)
    for step in range(6, 12):
        for key in ("train/loss", "moe/aux_loss", "moe/dropped_frac"):
            assert got[step][key] == ref[step][key], (step, key)
    assert read_summary(run_dir)["final_val_loss"] == read_summary(trained)["final_val_loss"]


@pytest.mark.slow
def test_consolidate_and_generate(continued):
    from bigtrain.model import GPT, GPTConfig

    out = continued["cons"]
    sd = torch.load(out / "consolidated.pt", weights_only=True)
    gpt = GPT(GPTConfig(**sd["model"]))
    gpt.load_state_dict(sd["state_dict"])
    assert gpt.config.moe.n_experts == 8 and gpt.moe_stats() == {}
    gen = continued["gen"]
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
def one_process_started(tmp_path_factory):
    """Started at once (the first slow test asks for `trained`, which asks for this): it needs nothing else."""
    run_dir = tmp_path_factory.mktemp("moe1") / "run"
    # trainer.val_batches counts per rank: one process validates on the two batches the two ranks share out.
    proc = start_bigtrain(*TWO, "trainer.val_batches=2", run_dir=run_dir, env=ONE_THREAD)
    yield run_dir, proc
    if proc.returncode is None:  # a selection that never read it (-k): wait for it, leave nothing running
        finish(proc)


@pytest.fixture(scope="module")
def one_process(one_process_started):
    run_dir, proc = one_process_started
    assert_ok(finish(proc))
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
