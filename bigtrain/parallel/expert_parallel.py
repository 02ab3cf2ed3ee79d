"""Expert parallelism (GShard): each of ep ranks holds n_experts / ep of every MoE block's experts; the tokens
routed to an expert travel to its rank and back with all_to_all (autograd-aware, works on gloo).

Process groups (`ExpertGroups`): the dp data-parallel ranks form dp / ep expert-parallel groups of ep CONSECUTIVE
ranks (the all_to_all stays inside a node when ep <= devices per node) and ep expert-data-parallel groups of the
dp / ep ranks holding the same experts (rank r and r + ep, r + 2 ep, ...).

Every rank routes its own tokens with its own capacity, exactly as without ep, and fills its (E, C, d) dispatch
buffer. The buffer's expert rows are grouped by owner rank, exchanged with all_to_all, run through the local
experts as one batched matmul over (E/ep, ep x C, d), and sent back.

Gradients. Data parallelism averages: a dense gradient is the mean over all dp ranks of each rank's gradient of its
own loss. The backward all_to_all brings every ep rank's contribution to an expert to its owner as a SUM, so the
owner's gradient is ep times what averaging would give; `AllToAllExperts` scales it by 1/ep inside autograd (the
expert output's gradient by 1/ep, the gradient leaving the experts for the tokens by ep, so the dense part is
untouched). Then averaging the expert gradients over the expert-data-parallel group (dp / ep ranks) yields exactly
the all-rank mean, and the engine's all-rank reduction must skip the experts: `reduce_expert_grads` does their
reduction, `clip_grad_norm_` takes the global norm over both kinds.

Checkpoints stay layout-free: `gather_experts` rebuilds the whole (E, ...) stacked weights (and their optimizer
states) from the ep ranks, and `local_expert_slice` cuts a rank's share out of a whole tensor when loading, so an
ep=2 checkpoint resumes at ep=1 and consolidates to the plain GPT.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.nn.functional import all_to_all_single

from bigtrain.model.moe import MoE


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient multiplied by `scale` on the way back."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


class AllToAllExperts(nn.Module):
    """(E, C, d) buffer -> each owner's local experts -> (E, C, d), across the ep group."""

    def __init__(self, experts: nn.Module, ep: int, group):
        super().__init__()
        self.local = experts
        self.ep, self.group = ep, group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e, c, d = x.shape
        local = e // self.ep
        # Rows are already grouped by owner (experts r*local .. (r+1)*local-1 live on rank r): split evenly.
        received = all_to_all_single(torch.empty_like(x), x.contiguous(), group=self.group)
        # (ep senders, local experts, C, d) -> (local experts, ep x C, d)
        h = received.view(self.ep, local, c, d).transpose(0, 1).reshape(local, self.ep * c, d)
        # Expert weight gradients: the sum over ep ranks' losses, scaled to their mean; the tokens' gradient: unscaled.
        h = _ScaleGrad.apply(h, float(self.ep))
        y = _ScaleGrad.apply(self.local(h), 1.0 / self.ep)
        out = y.view(local, self.ep, c, d).transpose(0, 1).contiguous().view(e, c, d)
        return all_to_all_single(torch.empty_like(out), out, group=self.group)


