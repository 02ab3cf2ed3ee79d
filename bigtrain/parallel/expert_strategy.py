"""parallelism.ep > 1 on Lightning's data-parallel strategies: the experts split over ep ranks (expert_parallel.py),
the dense parameters left to the engine, the experts reduced over their expert-data-parallel group only.

The engine's all-rank gradient reduction must not touch the expert weights (each ep rank holds different ones):
DDP is told to ignore them (`_ddp_params_and_buffers_to_ignore`, the switch torch provides for exactly this),
FSDP gets them as `ignored_states` (not flattened, not sharded, not reduced). One mechanism then serves both:
after the step's last backward `reduce_expert_grads` averages them over the dp / ep ranks holding the same
experts, and gradient clipping takes the global norm (expert_parallel.clip_grad_norm_).

Why not DeepSpeed's MoE support: its engine treats a parameter as an expert (reduced over the expert-data-parallel
group, partitioned by ZeRO over that group, saved per ep rank) only inside its own `deepspeed.moe.layer.MoE`
module, detected by isinstance. Using it would put DeepSpeed into the model file (or swap our layer for DeepSpeed's
at build time, with its own router, capacity and loss), which the house rules forbid; FSDP composes with plain
torch groups instead. ZeRO-2/3 over the dense part comes from FSDP (zero=2: SHARD_GRAD_OP, zero=3: FULL_SHARD).

Checkpoints hold whole experts (gathered over the ep group on save, sliced to the rank's share on load), model and
optimizer states alike, so they are layout-free: an ep=2 run resumes at ep=1 and consolidates to the plain GPT.
"""

from __future__ import annotations

from typing import Any

import torch

from bigtrain.parallel.expert_parallel import (
    ExpertGroups,
    clip_grad_norm_,
    expert_parameter_names,
    expert_parameters,
    gather_experts,
    global_grad_norm,
    local_expert_slice,
    local_expert_state,
    map_optimizer_expert_states,
    optimizer_expert_slots,
    reduce_expert_grads,
    shard_experts,
    whole_expert_state,
)

MODULE_PREFIX = "model."  # the GPT inside the LightningModule (training/module.py)
FSDP_PREFIX = "_fsdp_wrapped_module."  # FSDP's wrapper in parameter names (its state dicts drop it)


class ExpertParallelMixin:
    """For a Lightning data-parallel strategy; `ep` experts split, the rest of the strategy unchanged."""

    def __init__(self, *args, ep: int, dense_sharded: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.ep = ep
        self.dense_sharded = dense_sharded  # each rank holds a shard of the dense gradients (FSDP zero >= 2)
        self.expert_groups: ExpertGroups | None = None

    # --- building ----------------------------------------------------------------------------------------------
    def parallelize_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Called by the LightningModule's configure_model with the whole GPT, built from the same seed everywhere."""
        if self.expert_groups is None:
            self.expert_groups = ExpertGroups.create(self.ep)
        g = self.expert_groups
        return shard_experts(model, g.ep, g.ep_rank, g.ep_group)

    def setup(self, trainer) -> None:
        super().setup(trainer)
        self.precision_plugin.clip_grad_by_norm = self._clip_grad_by_norm

    def _expert_names(self) -> set[str]:
        """State-dict keys of the expert weights (FSDP's wrapper prefix removed, as its state dicts remove it)."""
        names = expert_parameter_names(self.lightning_module.model)
        return {MODULE_PREFIX + n.replace(FSDP_PREFIX, "") for n in names}

    # --- gradients ---------------------------------------------------------------------------------------------
    def optimizer_step(self, optimizer, closure, model=None, **kwargs) -> Any:
        # Lightning runs the step's last forward/backward inside `closure`, then the before-step hooks and
        # clipping: the expert gradients are averaged right after it, before anyone reads them.
        def closure_then_reduce():
            result = closure()
            reduce_expert_grads(expert_parameters(self.lightning_module.model), self.expert_groups)
            return result

        return super().optimizer_step(optimizer, closure_then_reduce, model, **kwargs)

    def _dense_and_experts(self) -> tuple[list, list, Any]:
        """The dense and expert parameters, and the group the dense gradients' norm sums over (None: replicated)."""
        experts = expert_parameters(self.lightning_module.model)
        ids = {id(p) for p in experts}
        dense = [p for p in self.model.parameters() if id(p) not in ids]
        return dense, experts, torch.distributed.group.WORLD if self.dense_sharded else None

    def _clip_grad_by_norm(self, optimizer, clip_val: float) -> None:
        dense, experts, group = self._dense_and_experts()
        clip_grad_norm_(dense, experts, self.expert_groups, clip_val, dense_group=group)

    def grad_norm(self, module) -> torch.Tensor:
        """The logged train/grad_norm: the whole model's, every rank's experts included (a rank's local norm holds
        only its own experts). Collective: the module calls it on every rank."""
        dense, experts, group = self._dense_and_experts()
        return global_grad_norm(dense, experts, self.expert_groups, dense_group=group).float()

    def replicated_parameters(self, module) -> list[torch.nn.Parameter]:
        """The parameters every data-parallel rank should hold identically: the dense ones."""
        ids = {id(p) for p in expert_parameters(module.model)}
        return [p for p in module.parameters() if id(p) not in ids]

    # --- checkpoints: whole experts at rest --------------------------------------------------------------------
    def lightning_module_state_dict(self) -> dict[str, Any]:
        return whole_expert_state(super().lightning_module_state_dict(), self._expert_names(), self.expert_groups)

    def load_model_state_dict(self, checkpoint, strict: bool = True) -> None:
        state = local_expert_state(checkpoint["state_dict"], self._expert_names(), self.expert_groups)
        super().load_model_state_dict({**checkpoint, "state_dict": state}, strict=strict)

    def _optimizer_expert_view(self, optimizer) -> tuple[set, dict]:
        """The expert entries of an optimizer state dict and their local shapes, under both keyings: position in
        the param groups (torch's optimizer.state_dict) and parameter name (FSDP.optim_state_dict)."""
        inner = getattr(optimizer, "_optimizer", optimizer)  # LightningOptimizer
        model = self.lightning_module.model
        experts = expert_parameters(model)
        slots = optimizer_expert_slots(inner, {id(p) for p in experts})
        params = [p for group in inner.param_groups for p in group["params"]]
        shapes: dict = {i: params[i].shape for i in slots}
        by_id = {id(p): p for p in experts}
        for name, p in model.named_parameters():
            if id(p) in by_id:
                shapes[MODULE_PREFIX + name.replace(FSDP_PREFIX, "")] = p.shape
        return set(shapes), shapes

    def optimizer_state(self, optimizer) -> dict:
        slots, shapes = self._optimizer_expert_view(optimizer)
        state = super().optimizer_state(optimizer)
        return map_optimizer_expert_states(state, slots, lambda t: gather_experts(t, self.expert_groups), shapes)

    def _local_optimizer_state(self, optimizer, opt_state: dict) -> dict:
        g = self.expert_groups
        slots, shapes = self._optimizer_expert_view(optimizer)
        return map_optimizer_expert_states(
            opt_state, slots, lambda t: local_expert_slice(t, g.ep, g.ep_rank).clone(), shapes
        )

    def load_optimizer_state_dict(self, checkpoint) -> None:
        states = [
            self._local_optimizer_state(optimizer, opt_state)
            for optimizer, opt_state in zip(self.optimizers, checkpoint["optimizer_states"], strict=False)
        ]
        super().load_optimizer_state_dict({**checkpoint, "optimizer_states": states})


class ExpertParallelDDPMixin(ExpertParallelMixin):
    """DDP reduces the dense gradients over every rank and leaves the experts alone."""

    def _setup_model(self, model):
        from torch.nn.parallel import DistributedDataParallel

        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, sorted(self._expert_names()))
        return super()._setup_model(model)


