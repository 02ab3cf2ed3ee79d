"""Random windows of block_size + 1 tokens from memory-mapped token files, as whole micro-batches.

Micro-batch m (a global counter over the whole run) draws its window offsets from a generator seeded with
(seed, m): the data is a pure function of the seed and the position in the run. Data-parallel rank r of D takes
micro-batches r, r + D, r + 2D, ...; one optimizer step with accumulation A consumes micro-batches
[step*A*D, (step+1)*A*D) in total, so the same seed and global batch see the same windows per step whatever the
split between ranks and accumulation, and a resumed run continues at global_step*A*D without replaying or skipping.
Windows are gathered with one vectorised numpy index per micro-batch: no per-token Python work.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from bigtrain.data.prepare import read_meta

# Validation micro-batches draw from their own stream so they never depend on how far training got.
VAL_STREAM = 1 << 40
# Sampler length Lightning sees; training ends at max_steps long before.
ENDLESS = 10**12


class TokenWindows(Dataset):
    """Index m -> (x, y) int64 tensors of shape (micro_batch_size, block_size)."""

    def __init__(self, path: Path, dtype: str, block_size: int, micro_batch_size: int, seed: int, stream: int = 0):
        self.path, self.dtype = path, np.dtype(dtype)
        self.block_size, self.micro_batch_size = block_size, micro_batch_size
        self.seed, self.stream = seed, stream
        self._tokens: np.memmap | None = None  # opened lazily: memmaps do not pickle into worker processes
        self._span = np.arange(block_size + 1)

    @property
    def tokens(self) -> np.memmap:
        if self._tokens is None:
            self._tokens = np.memmap(self.path, dtype=self.dtype, mode="r")
        return self._tokens

    def offsets(self, m: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.stream + m])
        return rng.integers(0, len(self.tokens) - self.block_size - 1, size=self.micro_batch_size, endpoint=True)

    def __getitem__(self, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        windows = torch.from_numpy(self.tokens[self.offsets(m)[:, None] + self._span].astype(np.int64))
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()  # (B, T) inputs, next-token targets

    def __len__(self) -> int:
        return ENDLESS


class StridedSampler(Sampler[int]):
    """Yields start + rank, start + rank + world, ... (count items, or endlessly)."""

    def __init__(self, start: int, rank: int, world: int, count: int | None = None):
        self.start, self.rank, self.world, self.count = start, rank, world, count

    def __iter__(self):
        i = 0
        while self.count is None or i < self.count:
            yield self.start + self.rank + i * self.world
            i += 1

    def __len__(self) -> int:
        return self.count if self.count is not None else ENDLESS


class GPTDataModule(pl.LightningDataModule):
    """Train and validation loaders for one rank. The split comes from the run's Layout (config/layout.py; the
    caller passes its numbers so data stays independent of config): `micro_batch_size` sequences per item
    (a pipelined rank's whole batch), `accumulate` items per rank per optimizer step, `dp_size` data-parallel
    ranks."""

    def __init__(
        self,
        data_dir: str | Path,
        block_size: int,
        micro_batch_size: int,
        accumulate: int,
        val_batches: int,
        seed: int,
        num_workers: int = 0,
        dp_size: int = 1,
    ):
        super().__init__()
        self.data_dir = Path(data_dir)
        self.block_size, self.micro_batch_size = block_size, micro_batch_size
        self.accumulate, self.val_batches = accumulate, val_batches
        self.seed, self.num_workers = seed, num_workers
        self.meta = read_meta(self.data_dir, verify_checksums=False)  # rank zero verified them before launch
        self.dp_rank, self.dp_size = 0, dp_size

    def setup(self, stage: str | None = None) -> None:
        if self.trainer is not None:
            # This rank's place among the data-parallel ranks: under tensor or pipeline parallelism several ranks
            # share one batch, and the strategy's mesh says which (Lightning's sampler contract); single-device
            # strategies have no such key. The size is the Layout's; a strategy that disagrees with it is a bug.
            shard = getattr(self.trainer.strategy, "distributed_sampler_kwargs", None) or {}
            self.dp_rank = shard.get("rank", self.trainer.global_rank)
            replicas = shard.get("num_replicas", self.trainer.world_size)
            if replicas != self.dp_size:
                raise RuntimeError(
                    f"{type(self.trainer.strategy).__name__} splits the data {replicas} ways but the layout has "
                    f"dp={self.dp_size}"
                )

    def _windows(self, split: str, stream: int) -> TokenWindows:
        return TokenWindows(
            self.data_dir / f"{split}.bin",
            self.meta["dtype"],
            self.block_size,
            self.micro_batch_size,
            self.seed,
            stream,
        )

    def _loader(self, dataset: Dataset, sampler: Sampler) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=None,  # each item is already a micro-batch
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        step = self.trainer.global_step if self.trainer is not None else 0
        start = step * self.accumulate * self.dp_size  # micro-batches the run consumed before this step
        return self._loader(self._windows("train", 0), StridedSampler(start, self.dp_rank, self.dp_size))

    def val_dataloader(self) -> DataLoader:
        return self._loader(
            self._windows("val", VAL_STREAM), StridedSampler(0, self.dp_rank, self.dp_size, self.val_batches)
        )
