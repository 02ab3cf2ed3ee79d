"""One rank of a CPU job that trains several recorded configs in turn (tests/test_layout_matrix.py, tests/test_llama_layouts.py).

    python tests/matrix_worker.py RUN_DIR...        (as every rank, with tests/launch.py's environment)

Each RUN_DIR holds a config.yaml (with `resume` already resolved by the test, as task=train's rank zero does);
this runs bigtrain's own `fit` on it and writes RUN_DIR/losses.json: per optimizer step (numbered from 1, after
any resumed steps), the loss of the whole global batch: the sum of the step's micro-batch losses (Lightning hands
each one over divided by the accumulation count), averaged over all ranks (data-parallel ranks hold different
parts of the batch; tensor- and pipeline-parallel ranks hold the same loss). A process that trained one config can
train the next: one process group for all (tests/test_llama_layouts.py uses it too).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.distributed as dist

from bigtrain.config.run_config import load_run_config
from bigtrain.parallel.teardown import leave_process_group
from bigtrain.tasks.train import fit


class StepLosses(pl.Callback):
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.losses: dict[int, float] = {}
        self.step = 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.step = trainer.global_step + 1  # the optimizer step this micro-batch belongs to

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        loss = outputs["loss"].detach().float().clone().reshape(1)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(loss, op=dist.ReduceOp.AVG)  # every rank: a collective
        self.losses[self.step] = self.losses.get(self.step, 0.0) + float(loss)

    def on_train_end(self, trainer, module):
        if trainer.is_global_zero:
            (self.run_dir / "losses.json").write_text(json.dumps(self.losses))


def main(run_dirs: list[str]) -> None:
    torch.set_num_threads(1)
    for rd in map(Path, run_dirs):
        fit(load_run_config(rd), rd, extra_callbacks=(StepLosses(rd),))
    leave_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
