"""`python -m bigtrain.training.baseline_probe [--deepspeed]`: the resident memory a training process holds before
its model does, measured in a fresh interpreter and printed as one JSON line.

The planner (bigtrain/plan/baseline.py, torch-free) runs this once per install and caches the answer: a process
that imports what a training run imports (hydra, numpy, torch, Lightning, bigtrain's training modules, the
strategy builder, and DeepSpeed when the layout uses it), then takes one AdamW step on a 64 x 64 layer so that
autograd's and the optimizer's code pages are resident, as they are in a run. Its peak resident set size
(ru_maxrss) is what a CPU run's summary.json measures minus what the model, its data and its activations add.
"""

from __future__ import annotations

import json
import resource
import sys


def peak_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB


def private_bytes() -> int | None:
    """This process's private resident bytes (Linux smaps_rollup): what a forked worker adds to its node."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return None
    return sum(int(fields[k].split()[0]) * 1024 for k in ("Private_Clean", "Private_Dirty") if k in fields)


class _WorkerMemory:
    """A one-item dataset whose item is the private memory of the data loader worker that produced it."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int):
        import torch

        return torch.tensor([private_bytes() or -1], dtype=torch.int64)


def worker_bytes() -> int | None:
    """Private bytes of one data loader worker, forked from this process as a run's workers are."""
    from torch.utils.data import DataLoader

    (item,) = DataLoader(_WorkerMemory(), batch_size=None, num_workers=1)
    value = int(item[0])
    return value if value > 0 else None


def main(argv: list[str]) -> None:
    with_deepspeed = "--deepspeed" in argv
    import hydra  # noqa: F401
    import numpy  # noqa: F401  (the data module's memory-mapped shards)
    import pytorch_lightning  # noqa: F401
    import torch

    import bigtrain.parallel  # noqa: F401
    import bigtrain.training.callbacks  # noqa: F401
    import bigtrain.training.checkpointing  # noqa: F401
    import bigtrain.training.loggers  # noqa: F401
    import bigtrain.training.module  # noqa: F401

    if with_deepspeed:  # as a CPU DeepSpeed run's strategy does first (the probe serves CPU runs only)
        from bigtrain.parallel.cpu_adapters import use_deepspeed_cpu_accelerator

        use_deepspeed_cpu_accelerator()

    layer = torch.nn.Linear(64, 64)
    optimizer = torch.optim.AdamW(layer.parameters())
    torch.nn.functional.cross_entropy(layer(torch.randn(8, 64)), torch.zeros(8, dtype=torch.long)).backward()
    optimizer.step()
    peak = peak_rss_bytes()  # before the worker: a run's process has its workers outside its own RSS too
    print(
        json.dumps(
            {
                "peak_rss_bytes": peak,
                "worker_bytes": worker_bytes(),
                "deepspeed": with_deepspeed,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
