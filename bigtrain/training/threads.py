"""CPU threads of each training process: `trainer.threads` (auto, or a count).

On a machine shared with other work, torch's OpenMP threads are the first to suffer: with the runtime's default
wait policy a thread that finishes its share of an operation spins (burning a core another process wanted) and the
operation waits for whichever thread was descheduled. Measured on 2 cores under a competing load (bench `threads`,
benchmarks/README.md), two spinning threads ran 5-6x slower than with OMP_WAIT_POLICY=PASSIVE, and slower than one
thread. `auto` therefore makes idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE) and leaves the thread count to
torch and Lightning (the cores this process may use, divided among the local ranks by Lightning's DDP); a count
sets OMP_NUM_THREADS for every rank. Either applies only where the user's environment has not set the variable
already, and OpenMP reads it when torch is first imported: set before that, in `run()`.
"""

from __future__ import annotations

import os
import sys


def apply_threads(value) -> None:
    """Before torch is imported: the environment every rank of this run inherits (a user's own setting wins)."""
    if str(value) == "auto":
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        return
    os.environ.setdefault("OMP_NUM_THREADS", str(int(value)))
    if "torch" in sys.modules:  # already imported (a sweep's process, a test): the count can still be set
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
