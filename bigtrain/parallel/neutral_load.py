"""A sharded strategy loads a layout-neutral checkpoint file (neutral.py) with its engine's own API.

Single and DDP load the neutral file as the Lightning checkpoint it is. FSDP, DeepSpeed and tensor parallel would
read a folder of their own; given a neutral file they put the whole weights and Adam states into their shards here:
    FSDP        its full-state-dict loading (FSDP.optim_state_dict_to_load for the name-keyed Adam states, as
                Lightning's FSDPStrategy loads a whole-model file): every rank passes whole tensors, keeps its shard
    DeepSpeed   ZeRO 1-3: deepspeed.utils.safe_set_full_fp32_param / safe_set_full_optimizer_state for the fp32
                master partitions and Adam moments, and the module's own parameters (gathered under ZeRO-3) for the
                weights the next forward uses; ZeRO-0: the module and the torch optimizer load their state dicts
    tensor      (+ FSDP2) the GPT's names split into q/k/v (param_names.py), then torch.distributed.checkpoint's
    parallel    full-state-dict loading as Lightning's ModelParallelStrategy loads a whole-model file
                (set_model_state_dict per submodule, set_optimizer_state_dict with the name-keyed Adam states):
                every rank passes whole tensors and keeps its DTensor shards
A pipeline stage takes its slice (`stage_checkpoint`, called by PipelineStrategy.load_checkpoint): the stage's
weights and a torch optimizer state in its own group order, which Lightning then loads as usual.
Lightning then restores the rest from the returned dict as usual: global step and loops, LR schedule, callbacks,
and the module's on_load_checkpoint (validation history, RNG).

Adam's step count goes into every parameter's state as a tensor of its own (`_fresh_step`): ZeRO 1-3 steps its flat
groups one optimizer.step() at a time, so one tensor shared by the states (torch.as_tensor hands back the file's own
tensor when its dtype already matches) would count each step once per group and skew the bias correction from the
first resumed update on.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch

from bigtrain.parallel.checkpoint_format import NEUTRAL_KEY
from bigtrain.parallel.neutral import ADAM_STATES


def _by_name(blob: dict) -> tuple[dict, dict, list[dict]]:
    """(weights by GPT name, Adam states by GPT name, group hyperparameters) of a neutral file."""
    weights = {k.removeprefix("model."): v for k, v in blob["state_dict"].items()}
    names = blob[NEUTRAL_KEY]["param_names"]
    flat = [n for group in names for n in group]
    osd = (blob.get("optimizer_states") or [{}])[0]
    states = {flat[i]: st for i, st in (osd.get("state") or {}).items()}
    groups = [{k: v for k, v in g.items() if k != "params"} for g in osd.get("param_groups", [])]
    return weights, states, groups


class LoadsNeutralCheckpoints:
    """Put before the Lightning strategy in a sharded strategy's bases (strategy.py)."""

    _neutral_loaded = False

    def load_checkpoint(self, checkpoint_path, *args, **kwargs):
        path = Path(checkpoint_path)
        if not path.is_file():
            return super().load_checkpoint(checkpoint_path, *args, **kwargs)
        from bigtrain.safe_load import load

        blob = load(path)
        if NEUTRAL_KEY not in blob:
            return super().load_checkpoint(checkpoint_path, *args, **kwargs)
        weights, states, groups = _by_name(blob)
        with torch.no_grad():
            self._load_neutral(weights, states, groups)
        self._neutral_loaded = True
        return {k: v for k, v in blob.items() if k not in ("state_dict", "optimizer_states")}

    def load_model_state_dict(self, checkpoint, strict: bool = True) -> None:
        if not self._neutral_loaded:
            super().load_model_state_dict(checkpoint, strict=strict)

    def load_optimizer_state_dict(self, checkpoint) -> None:
        if not self._neutral_loaded:
            super().load_optimizer_state_dict(checkpoint)

    @property
    def lightning_restore_optimizer(self) -> bool:
        return False if self._neutral_loaded else super().lightning_restore_optimizer

    def _load_neutral(self, weights: dict, states: dict, groups: list[dict]) -> None:
        from pytorch_lightning.strategies import DeepSpeedStrategy, ModelParallelStrategy

        if isinstance(self, DeepSpeedStrategy):
            _into_deepspeed(self, weights, states, groups)
        elif isinstance(self, ModelParallelStrategy):
            _into_tensor_parallel(self, weights, states, groups)
        else:
            _into_fsdp(self, weights, states, groups)


