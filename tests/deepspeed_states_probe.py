"""One rank of a real DeepSpeed ZeRO run on CPU (gloo), for tests/test_plan_measured.py.

    RANK=r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=p python tests/deepspeed_states_probe.py OUT.json

Builds the nano GPT under DeepSpeed ZeRO stages 1, 2 and 3 in turn (fp32, torch AdamW as the client optimizer),
takes two steps, and records this rank's model-state bytes just before the second optimizer step, counted by
bigtrain.training.model_states.model_state_bytes from the engine's real tensors and partitions.
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
from bigtrain.training.model_states import model_state_bytes

NANO = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=256)


def measure(stage: int) -> dict:
    torch.manual_seed(0)
    ds = {
        "train_micro_batch_size_per_gpu": 2,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": stage},
        "zero_allow_untested_optimizer": True,
    }
    with deepspeed.zero.Init(config_dict_or_path=ds, enabled=stage == 3):
        model = GPT(NANO)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds, dist_init_required=True)
    measured = None
    for step in range(2):
        x = torch.randint(0, NANO.vocab_size, (2, NANO.block_size))
        _, loss = engine(x, x)
        engine.backward(loss)
        if step == 1:
            measured = model_state_bytes(engine.module, engine.optimizer)
        engine.step()
    n = sum(getattr(p, "ds_numel", p.numel()) for p in engine.module.parameters())
    return {"stage": stage, "n_params": n, **measured}


if __name__ == "__main__":
    os.environ.setdefault("LOCAL_RANK", os.environ.get("RANK", "0"))
    # Collectives over plain gloo: skips JIT-compiling DeepSpeed's shared-memory all-reduce op (tens of seconds on
    # a fresh machine, and a C++ toolchain), as bigtrain's own CPU runs do. It changes how bytes travel between
    # ranks, not what each rank holds. (Assigning `deepspeed.comm.torch.build_shm_op` does not do it: that name is
    # PyTorch itself, which deepspeed.comm re-exports, not the submodule; the op was built into ~/.cache.)
    use_deepspeed_cpu_accelerator()
    results = [measure(stage) for stage in (1, 2, 3)]
    with open(sys.argv[1].format(os.environ["RANK"]), "w") as f:  # rank{}.json: one file per rank
        json.dump(results, f)
    leave_process_group()  # as bigtrain's own entry points end (see bigtrain/parallel/teardown.py)
