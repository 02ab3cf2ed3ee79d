"""parallelism.ep=2 through the real `python -m bigtrain` path on 2 CPU processes (gloo), against ep=1: the same
global batch, seed and data, capacity large enough that nothing drops, 20 fp32 steps with gradient clipping on.

- DDP: rank zero's training loss agrees with ep=1 within 1e-5 at every step; each rank holds exactly half of the
  expert parameter bytes (held_numel_per_rank in summary.json counts the live tensors of each rank); the dense
  replicas stay bit-identical; the checkpoint holds the whole experts (layout-free).
- A mid-run ep=2 checkpoint resumes exactly at ep=2 and within 1e-5 at ep=1 (another layout); the run generates.
- FSDP (zero=2, the dense part sharded) with ep=2 follows the same curve; its sharded checkpoint
  (torch.distributed.checkpoint) resumes exactly and consolidates into the plain GPT with both ranks' experts.

(Replaces the hand-written training loop of the layer-level test: this is the same proof through the real path.)

Runs that do not need each other go side by side (one torch thread per rank, so that a resumed run repeats its
source bit for bit): ep=1, ep=2 and FSDP ep=2 first; then the two resumes of the ep=2 checkpoint, the FSDP resume,
task=generate and task=consolidate.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from tests.conftest import SMALL_DATA, assert_ok, finish, read_summary, start_bigtrain

STEPS = 20
RUN = [
    "model=tiny-moe",
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=64",
    "model.ffn_hidden_size=128",
    "model.block_size=32",
    "model.moe.n_experts=4",
    "model.moe.capacity_factor=4",  # capacity = every token: nothing drops, so ep cannot change the routing
    "model.moe.eval_capacity_factor=4",
    "hardware.devices=2",
    "trainer.precision=32-true",
    f"trainer.max_steps={STEPS}",
    "trainer.global_batch_size=8",
    "trainer.micro_batch_size=4",
    "trainer.log_every_n_steps=1",
    "trainer.val_check_interval=10",
    "trainer.val_batches=1",
    "trainer.checkpoint_every_n_steps=10",
    "trainer.progress=false",
    "trainer.sample_tokens=8",
    "optim.grad_clip=1.0",
    *SMALL_DATA,
]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def losses(run_dir: Path, key: str = "train/loss") -> dict[int, float]:
    with open(run_dir / "metrics.csv") as f:
        return {int(r["step"]): float(r[key]) for r in csv.DictReader(f) if r.get(key)}


def expert_numel() -> int:
    from bigtrain.model import GPT, GPTConfig
    from bigtrain.parallel.expert_parallel import expert_parameters

    moe = {"n_experts": 4, "top_k": 2, "capacity_factor": 4.0, "eval_capacity_factor": 4.0}
    with torch.device("meta"):
        gpt = GPT(
            GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=32, vocab_size=256, ffn_hidden_size=128, moe=moe)
        )
    return sum(p.numel() for p in expert_parameters(gpt))


def side_by_side(tmp_path_factory, runs: dict[str, list[str]]) -> dict[str, Path]:
    """Start every run (name -> overrides) at once, wait for all; each one's run dir."""
    dirs = {name: tmp_path_factory.mktemp(name) / "run" for name in runs}
    procs = [start_bigtrain(*overrides, run_dir=dirs[name], env=ONE_THREAD) for name, overrides in runs.items()]
    for result in [finish(proc) for proc in procs]:  # every run ended before any is judged
        assert_ok(result)
    return dirs


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    return side_by_side(
        tmp_path_factory,
        {
            "ep1": [*RUN, "parallelism=ddp"],
            "ep2": [*RUN, "parallelism=ddp", "parallelism.ep=2"],
            "fsdp": [*RUN, "parallelism=fsdp", "zero=2", "parallelism.ep=2"],
        },
    )


@pytest.fixture(scope="module")
def ep1(trained):
    return trained["ep1"]


@pytest.fixture(scope="module")
def ep2(trained):
    return trained["ep2"]


@pytest.fixture(scope="module")
def continued(ep2, fsdp, tmp_path_factory) -> dict[str, Path]:
    """From the step-10 checkpoints: ep=2's resumed at ep=2 and at ep=1, FSDP's resumed; generation from the ep=2
    run and task=consolidate of FSDP's last (sharded) checkpoint."""
    ckpt = f"resume={ep2 / 'checkpoints' / 'step-0000010.ckpt'}"
    fsdp_ckpt = f"resume={fsdp / 'checkpoints' / 'step-0000010.ckpt'}"
    return side_by_side(
        tmp_path_factory,
        {
            "res2": [*RUN, "parallelism=ddp", "parallelism.ep=2", ckpt],
            "res1": [*RUN, "parallelism=ddp", ckpt],
            "fres": [*RUN, "parallelism=fsdp", "zero=2", "parallelism.ep=2", fsdp_ckpt],
            "gen": ["task=generate", f"ckpt={ep2}", "prompt=def", "generate.max_new_tokens=8"],
            "cons": ["task=consolidate", f"ckpt={fsdp / 'checkpoints' / 'last.ckpt'}"],
        },
    )


