"""Run under torchrun by tests/test_model_parallel.py: build a GPT, split it as parallelism=tp / pipeline does (the
same `parallelize_gpt` / `GPTStage` the strategies call), and write what this rank holds to OUT/rank-R.json.

usage: torchrun --standalone --nproc-per-node N tests/shard_worker.py OUT N_LAYER N_HEAD N_EMBD BLOCK VOCAB
writes OUT/tp/rank-R.json and OUT/pipeline/rank-R.json (one process start for both splits)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from bigtrain.model.gpt import GPT, GPTConfig


def local(p: torch.Tensor) -> torch.Tensor:
    return p.to_local() if hasattr(p, "to_local") else p


def split(out: Path, mode: str, n_layer: int, n_head: int, n_embd: int, block: int, vocab: int) -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block, vocab_size=vocab))
    if mode == "tp":
        from torch.distributed.device_mesh import init_device_mesh

        from bigtrain.parallel.tensor_parallel import DP, TP, parallelize_gpt

        mesh = init_device_mesh("cpu", (1, world), mesh_dim_names=(DP, TP))
        model = parallelize_gpt(gpt, mesh, fsdp=False)
    else:
        from bigtrain.parallel.pipeline import GPTStage

        model = GPTStage(gpt, rank, world)
        del gpt
    params = dict(model.named_parameters())  # tied weights once
    record = {
        "rank": rank,
        "param_bytes": sum(local(p).numel() * local(p).element_size() for p in params.values()),
        "shapes": {name: list(local(p).shape) for name, p in params.items()},
        "full_shapes": {name: list(p.shape) for name, p in params.items()},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank-{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    a = sys.argv[1:]
    dist.init_process_group("gloo")
    for mode in ("tp", "pipeline"):
        split(Path(a[0]) / mode, mode, *map(int, a[1:6]))
    dist.destroy_process_group()
