"""One rank of a 2-process CPU job that trains several recorded configs in sequence (tests/test_zero.py).

    MASTER_ADDR=.. MASTER_PORT=.. WORLD_SIZE=2 RANK=r LOCAL_RANK=r NODE_RANK=0 python tests/zero_worker.py RUN_DIR...

Each RUN_DIR holds a config.yaml written by the test; each is trained with bigtrain's own `fit` (the process group
is created once and reused), plus a probe callback that records, on rank zero, into RUN_DIR/probe.pt: every
micro-batch's training loss with its global step, the logits of the sharded model (the strategy's own wrapped
forward) on a fixed input, and the files under offload.nvme_path. Sharing the processes keeps the import and
process-group start-up costs to one per test session.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from bigtrain.config.run_config import load_run_config
from bigtrain.parallel.teardown import leave_process_group
from bigtrain.tasks.train import fit

PROBE_SEED = 0


def probe_input(vocab_size: int, block_size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(PROBE_SEED)
    return torch.randint(0, vocab_size, (2, block_size), generator=g)


class Probe(pl.Callback):
    def __init__(self, cfg, run_dir: Path):
        self.cfg, self.run_dir = cfg, run_dir
        self.losses: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append((trainer.global_step, float(outputs["loss"])))

    def on_train_end(self, trainer, module):
        x = probe_input(self.cfg.model.vocab_size, self.cfg.model.block_size).to(module.device)
        with torch.no_grad():
            logits, _ = trainer.strategy.model(x)  # every rank: the sharded forward is a collective
        if trainer.is_global_zero:
            nvme = self.cfg.offload.nvme_path if self.cfg.offload.name == "nvme" else None
            files = sorted(str(p) for p in Path(nvme).rglob("*") if p.is_file()) if nvme else []
            torch.save(
                {"losses": self.losses, "logits": logits.float().cpu(), "nvme_files": files}, self.run_dir / "probe.pt"
            )


def main(run_dirs: list[str]) -> None:
    for rd in map(Path, run_dirs):
        cfg = load_run_config(rd)
        fit(cfg, rd, extra_callbacks=(Probe(cfg, rd),))
    leave_process_group()  # as bigtrain's own entry points do at the end of their process


if __name__ == "__main__":
    main(sys.argv[1:])
