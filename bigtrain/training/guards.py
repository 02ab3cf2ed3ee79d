"""Non-finite loss or gradients, caught within the step that produced them.

Runs after backward and before the optimizer step. The ranks must decide alike (one skipping while another steps
would split the replicas). Where every rank holds the whole reduced gradient (DDP: its all-reduce hands every rank
the same bits, so a NaN or inf on one rank is a NaN or inf on all), the local check is already that agreement and
costs no collective; where each rank holds a part (ZeRO, FSDP, tensor or pipeline parallel) one all-reduce of the
verdict settles it. policy=skip drops the step: every gradient is set to None, which AdamW skips
entirely (no moment update, no weight decay); the event is logged and printed, never silent. policy=stop ends the
run with a one-line error naming the step and the last good checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch

from bigtrain.errors import BigtrainError


class NonFiniteError(BigtrainError):
    pass


class NonFiniteGuard(pl.Callback):
    def __init__(self, policy: str, checkpoint_dir: Path, replicated_grads: bool = False) -> None:
        self.policy = policy
        self.checkpoint_dir = checkpoint_dir
        # True only where every rank holds identical reduced gradients (traits: checks_replicas, i.e. DDP).
        self.replicated_grads = replicated_grads
        self.skipped: list[int] = []

    def on_before_optimizer_step(self, trainer: pl.Trainer, module, optimizer) -> None:
        # Each rank checks what it holds (a DTensor's local shard, a ZeRO partition may hold none).
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        local = [g.to_local() if hasattr(g, "to_local") else g for g in grads]
        bad = (~all_finite(local)).float().reshape(1).to(module.device)
        if trainer.world_size > 1 and not self.replicated_grads:
            # Taken by every rank unconditionally so none waits alone; no barrier before it (the all-reduce itself
            # waits for every rank).
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        if bad.item() == 0:
            return
        step = trainer.global_step
        if self.policy == "skip":
            for p in module.parameters():
                p.grad = None
            self.skipped.append(step)
            module.log("train/skipped_steps", float(len(self.skipped)), rank_zero_only=True)
            if trainer.is_global_zero:
                print(
                    f"bigtrain: non-finite loss or gradients at step {step}; step skipped ({len(self.skipped)} so far)"
                )
            return
        last = sorted(self.checkpoint_dir.glob("step-*.ckpt"))
        where = f"the last good checkpoint is {last[-1]}" if last else "no checkpoint was written yet"
        raise NonFiniteError(
            f"non-finite loss or gradients at step {step}; {where}; resume with resume=auto and a lower optim.lr, "
            f"or set trainer.on_nonfinite=skip"
        )


def all_finite(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Whether every element of every tensor is finite, as a 0-d bool tensor (read once by the caller).

    A NaN or inf anywhere makes its tensor's sum NaN or inf, so the sums decide in one pass over the gradients
    without a bool copy of each (an elementwise isfinite per gradient cost ~9 ms a step on the tiny model, ~3% of a
    2-process CPU step; the sums ~0.6 ms). A sum can also overflow on finite values (beyond float32's range): only
    then, on such a step, the elementwise check settles it, so the verdict is exactly isfinite's."""
    if not tensors:
        return torch.tensor(True)
    # Summed in at least float32 (a half-precision sum of finite values overflows far sooner), stacked as float32.
    sums = torch.stack([t.sum(dtype=torch.promote_types(t.dtype, torch.float32)).float() for t in tensors])
    finite = torch.isfinite(sums).all()
    if finite.item():
        return finite
    return torch.stack([torch.isfinite(t).all() for t in tensors]).all()