class ExpertParallelFSDPMixin(ExpertParallelMixin):
    """FSDP shards (zero=2, 3) the dense parameters over every rank; the experts are its ignored states. Its sharded
    checkpoint (torch.distributed.checkpoint) then holds the whole experts as plain tensors, written once."""

    def _setup_model(self, model):
        self.kwargs["ignored_states"] = expert_parameters(model.model)
        return super()._setup_model(model)

    # FSDP's own: load_checkpoint (below) already put the states in place.
    def load_model_state_dict(self, checkpoint, strict: bool = True) -> None:
        pass

    def load_optimizer_state_dict(self, checkpoint) -> None:
        pass

    def load_checkpoint(self, checkpoint_path, weights_only=None) -> dict:
        """Lightning's sharded-checkpoint load, with whole-sized targets for the experts, cut to this rank's share
        before they reach the model and the optimizer."""
        from pathlib import Path

        from pytorch_lightning.strategies.fsdp import (
            _METADATA_FILENAME,
            _distributed_checkpoint_load,
            _get_sharded_state_dict_context,
            _is_sharded_checkpoint,
        )
        from pytorch_lightning.trainer.states import TrainerFn
        from torch.distributed.checkpoint import FileSystemReader
        from torch.distributed.checkpoint.optimizer import load_sharded_optimizer_state_dict
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        path = Path(self.broadcast(checkpoint_path))
        if not _is_sharded_checkpoint(path):
            return super().load_checkpoint(checkpoint_path, weights_only)
        names, ep = self._expert_names(), self.ep  # keys of the LightningModule under the FSDP root
        with _get_sharded_state_dict_context(self.model):
            state = self.model.state_dict()
            for k in sorted(names):
                state[k] = state[k].new_empty((state[k].shape[0] * ep, *state[k].shape[1:]))
            module_state = {"model": state}
            _distributed_checkpoint_load(module_state, path)
            local = local_expert_state(module_state["model"], names, self.expert_groups)
            self.model.load_state_dict(local, strict=self.lightning_module.strict_loading)
            if self.lightning_module.trainer.state.fn == TrainerFn.FITTING and self.optimizers:
                reader = FileSystemReader(path=path)
                for idx, optim in enumerate(self.optimizers):
                    key = f"optimizer_{idx}"
                    loaded = load_sharded_optimizer_state_dict(
                        model_state_dict=module_state["model"], optimizer_key=key, storage_reader=reader
                    )[key]
                    # That helper shards the states of parameters FSDP does not manage: read the experts' whole
                    # (their per-element states, shaped like the weight) and cut this rank's share.
                    whole = {
                        k: {n: torch.empty_like(state[k]) for n, v in loaded["state"][k].items() if _per_element(v)}
                        for k in sorted(names)
                        if k in loaded["state"]
                    }
                    _distributed_checkpoint_load({key: {"state": whole}}, path)
                    for k, states in whole.items():
                        loaded["state"][k] = {**loaded["state"][k], **states}
                    loaded = self._local_optimizer_state(optim, loaded)
                    optim.load_state_dict(FSDP.optim_state_dict_to_load(self.model, optim, loaded))
        return torch.load(path / _METADATA_FILENAME, weights_only=weights_only)


def _per_element(value) -> bool:
    """An optimizer state shaped like its parameter (Adam's moments), not a scalar (its step)."""
    return isinstance(value, torch.Tensor) and value.dim() > 0
