"""One rank of a plain DDP model with bigtrain's DDP settings, for tests/test_step_overhead.py.

    RANK=r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=p python tests/ddp_nonfinite_worker.py nan|inf OUT_DIR

Three steps; at step 1 only rank 1's loss is multiplied by POISON. Each rank writes OUT_DIR/rank<r>: the list of its
local "every gradient finite" verdicts after DDP's all-reduce, one per step.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
from omegaconf import OmegaConf

from bigtrain.parallel.strategy import ddp_settings
from bigtrain.parallel.teardown import leave_process_group


def main(poison: str, out: str) -> None:
    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    settings = ddp_settings(
        OmegaConf.create({"model": {"moe": {"n_experts": 0}}}), SimpleNamespace(trainer_accumulation=1)
    )
    assert settings == {"gradient_as_bucket_view": True, "static_graph": True}, settings
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 4), **settings)
    verdicts = []
    for step in range(3):
        loss = model(torch.randn(2, 4)).pow(2).mean()
        if rank == 1 and step == 1:
            loss = loss * float(poison)  # only rank 1's loss blows up
        loss.backward()
        verdicts.append(all(bool(torch.isfinite(p.grad).all()) for p in model.parameters()))
        for p in model.parameters():
            p.grad = None  # as the guard's skip and zero_grad(set_to_none) leave them
    Path(out, f"rank{rank}").write_text(repr(verdicts))
    # DDP's reducer holds the process group: freed after destroy_process_group, it would run the gloo group's
    # destructor with the GIL held, which deadlocks when a gloo thread still needs the GIL (seen under load).
    del model
    leave_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
