"""Non-finite loss or gradients, caught within the step that produced them.

Runs after backward (and DDP's gradient all-reduce, which spreads a NaN from one rank to all, so every rank decides
alike) and before the optimizer step. policy=skip drops the step: every gradient is set to None, which AdamW skips
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
    def __init__(self, policy: str, checkpoint_dir: Path) -> None:
        self.policy = policy
        self.checkpoint_dir = checkpoint_dir
        self.skipped: list[int] = []

    def on_before_optimizer_step(self, trainer: pl.Trainer, module, optimizer) -> None:
        # Each rank checks what it holds (a DTensor's local shard, a ZeRO partition may hold none), then the ranks
        # agree: one all-reduce, taken by every rank unconditionally so none waits alone.
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        local = [g.to_local() if hasattr(g, "to_local") else g for g in grads]
        bad = torch.tensor(0.0 if all(bool(torch.isfinite(g).all()) for g in local) else 1.0, device=module.device)
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce(bad, reduce_op="max")
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
