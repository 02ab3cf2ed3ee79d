"""Every layout trains the Llama-shaped model and computes the same thing: tiny-llama, shrunk to nano size (RMSNorm,
SwiGLU, rotary positions, 2 key/value heads for 4 query heads, untied head), trained 10 fp32 steps of 8 sequences
on the same seed in one process and in 2 CPU processes (gloo) as DDP, DeepSpeed ZeRO-1 with optimizer offload,
ZeRO-3, FSDP (ZeRO-3), tensor parallel (the gate/up/down and narrower k/v plans) and pipeline parallel. Each step's
loss of the whole global batch must equal the single process's within 1e-5.

A data loader item is one micro-batch drawn from (seed, item index) (bigtrain/data/datamodule.py), so the same
sequences need the same item size: the data-parallel runs (2 ranks x 4) are held to a single process that
accumulates 2 micro-batches of 4; tensor and pipeline parallelism (one batch of 8 per step, which the pipeline
splits into 4 micro-batches of 2 itself) to a single process with micro-batches of 8.
All runs go through tests/matrix_worker.py (bigtrain's own `fit`): the two references in one process, the
2-process layouts in one 2-process job, as tests/test_zero.py does, to pay the start-up once; the two jobs side by
side (the worker trains on one thread per rank).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bigtrain.config.validate import validate
from tests.conftest import REPO, SMALL_DATA, compose
from tests.launch import start, wait

STEPS = 10
NANO_LLAMA = [
    "model=tiny-llama",
    "model.n_layer=2",
    "model.n_head=4",
    "model.n_kv_head=2",
    "model.n_embd=32",
    "model.block_size=32",
    "model.ffn_multiple_of=16",  # SwiGLU width 96: tp=2 splits it
]
BASE = [
    *NANO_LLAMA,
    f"trainer.max_steps={STEPS}",
    "trainer.val_check_interval=100",
    "trainer.val_batches=1",
    "trainer.global_batch_size=8",
    "trainer.log_every_n_steps=1",
    "trainer.checkpoint_every_n_steps=0",
    "trainer.progress=false",
    "trainer.sample_tokens=0",
    "optim.warmup_steps=2",
    "optim.decay=constant",
    *SMALL_DATA,
]
TWO = ["hardware.devices=2"]
LAYOUTS = {
    "ddp": ["parallelism=ddp", "trainer.micro_batch_size=4"],
    "zero1-offload": ["parallelism=deepspeed", "zero=1", "offload=cpu", "trainer.micro_batch_size=4"],
    "zero3": ["parallelism=deepspeed", "zero=3", "zero.stage3_param_persistence_threshold=0"]
    + ["trainer.micro_batch_size=4"],
    "fsdp": ["parallelism=fsdp", "zero=3", "trainer.micro_batch_size=4"],
    "tp": ["parallelism=tp", "trainer.micro_batch_size=8"],
    "pp": ["parallelism=pipeline", "trainer.micro_batch_size=2"],
}
TOL = 1e-5
REFERENCES = {"single-4": ["trainer.micro_batch_size=4"], "single-8": ["trainer.micro_batch_size=8"]}
REFERENCE_OF = {"tp": "single-8", "pp": "single-8"}  # the rest: single-4


def _start(root, names: list[str], world: int) -> list[subprocess.Popen]:
    return start(
        [sys.executable, str(REPO / "tests" / "matrix_worker.py"), *(str(root / n) for n in names)], world, root
    )


def _wait(procs: list[subprocess.Popen]) -> None:
    wait(procs, ["matrix_worker.py"])


@pytest.fixture(scope="module")
def layout_losses(tmp_path_factory) -> dict[str, dict[int, float]]:
    from bigtrain.tasks.train import prepared_data, save_run_config

    root = tmp_path_factory.mktemp("llama-layouts")
    data = None
    for name, overrides in [*REFERENCES.items(), *LAYOUTS.items()]:
        cfg = compose(*BASE, *overrides, *(TWO if name in LAYOUTS else []))
        validate(cfg, launching=True)
        data = data or str(prepared_data(cfg, progress=False))
        cfg.data.prepared_dir = data
        save_run_config(cfg, root / name)
    jobs = [_start(root, list(LAYOUTS), world=2), _start(root, list(REFERENCES), world=1)]
    for procs in jobs:  # the longer 2-process job first: its pipes are drained while it runs
        _wait(procs)
    got = {}
    for name in [*REFERENCES, *LAYOUTS]:
        got[name] = {int(k): v for k, v in json.loads((root / name / "losses.json").read_text()).items()}
    return got


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_llama_trains_the_same_in_every_layout(layout_losses, layout):
    ref, got = layout_losses[REFERENCE_OF.get(layout, "single-4")], layout_losses[layout]
    assert sorted(ref) == sorted(got) == list(range(1, STEPS + 1)), (ref, got)
    diffs = {s: abs(got[s] - ref[s]) for s in ref}
    print(f"{layout}: max |loss - single| over {STEPS} steps: {max(diffs.values()):.2e}")
    assert max(diffs.values()) < TOL, (layout, diffs, ref, got)
    assert ref[STEPS] < ref[1] - 0.1  # it learns, so matching is not matching a constant
