"""Measured model-state bytes per rank: parameters, gradients and optimizer states as the engine really holds them,
taken once, just before the second optimizer step (gradients present, Adam's moments created by the first) for the planner's planned-vs-measured check.

Tensors are counted once per storage (tied weights, views into flat buffers). Under DeepSpeed the ZeRO optimizer
owns the partitions (16-bit flat groups, fp32 master partitions, their gradients, the inner optimizer's moments),
so every tensor reachable from it is counted as well; parameters that ZeRO-3 has released count by their partition.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch


def _tensors(obj, depth: int = 2):
    """Tensors held by obj directly or in its lists / tuples / dicts, up to `depth` containers deep."""
    if isinstance(obj, torch.Tensor):
        yield obj
        if obj.grad is not None:
            yield obj.grad
    elif depth > 0 and isinstance(obj, list | tuple):
        for item in obj:
            yield from _tensors(item, depth - 1)
    elif depth > 0 and isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item, depth - 1)


def _storage_bytes(tensors, seen: set) -> int:
    total = 0
    for t in tensors:
        if hasattr(t, "to_local"):  # a DTensor (tensor parallel): this rank's shard
            t = t.to_local()
        if t.device.type == "meta":
            continue
        storage = t.untyped_storage()
        key = (t.device.type, storage.data_ptr())
        if storage.nbytes() == 0 or key in seen:
            continue
        seen.add(key)
        total += storage.nbytes()
    return total


def model_state_bytes(module: torch.nn.Module, optimizer) -> dict[str, int]:
    """Bytes of parameters, gradients and optimizer states on this rank, each storage counted once."""
    seen: set = set()
    params = list(module.parameters())
    # ZeRO-3 releases full parameters between uses; its partition lives in ds_tensor.
    held = [getattr(p, "ds_tensor", None) if getattr(p, "ds_tensor", None) is not None else p for p in params]
    out = {"params": _storage_bytes(held, seen)}
    out["grads"] = _storage_bytes((p.grad for p in params if p.grad is not None), seen)
    inner = getattr(optimizer, "optimizer", None)  # DeepSpeed's ZeRO optimizer wraps the torch one
    state_tensors = []
    for opt in (optimizer, inner):
        if opt is not None and hasattr(opt, "state"):
            state_tensors += list(_tensors(dict(opt.state), depth=2))
    if inner is not None:  # DeepSpeed: flat 16-bit groups, fp32 partitions and their gradients
        state_tensors += [t for value in vars(optimizer).values() for t in _tensors(value, depth=2)]
    out["optimizer"] = _storage_bytes(state_tensors, seen)
    out["total"] = sum(out.values())
    return out


class ModelStateBytes(pl.Callback):
    """Records model_state_bytes once, just before the second optimizer step."""

    def __init__(self) -> None:
        self.bytes: dict[str, int] | None = None

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        if self.bytes is None and trainer.global_step >= 1:
            engine = getattr(trainer.strategy, "deepspeed_engine", None)
            optimizer = engine.optimizer if engine is not None else trainer.optimizers[0]
            self.bytes = model_state_bytes(module, optimizer)

    @property
    def total(self) -> int:
        return self.bytes["total"] if self.bytes else 0
