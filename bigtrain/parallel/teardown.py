"""The end of a multi-process run: every rank leaves torch.distributed together, then the process may exit.

Without this, a rank that is done with its last collective exits while its peers still work (rank zero writes the
sample and summary after the others are finished), and the process group, DeepSpeed's communication backend and
its NVMe I/O threads are torn down by interpreter finalisation in whatever order it picks. CI saw such an exit end
in `terminate called without an active exception` (SIGABRT) on rank 1 after a ZeRO-Infinity run; PyTorch asks every
program to call destroy_process_group() before it exits. Call it once, at the end of the process: DeepSpeed keeps
its process groups in module globals, so training again in the same process after it fails."""

from __future__ import annotations

import sys


def leave_process_group() -> None:
    """Barrier, then destroy the default process group; a no-op when no group was started (one-process runs)."""
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    # The run's objects (Trainer <-> strategy <-> DDP module) form reference cycles, freed only by the garbage
    # collector, maybe after destroy_process_group: DDP's reducer would then drop the last reference to the gloo
    # group, whose destructor joins its threads with the GIL held and deadlocks if one of them needs the GIL to
    # free its last work (torch#56297; seen as a rank that never exits). Collected now, the group outlives them.
    import gc

    gc.collect()
    dist.barrier()  # the peers wait here for rank zero's end-of-run writes
    dist.destroy_process_group()