def _into_tensor_parallel(strategy, weights: dict, states: dict, groups: list[dict]) -> None:
    """Whole tensors in the tensor-parallel names -> each rank's DTensor shards (TP, and FSDP2 over dp on top)."""
    from lightning_fabric.strategies.model_parallel import _load_raw_module_state
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    from bigtrain.parallel.param_names import split_qkv

    gpt_config = strategy.lightning_module.model.config
    module = strategy.model  # the LightningModule: its keys are "model." + the (split) GPT names
    full = {f"model.{k}": v for k, v in split_qkv(weights, gpt_config).items()}
    _load_raw_module_state(full, module=module, world_size=strategy.world_size, strict=True)
    if not states:
        return
    optimizer = strategy.optimizers[0]
    split = split_qkv(states, gpt_config)
    order = _group_names(strategy, optimizer)
    # The source's hyperparameters where this optimizer has them (DeepSpeedCPUAdam's bias_correction, say, it has
    # not; torch's unflattening refuses a key the target's groups lack), this optimizer's own for the rest.
    hypers = [
        {**{k: v for k, v in mine.items() if k != "params"}, **{k: v for k, v in theirs.items() if k in mine}}
        for mine, theirs in zip(optimizer.param_groups, groups, strict=True)
    ]
    osd = {
        "state": {f"model.{n}": _adam(split[n]) for group in order for n in group},
        "param_groups": [
            {**h, "params": [f"model.{n}" for n in names]} for h, names in zip(hypers, order, strict=True)
        ],
    }
    set_optimizer_state_dict(module, optimizer, osd, options=StateDictOptions(full_state_dict=True))


def stage_checkpoint(blob: dict, gpt_config, stage: int, pp: int) -> dict:
    """A neutral file -> the Lightning checkpoint of one pipeline stage: its weights ("model." + the GPT names it
    holds) and its torch optimizer state (ids in the stage's group order); a tied model's last stage takes the
    token table (and its Adam state) for its head copy."""
    from bigtrain.model import GPT
    from bigtrain.parallel.param_names import TIED_HEAD, TOKEN_TABLE, stage_copies_head, stage_groups
    from bigtrain.parallel.pipeline import GPTStage

    weights, states, groups = _by_name(blob)
    copies = stage_copies_head(gpt_config, stage, pp)

    def source(name: str) -> str:
        return TOKEN_TABLE if copies and name == TIED_HEAD else name

    with torch.device("meta"):
        keys = list(GPTStage(GPT(gpt_config), stage, pp).state_dict())
    names = stage_groups(gpt_config, stage, pp)
    out = {k: v for k, v in blob.items() if k not in ("state_dict", "optimizer_states", NEUTRAL_KEY)}
    out["state_dict"] = {f"model.{k}": weights[source(k)].clone() for k in keys}
    out["optimizer_states"] = []
    if states:
        flat = [n for group in names for n in group]
        ids, start = [], 0
        for group in names:
            ids.append(list(range(start, start + len(group))))
            start += len(group)
        out["optimizer_states"] = [
            {
                "state": {i: _adam(states[source(n)]) for i, n in enumerate(flat)},
                "param_groups": [{**hyper, "params": p} for hyper, p in zip(groups, ids, strict=True)],
            }
        ]
    return out


def _into_fsdp(strategy, weights: dict, states: dict, groups: list[dict]) -> None:
    """FSDP's own full-state-dict loading, as Lightning's FSDPStrategy does for a whole-model file: every rank
    passes the whole tensors and keeps its shard; the optimizer state goes in keyed by parameter name
    (FSDP.optim_state_dict_to_load). Names are the LightningModule's ("model.<GPT name>")."""
    from lightning_fabric.strategies.fsdp import _get_full_state_dict_context
    from lightning_fabric.strategies.model_parallel import _load_raw_module_state
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    root = strategy.model  # the FSDP root around the LightningModule
    # Not lightning_module.state_dict() for the names: it would run the nested FSDP units' hooks as if each were
    # the root. The module's keys are "model." + the GPT's (its whole state, buffers included, is the GPT's).
    full = {f"model.{k}": v for k, v in weights.items()}
    _load_raw_module_state(full, module=root, world_size=strategy.world_size, strict=True)
    if not states:
        return
    optimizer = strategy.optimizers[0]
    order = _group_names(strategy, optimizer)
    osd = {
        "state": {f"model.{n}": _adam(states[n]) for group in order for n in group},
        "param_groups": [
            {**g, "params": [f"model.{n}" for n in names]} for g, names in zip(groups, order, strict=True)
        ],
    }
    with _get_full_state_dict_context(root, world_size=strategy.world_size, rank0_only=False):
        optimizer.load_state_dict(FSDP.optim_state_dict_to_load(model=root, optim=optimizer, optim_state_dict=osd))


