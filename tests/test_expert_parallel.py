"""Expert parallelism at the layer level (bigtrain/parallel/expert_parallel.py), 2 CPU processes on gloo: the same
GPT with MoE blocks trained 20 fp32 steps as plain data parallelism (ep=1: every rank holds all experts, all
gradients averaged) and with ep=2 (each rank holds half of every block's experts, tokens travel by all_to_all,
dense gradients averaged, expert gradients scaled to the mean inside the all_to_all and averaged over the
expert-data-parallel group, here of size 1). Same seed,
data and capacity (large enough that nothing drops): the global losses agree within 1e-5 at every step, and each
ep rank holds exactly half of the expert parameter bytes.

A hand-written training loop: the layer's contract without Lightning (tests/test_ep_train.py runs the CLI)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.test_zero import _free_port

STEPS = 20


def _train(rank: int, world: int, port: int, ep: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    from bigtrain.model import GPT, GPTConfig
    from bigtrain.parallel.expert_parallel import expert_parameters, shard_experts

    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64,
                    moe={"n_experts": 4, "top_k": 2, "capacity_factor": 4.0, "eval_capacity_factor": 4.0})  # fmt: skip
    model = GPT(cfg)
    if ep > 1:
        shard_experts(model, ep, rank, dist.group.WORLD)
    expert_bytes = sum(p.numel() * p.element_size() for p in expert_parameters(model))
    experts = {id(p) for p in expert_parameters(model)}
    opt = torch.optim.SGD(model.parameters(), lr=0.3)  # SGD: sensitive to the gradient scale
    data = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(STEPS):
        # Learnable sequences (counting up from a random start, mod 64), each rank its own slice of the batch.
        starts = torch.randint(0, 64, (world, 4, 1), generator=data)[rank]
        batch = (starts + torch.arange(17)) % 64
        _, loss = model(batch[:, :-1], batch[:, 1:])
        stats = model.moe_stats()
        total = loss + 0.01 * stats["aux_loss"] + 0.001 * stats["z_loss"]
        opt.zero_grad()
        total.backward()
        for p in model.parameters():
            if ep == 1 or id(p) not in experts:
                dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
        opt.step()
        mean = total.detach().clone()
        dist.all_reduce(mean, op=dist.ReduceOp.AVG)
        losses.append(mean.item())
    if rank == 0:
        out["losses"], out["dropped"] = losses, stats["dropped_frac"].item()
    out[f"expert_bytes_{rank}"] = expert_bytes
    dist.destroy_process_group()


def run(ep: int) -> dict:
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_train, args=(2, _free_port(), ep, out), nprocs=2, join=True)
        return dict(out)


@pytest.mark.slow
def test_ep2_matches_ep1_over_20_fp32_steps():
    dense, sharded = run(ep=1), run(ep=2)
    assert dense["dropped"] == 0.0 and sharded["dropped"] == 0.0
    assert max(abs(a - b) for a, b in zip(dense["losses"], sharded["losses"], strict=True)) < 1e-5
    assert dense["losses"][-1] < 0.8 * dense["losses"][0]
    assert sharded["expert_bytes_0"] == sharded["expert_bytes_1"] == dense["expert_bytes_0"] / 2
