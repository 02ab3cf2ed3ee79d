"""One rank of a real DeepSpeed ZeRO-1 run on CPU (gloo) in bf16, for tests/test_plan_peak.py.

    RANK=r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=p python tests/zero1_grads_probe.py OUT.json

Which 16-bit gradients are alive at the end of backward, before the optimizer step, under ZeRO stage 1 (DeepSpeed's
stage_1_and_2.py): with bigtrain's zero config (overlap_comm and contiguous_gradients on) and gradient accumulation
over 2 micro-batches, it records after every engine.backward() the bytes of this rank's bf16 gradient tensors: the
parameters' .grad tensors and every bf16 tensor the ZeRO optimizer holds besides its flat 16-bit parameter groups
(reduction buckets, the gradient partition), each storage counted once.
"""

from __future__ import annotations

import json
import os
import sys

import deepspeed
import torch

from bigtrain.model import GPT, GPTConfig
from bigtrain.parallel.cpu_adapters import use_deepspeed_cpu_accelerator
from bigtrain.parallel.teardown import leave_process_group

NANO = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=256)


def _bf16_tensors(obj, depth: int = 3):
    if isinstance(obj, torch.Tensor):
        if obj.dtype == torch.bfloat16:
            yield obj
    elif depth > 0 and isinstance(obj, list | tuple):
        for item in obj:
            yield from _bf16_tensors(item, depth - 1)
    elif depth > 0 and isinstance(obj, dict):
        for item in obj.values():
            yield from _bf16_tensors(item, depth - 1)
    elif depth > 0 and hasattr(obj, "__dict__") and type(obj).__module__.startswith("deepspeed"):
        for item in vars(obj).values():  # DeepSpeed's reduction bucket objects
            yield from _bf16_tensors(item, depth - 1)


def gradient_bytes(engine) -> dict[str, int]:
    """bf16 gradient bytes alive now: .grad of the parameters, and the optimizer's other bf16 tensors."""
    opt = engine.optimizer
    flat_params = {t.untyped_storage().data_ptr() for t in _bf16_tensors(getattr(opt, "bit16_groups_flat", []))}
    params = {p.untyped_storage().data_ptr() for p in engine.module.parameters()}
    seen: set = set()

    def count(tensors) -> int:
        total = 0
        for t in tensors:
            ptr = t.untyped_storage().data_ptr()
            if ptr in seen or ptr in flat_params or ptr in params or t.untyped_storage().nbytes() == 0:
                continue
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
        return total

    grads = count(p.grad for p in engine.module.parameters() if p.grad is not None)
    held = count(t for name, value in vars(opt).items() if name != "bit16_groups_flat" for t in _bf16_tensors(value))
    return {"param_grads": grads, "optimizer_bf16": held}


def main(out: str) -> None:
    torch.manual_seed(0)
    ds = {
        "train_micro_batch_size_per_gpu": 2,
        "gradient_accumulation_steps": 2,
        "bf16": {"enabled": True},
        # bigtrain's zero group (bigtrain/config/schema.py ZeroConfig defaults) at stage 1
        "zero_optimization": {"stage": 1, "overlap_comm": True, "contiguous_gradients": True},
        "zero_allow_untested_optimizer": True,
    }
    model = GPT(NANO)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds, dist_init_required=True)
    records = []
    for micro in range(4):  # two optimizer steps of two micro-batches each
        x = torch.randint(0, NANO.vocab_size, (2, NANO.block_size))
        _, loss = engine(x, x)
        engine.backward(loss)
        boundary = engine.is_gradient_accumulation_boundary()
        records.append({"micro": micro, "boundary": boundary, **gradient_bytes(engine)})
        engine.step()
        records[-1]["after_step"] = gradient_bytes(engine)
    n = sum(p.numel() for p in engine.module.parameters())
    with open(out, "w") as f:
        json.dump({"n_params": n, "world": engine.world_size, "records": records}, f)


if __name__ == "__main__":
    os.environ.setdefault("LOCAL_RANK", os.environ.get("RANK", "0"))
    use_deepspeed_cpu_accelerator()  # plain gloo collectives, as bigtrain's own CPU runs (tests/deepspeed_states_probe.py)
    main(sys.argv[1].format(os.environ["RANK"]))  # rank{}.json: one file per rank
    leave_process_group()