@pytest.mark.slow
def test_ddp_ep2_matches_ep1_and_holds_half_the_experts(ep1, ep2):
    a, b = losses(ep1), losses(ep2)
    assert sorted(a) == sorted(b) == list(range(STEPS))
    assert max(abs(a[k] - b[k]) for k in a) < 1e-5
    assert a[STEPS - 1] < 0.85 * a[0]
    # the logged gradient norm is the whole model's (every rank's experts), as ep=1 logs it
    g1, g2 = losses(ep1, "train/grad_norm"), losses(ep2, "train/grad_norm")
    assert g1 and sorted(g1) == sorted(g2)
    assert max(abs(g1[k] - g2[k]) / g1[k] for k in g1) < 1e-5
    s1, s2 = read_summary(ep1), read_summary(ep2)
    assert s1["moe_dropped_frac_mean"] == s2["moe_dropped_frac_mean"] == 0.0
    assert (s2["layout"]["ep"], s2["layout"]["edp"], s2["strategy"]) == (2, 1, "ExpertParallelDDPStrategy")
    n, e = s2["n_params"], expert_numel()
    assert n == s1["n_params"] and s1["held_numel_per_rank"]["params"] == [n, n]
    # fp32: 4 bytes each; a rank's expert bytes = what it holds less the (whole) dense part.
    expert_bytes = [4 * (held - (n - e)) for held in s2["held_numel_per_rank"]["params"]]
    assert expert_bytes == [4 * e // 2, 4 * e // 2]
    assert s2["held_numel_per_rank"]["optimizer_states"] == s2["held_numel_per_rank"]["params"]
    assert s2["replicas_identical"] is True  # the dense parameters: experts differ by design
    ckpt = torch.load(ep2 / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    w_in = ckpt["state_dict"]["model.transformer.h.0.mlp.experts.w_in"]
    assert w_in.shape == (4, 64, 128)  # whole: both ranks' experts
    states = ckpt["optimizer_states"][0]["state"]
    assert any(s["exp_avg"].shape == (4, 64, 128) for s in states.values())
    assert s2["final_val_loss"] == pytest.approx(s1["final_val_loss"], abs=1e-5)


@pytest.mark.slow
def test_ep2_checkpoint_resumes_exactly_and_at_ep1(ep2, continued):
    ref = losses(ep2)
    same = losses(continued["res2"])
    assert sorted(same) == list(range(10, STEPS)) and all(same[k] == ref[k] for k in same)
    other = losses(continued["res1"])
    assert max(abs(other[k] - ref[k]) for k in other) < 1e-5


@pytest.mark.slow
def test_ep2_run_generates(continued):
    gen = continued["gen"]
    assert json.loads((gen / "generated.json").read_text())["completions"][0]


@pytest.fixture(scope="module")
def fsdp(trained):
    return trained["fsdp"]


@pytest.mark.slow
def test_fsdp_ep2_matches_ep1(ep1, fsdp):
    a, b = losses(ep1), losses(fsdp)
    assert max(abs(a[k] - b[k]) for k in a) < 1e-5
    s, n, e = read_summary(fsdp), read_summary(ep1)["n_params"], expert_numel()
    assert (s["layout"]["ep"], s["layout"]["dp_shard"]) == (2, 2)
    assert s["held_numel_per_rank"]["params"] == [(n - e) // 2 + e // 2] * 2  # dense sharded by FSDP, experts by ep


@pytest.mark.slow
def test_fsdp_ep2_sharded_checkpoint_resumes_exactly_and_consolidates(ep2, fsdp, continued):
    ckpt = fsdp / "checkpoints" / "step-0000010.ckpt"
    assert (ckpt / "COMPLETE").exists()  # torch.distributed.checkpoint's folder: every rank wrote its part
    ref = losses(fsdp)
    got = losses(continued["fres"])
    assert sorted(got) == list(range(10, STEPS)) and all(got[k] == ref[k] for k in got)
    out = continued["cons"]
    whole = torch.load(out / "consolidated.pt", weights_only=True)["state_dict"]
    ddp = torch.load(ep2 / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")["state_dict"]
    experts = [k for k in whole if ".experts." in k]
    assert experts and all(whole[k].shape[0] == 4 for k in experts)
    # The same training on another engine: both ranks' experts, each where it belongs.
    assert max((whole[k] - ddp[f"model.{k}"]).abs().max().item() for k in experts) < 1e-5
