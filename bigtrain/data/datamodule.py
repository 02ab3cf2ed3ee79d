"""Random windows of block_size + 1 tokens from memory-mapped token files, as whole micro-batches.

Sample i (a global counter over the whole run) reads the window that a counter-based hash of (seed, i) picks:
the data is a pure function of the seed and the sample's position in the run, whatever the layout. Micro-batch m
holds samples [m x micro_batch_size, (m + 1) x micro_batch_size). Data-parallel rank r of D takes
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


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele et al. 2014): a bijective mix of uint64s, vectorised (wraps mod 2^64)."""
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def sample_offsets(samples: np.ndarray, seed: int, stream: int, n_starts: int) -> np.ndarray:
    """Window start in [0, n_starts) of each global sample index: a counter-based hash of (seed, stream, sample),
    no generator state, so sample i's window never depends on which rank or micro-batch reads it."""
    with np.errstate(over="ignore"):
        key = _splitmix64(np.full(samples.shape, seed, dtype=np.uint64) ^ _splitmix64(np.uint64(stream) + samples))
    return (key % np.uint64(n_starts)).astype(np.int64)  # modulo bias < n_starts / 2^64: none that matters


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
        """Window starts of item m: samples m x micro_batch_size ... , each a function of (seed, sample index)
        alone, so any split of a step's samples into items and ranks reads the same windows."""
        samples = np.arange(m * self.micro_batch_size, (m + 1) * self.micro_batch_size, dtype=np.uint64)
        return sample_offsets(samples, self.seed, self.stream, len(self.tokens) - self.block_size)

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
