"""One rank of a 2-process CPU job that trains several recorded configs in sequence (tests/test_llama_layouts.py).

    MASTER_ADDR=.. MASTER_PORT=.. WORLD_SIZE=2 RANK=r LOCAL_RANK=r NODE_RANK=0 python tests/layout_worker.py RUN_DIR...

Like tests/zero_worker.py (one process group, bigtrain's own `fit` per RUN_DIR/config.yaml), but what it records
works for every layout, pipeline included, and for a single process (WORLD_SIZE=1, parallelism=single): per
optimizer step, the loss of the whole global batch, i.e. the mean of the step's micro-batch losses (Lightning hands
each one over already divided by the accumulation count), averaged over all ranks (data-parallel ranks hold
different parts of the batch; tensor- and pipeline-parallel ranks all hold the same loss). Rank zero writes
RUN_DIR/losses.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.distributed as dist

from bigtrain.parallel.teardown import leave_process_group
from bigtrain.tasks.train import fit
from bigtrain.worker import load_run_config


class GlobalLoss(pl.Callback):
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        loss = outputs["loss"].detach().float().clone().reshape(1)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(loss, op=dist.ReduceOp.AVG)  # every rank: a collective
        step = batch_idx // trainer.accumulate_grad_batches + 1
        self.losses[step] = self.losses.get(step, 0.0) + float(loss)

    def on_train_end(self, trainer, module):
        if trainer.is_global_zero:
            (self.run_dir / "losses.json").write_text(json.dumps(self.losses))


def main(run_dirs: list[str]) -> None:
    torch.set_num_threads(1)
    for rd in map(Path, run_dirs):
        fit(load_run_config(rd), rd, extra_callbacks=(GlobalLoss(rd),))
    leave_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
