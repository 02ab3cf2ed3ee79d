"""Expert parallelism (GShard): each of ep ranks holds n_experts / ep of every MoE block's experts; the tokens
routed to an expert travel to its rank and back with all_to_all (autograd-aware, works on gloo).

Every rank routes its own tokens with its own capacity, exactly as without ep, and fills its (E, C, d) dispatch
buffer. The buffer's expert rows are grouped by owner rank, exchanged with all_to_all, run through the local
experts as one batched matmul over (E/ep, ep x C, d), and sent back. Gradients: the backward all_to_all brings
every rank's contribution to an expert to its owner, so an expert's gradient is the SUM over the ep ranks'
losses; data parallelism averages, so `scale_expert_grads` divides expert gradients by ep before they are averaged
over the expert-data-parallel group (dp / ep ranks holding the same experts).

Layer-level only: not yet wired into parallelism.ep, the strategies, checkpointing or the CLI (see the report of
issue 15).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.nn.functional import all_to_all_single

from bigtrain.model.moe import MoE


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
        out = self.local(h).view(local, self.ep, c, d).transpose(0, 1).contiguous().view(e, c, d)
        return all_to_all_single(torch.empty_like(out), out, group=self.group)


def expert_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for m in model.modules() if isinstance(m, MoE) for p in m.experts.parameters()]


def shard_experts(model: nn.Module, ep: int, rank: int, group) -> nn.Module:
    """Keep this ep rank's slice of every MoE block's stacked experts (the model must be built identically on
    every rank, e.g. from one seed) and route its buffer through all_to_all."""
    for m in model.modules():
        if isinstance(m, MoE):
            if m.n_experts % ep:
                raise ValueError(f"parallelism.ep={ep} does not divide model.moe.n_experts={m.n_experts}")
            local = m.n_experts // ep
            for name, p in list(m.experts.named_parameters()):
                setattr(m.experts, name, nn.Parameter(p.detach()[rank * local : (rank + 1) * local].clone()))
            m.set_expert_compute(AllToAllExperts(m.experts, ep, group))
    return model


def scale_expert_grads(model: nn.Module, ep: int) -> None:
    """Expert gradients arrive summed over the ep ranks' losses: divide by ep so that averaging over the
    expert-data-parallel group yields the global mean, as data parallelism gives the dense parameters."""
    for p in expert_parameters(model):
        if p.grad is not None:
            p.grad.div_(ep)


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()