def _group_names(strategy, optimizer) -> list[list[str]]:
    """The GPT names of each optimizer group's parameters, in order (FSDP keeps the original parameters)."""
    from bigtrain.parallel.neutral import gpt_name

    names = {id(p): gpt_name(n) for n, p in strategy.lightning_module.named_parameters()}
    return [[names[id(p)] for p in g["params"]] for g in optimizer.param_groups]


def _adam(state: dict) -> dict:
    return {k: (v.float().clone() if k in ADAM_STATES else _fresh_step(v)) for k, v in state.items()}


def _fresh_step(step, like=None):
    """Adam's step count as a new tensor (like `like`'s dtype and device; fp32 on the CPU without one), or an int
    where the optimizer keeps one (DeepSpeedCPUAdam). Never a tensor another state holds: torch's Adam adds 1 to
    each state's step in place at every step() call, so states sharing one tensor count a step once per state, or
    once per group when ZeRO steps its flat groups one call at a time."""
    if like is not None and not torch.is_tensor(like):
        return int(step)
    dtype, device = (like.dtype, like.device) if like is not None else (torch.float32, "cpu")
    return torch.tensor(float(step), dtype=dtype, device=device)


def set_adam_step(optimizer: torch.optim.Optimizer, step) -> None:
    """Every state's bias-correction count to `step` (the same for every parameter), each state its own tensor."""
    for state in optimizer.state.values():
        if "step" in state:
            state["step"] = _fresh_step(step, like=state["step"])


def _into_deepspeed(strategy, weights: dict, states: dict, groups: list[dict]) -> None:
    import deepspeed
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state

    engine, module = strategy.deepspeed_engine, strategy.lightning_module
    stage = engine.zero_optimization_stage()
    params = dict(module.model.named_parameters())
    inner = _inner_optimizer(engine.optimizer)
    if stage == 0:  # no partitions: the module's parameters are the optimizer's
        for name, p in params.items():
            p.copy_(weights[name])
        if states:
            names = {id(p): n for n, p in params.items()}
            osd = {
                "state": {
                    i: _adam(states[names[id(p)]])
                    for i, p in enumerate(p for g in inner.param_groups for p in g["params"])
                },
                "param_groups": [],
            }
            start = 0
            for g, hyper in zip(inner.param_groups, groups, strict=True):
                osd["param_groups"].append({**g, **hyper, "params": list(range(start, start + len(g["params"])))})
                start += len(g["params"])
            inner.load_state_dict(osd)
        return
    rank0 = strategy.global_rank == 0
    if states:
        _create_adam_states(engine.optimizer, inner)
    for name, p in params.items():
        # The module's own copy (what the next forward reads): whole on every rank under ZeRO 1/2; under ZeRO-3
        # gathered, set on rank zero and partitioned again on leaving the context.
        with deepspeed.zero.GatheredParameters([p], modifier_rank=0) if stage == 3 else nullcontext():
            if stage < 3 or rank0:
                p.data.copy_(weights[name])
        safe_set_full_fp32_param(p, weights[name])  # the optimizer's fp32 master partition
        if states:
            for key in ADAM_STATES:
                safe_set_full_optimizer_state(p, states[name][key], key)
    if states:
        set_adam_step(inner, next(iter(states.values()))["step"])
    for g, hyper in zip(inner.param_groups, groups, strict=False):  # no groups: a file without optimizer states
        g["lr"] = hyper.get("lr", g["lr"])  # the schedule's value at this step; LambdaLR sets it from the next step


def _inner_optimizer(opt):
    while hasattr(opt, "optimizer") and isinstance(opt.optimizer, torch.optim.Optimizer):
        opt = opt.optimizer
    return opt


def _create_adam_states(zero_optimizer, inner) -> None:
    """ZeRO creates Adam's states at the first step (with CPU offload DeepSpeedCPUAdam does; ZeRO 1/2 link each
    parameter to its fragments then); a resume sets them before that step, so create them as the optimizer would
    (zeros, step 0: it initialises only empty states) and link them now."""
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    # ZeRO-3 hands its flat fp32 partitions to the optimizer only inside its step; ZeRO 1/2 keep them in the groups.
    flats = getattr(zero_optimizer, "fp32_partitioned_groups_flat", None)
    for p in flats if flats is not None else [p for g in inner.param_groups for p in g["params"]]:
        state = inner.state[p]
        if not state:
            state["step"] = 0 if isinstance(inner, DeepSpeedCPUAdam) else torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    if hasattr(zero_optimizer, "_lazy_init_hp_params_optimizer_state"):  # ZeRO 1/2 (ZeRO-3 reads them directly)
        zero_optimizer._hp_optimizer_states_linked = False
        zero_optimizer._lazy_init_hp_params_optimizer_state()