@dataclass(frozen=True)
class ExpertGroups:
    """This rank's place in the expert split: its ep group (all_to_all), its expert-data-parallel group (gradient
    averaging), its index inside the ep group (which experts it holds)."""

    ep: int
    edp: int
    ep_rank: int
    ep_group: object
    edp_group: object

    @classmethod
    def create(cls, ep: int) -> ExpertGroups:
        """Every rank must call this (new_group is collective), with the same ep; dp = world here (ddp, fsdp)."""
        world, rank = dist.get_world_size(), dist.get_rank()
        if world % ep:
            raise ValueError(f"parallelism.ep={ep} does not divide the world size {world}")
        ep_group = edp_group = None
        for start in range(0, world, ep):
            ranks = list(range(start, start + ep))
            g = dist.new_group(ranks)
            if rank in ranks:
                ep_group = g
        for offset in range(ep):
            ranks = list(range(offset, world, ep))
            g = dist.new_group(ranks)
            if rank in ranks:
                edp_group = g
        return cls(ep=ep, edp=world // ep, ep_rank=rank % ep, ep_group=ep_group, edp_group=edp_group)


def moe_layers(model: nn.Module) -> list[MoE]:
    return [m for m in model.modules() if isinstance(m, MoE)]


def expert_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The routed experts' stacked weights (what ep splits), in module order."""
    return [p for m in moe_layers(model) for p in m.experts.parameters()]


def expert_parameter_names(model: nn.Module) -> set[str]:
    """Names (as `model.named_parameters()` gives them) of the routed experts' parameters."""
    ids = {id(p) for p in expert_parameters(model)}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def is_expert_key(key: str) -> bool:
    """Whether a state-dict key names a routed expert weight (`...mlp.experts.w_in`; not `.shared.`)."""
    return ".experts." in key


def shard_experts(model: nn.Module, ep: int, rank: int, group) -> nn.Module:
    """Keep this ep rank's slice of every MoE block's stacked experts (the model must be built identically on
    every rank, e.g. from one seed) and route its buffer through all_to_all."""
    for m in moe_layers(model):
        if m.n_experts % ep:
            raise ValueError(f"parallelism.ep={ep} does not divide model.moe.n_experts={m.n_experts}")
        for name, p in list(m.experts.named_parameters()):
            setattr(m.experts, name, nn.Parameter(local_expert_slice(p.detach(), ep, rank).clone()))
        m.set_expert_compute(AllToAllExperts(m.experts, ep, group))
    return model


def local_expert_slice(whole: torch.Tensor, ep: int, rank: int) -> torch.Tensor:
    """Rank `rank`'s experts out of a whole (E, ...) stacked tensor (a view)."""
    local = whole.size(0) // ep
    return whole[rank * local : (rank + 1) * local]


def gather_experts(local: torch.Tensor, groups: ExpertGroups) -> torch.Tensor:
    """The whole (E, ...) tensor from every ep rank's (E/ep, ...) share (a collective over the ep group)."""
    parts = [torch.empty_like(local) for _ in range(groups.ep)]
    dist.all_gather(parts, local.contiguous(), group=groups.ep_group)
    return torch.cat(parts, dim=0)


def reduce_expert_grads(params: list[torch.Tensor], groups: ExpertGroups) -> None:
    """Average the expert gradients over the expert-data-parallel group (the ranks holding the same experts)."""
    if groups.edp == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])  # one collective per step, not one per tensor
    dist.all_reduce(flat, group=groups.edp_group)
    flat.div_(groups.edp)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def global_grad_norm(
    dense: list[torch.Tensor], experts: list[torch.Tensor], groups: ExpertGroups, dense_group=None
) -> torch.Tensor:
    """The whole model's gradient norm: the dense gradients' squared norm (summed over `dense_group` when each rank
    holds a shard of them, FSDP; local when replicated, DDP) plus the experts' (summed over the ep group, whose ranks
    hold disjoint experts). The same value on every rank; collective, so every rank must call it."""

    def squares(params) -> torch.Tensor:
        grads = [p.grad.detach().float() for p in params if p.grad is not None]
        if not grads:
            return torch.zeros((), dtype=torch.float64)
        return torch.stack([torch.linalg.vector_norm(g) ** 2 for g in grads]).sum().double()

    dense_sq, expert_sq = squares(dense), squares(experts)
    if dense_group is not None:
        dist.all_reduce(dense_sq, group=dense_group)
    dist.all_reduce(expert_sq, group=groups.ep_group)
    return (dense_sq + expert_sq).sqrt()


def clip_grad_norm_(
    dense: list[torch.Tensor], experts: list[torch.Tensor], groups: ExpertGroups, max_norm: float, dense_group=None
) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ over the whole model (global_grad_norm), so every rank clips by the same
    coefficient."""
    total = global_grad_norm(dense, experts, groups, dense_group)
    coef = min(max_norm / (float(total) + 1e-6), 1.0)
    if coef < 1.0:
        for p in (*dense, *experts):
            if p.grad is not None:
                p.grad.detach().mul_(coef)
    return total.float()


def whole_expert_state(state: dict, names: set[str], groups: ExpertGroups, prefix: str = "") -> dict:
    """A state dict with each local expert tensor (`prefix + name` for name in `names`) replaced by the whole one."""
    return {k: gather_experts(v, groups) if k.removeprefix(prefix) in names else v for k, v in state.items()}


def local_expert_state(state: dict, names: set[str], groups: ExpertGroups, prefix: str = "") -> dict:
    """The inverse: whole expert tensors (from a checkpoint written at any ep) cut down to this rank's share."""
    return {
        k: local_expert_slice(v, groups.ep, groups.ep_rank).clone() if k.removeprefix(prefix) in names else v
        for k, v in state.items()
    }


def optimizer_expert_slots(optimizer: torch.optim.Optimizer, expert_ids: set[int]) -> set[int]:
    """Indices (as optimizer.state_dict() numbers parameters) of the expert parameters."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return {i for i, p in enumerate(params) if id(p) in expert_ids}


def map_optimizer_expert_states(opt_state: dict, slots: set[int], fn, local_shapes: dict[int, torch.Size]) -> dict:
    """opt_state with every per-element state tensor (exp_avg, exp_avg_sq: a parameter's shape) of an expert slot
    passed through fn (gather to whole, or slice to local); scalars (step) untouched."""
    state = dict(opt_state["state"])
    for i in sorted(slots, key=str):  # the same order on every rank: fn may be a collective
        if i in state:
            state[i] = {
                k: fn(v) if isinstance(v, torch.Tensor) and v.dim() > 0 and _expert_shaped(v, local_shapes[i]) else v
                for k, v in state[i].items()
            }
    return {**opt_state, "state": state}


def _expert_shaped(t: torch.Tensor, local: torch.Size) -> bool:
    return t.shape[1:] == local[1:]
