"""Looking at a sharded model from outside: what each rank holds, and the whole model gathered on rank zero.

Under ZeRO-3 a parameter's own tensor is an empty placeholder (its shard is `param.ds_tensor`), and under FSDP
each rank sees only its slice of every parameter; these helpers read the strategies' own partitions, so the
numbers in summary.json show whether sharding really happened.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

FSDP_PREFIX = "_fsdp_wrapped_module."


def _is_zero3_param(p: torch.Tensor) -> bool:
    return hasattr(p, "ds_tensor")


def inner_optimizer(trainer) -> torch.optim.Optimizer | None:
    """The optimizer that holds the states: unwrapped from Lightning's and DeepSpeed's ZeRO wrappers."""
    if not trainer.optimizers:
        return None
    opt = trainer.optimizers[0]
    opt = getattr(opt, "_optimizer", opt)  # LightningOptimizer
    while hasattr(opt, "optimizer") and isinstance(opt.optimizer, torch.optim.Optimizer):
        opt = opt.optimizer  # DeepSpeed's ZeRO / bf16 wrappers keep the real one here
    return opt


def held_numel(trainer, module) -> dict[str, int]:
    """Elements this rank holds: parameters (its shard under ZeRO-3 / FSDP) and Adam's exp_avg states."""
    params = 0
    for p in module.model.parameters():  # tied weights counted once
        params += p.ds_tensor.ds_numel if _is_zero3_param(p) else p.numel()
    opt = inner_optimizer(trainer)
    states = 0
    if opt is not None:
        for state in opt.state.values():
            avg = state.get("exp_avg") if isinstance(state, dict) else None
            states += avg.numel() if isinstance(avg, torch.Tensor) else 0
    return {"params": int(params), "optimizer_states": int(states)}


def held_numel_per_rank(trainer, module) -> dict[str, list[int]]:
    """held_numel of every rank (a collective: call on all ranks)."""
    mine = held_numel(trainer, module)
    local = torch.tensor([mine["params"], mine["optimizer_states"]], dtype=torch.long, device=module.device)
    every = trainer.strategy.all_gather(local)
    every = every.reshape(-1, 2).tolist() if every.dim() > 1 else [every.tolist()]
    return {"params": [r[0] for r in every], "optimizer_states": [r[1] for r in every]}


def full_state_dict(trainer, module) -> dict[str, torch.Tensor] | None:
    """The GPT's complete fp32 state dict (keys of bigtrain.model.GPT) on rank zero, None elsewhere.

    A collective under ZeRO-3 and FSDP (every rank must call it); parameters are gathered one at a time under
    ZeRO-3 so no rank ever holds more than one whole extra tensor.
    """
    model, rank0 = module.model, trainer.is_global_zero
    out: dict[str, torch.Tensor] = {}
    params = dict(model.named_parameters())
    if any(_is_zero3_param(p) for p in params.values()):
        import deepspeed

        for name, p in params.items():
            with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                if rank0:
                    out[name] = p.detach().float().cpu().clone()
    else:
        fsdp_root = _fsdp_root(trainer)
        if fsdp_root is not None:
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

            ctx = FSDP.summon_full_params(fsdp_root, writeback=False, recurse=True)
        else:
            ctx = nullcontext()
        with ctx:
            if rank0:
                for name, p in model.named_parameters():
                    out[name.replace(FSDP_PREFIX, "")] = p.detach().float().cpu().clone()
    groups = getattr(trainer.strategy, "expert_groups", None)
    if groups is not None:  # expert parallelism: each rank holds 1/ep of the experts (expert_parallel.py)
        from bigtrain.parallel.expert_parallel import expert_parameter_names, gather_experts

        for name in sorted(expert_parameter_names(model)):
            whole = gather_experts(params[name].detach(), groups)
            if rank0:
                out[name.replace(FSDP_PREFIX, "")] = whole.float().cpu()
    if not rank0:
        return None
    # Tied weights appear once in named_parameters; the state dict of a plain GPT names both ends.
    if "lm_head.weight" not in out and "transformer.wte.weight" in out:
        out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def _fsdp_root(trainer):
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    model = trainer.strategy.model
    return model if isinstance(model, FSDP) else None
