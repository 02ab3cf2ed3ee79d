"""A mixture-of-experts MLP (Shazeer et al. 2017; GShard, Lepikhin et al. 2020; Switch, Fedus et al. 2021): a
router sends each token to its top_k of n_experts MLPs, each expert takes at most `capacity` tokens per batch.

- The router is a bias-free linear map to n_experts logits, computed in fp32 (under bf16 autocast too: Switch's
  "selective precision", the softmax over experts is where low precision makes routing unstable).
- Top-k weights: top_k=1 (Switch) scales the expert's output by its router probability; top_k>1 (GShard, Mixtral)
  renormalises the k chosen probabilities to sum to one (= Mixtral's softmax over the top-k logits).
- Capacity: each expert takes ceil(capacity_factor * top_k * tokens / n_experts) assignments (at most `tokens`).
  Assignments are served first choices first (every token's first choice before any second choice, GShard's
  priority), in token order within a choice; the rest are dropped. A dropped assignment adds nothing, so a token
  whose every choice was dropped passes through the block's residual unchanged.
- Experts are stacked weights (n_experts, in, out): the kept tokens are scattered into an (E, C, d) dispatch
  buffer and every expert runs at once as a batched matmul (torch.bmm), not a Python loop over experts.
- Losses, returned to the caller (the LightningModule weighs and adds them): the Switch load-balancing loss
  E * sum_i f_i P_i, with f_i the fraction of the routed assignments (top-k, before dropping) that chose expert i
  and P_i the mean router probability of expert i (1.0 when perfectly balanced; top_k=1 is Switch's exact loss,
  top_k=2 is Hugging Face Mixtral's divided by k), and the router z-loss (ST-MoE, Zoph et al. 2022):
  mean over tokens of logsumexp(logits)^2.
- n_shared_experts (DeepSeekMoE): MLPs every token goes through besides its routed ones, held as one MLP of
  n_shared_experts x ffn width (the sum of that many experts' hidden units; one output bias).

Torch only: expert parallelism, if any, is layered on from bigtrain/parallel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Routing:
    """What one routing decision produced, for the layer's forward and for tests.

    token, expert, slot, weight: one entry per KEPT assignment (token index, its expert, its row in that expert's
    capacity, its combine weight); probs/logits: (N, E) fp32; load: (E,) fraction of all N*k assignments that
    chose each expert (before dropping); dropped_frac: fraction of the assignments dropped past capacity."""

    token: torch.Tensor
    expert: torch.Tensor
    slot: torch.Tensor
    weight: torch.Tensor
    logits: torch.Tensor
    probs: torch.Tensor
    load: torch.Tensor
    dropped_frac: torch.Tensor
    capacity: int


def expert_capacity(n_tokens: int, n_experts: int, top_k: int, capacity_factor: float) -> int:
    """Assignments one expert takes: ceil(capacity_factor * top_k * n_tokens / n_experts), between 1 and n_tokens
    (a token chooses an expert at most once, so n_tokens never drops anything)."""
    return max(1, min(n_tokens, math.ceil(capacity_factor * top_k * n_tokens / n_experts)))


def route(logits: torch.Tensor, top_k: int, capacity: int) -> Routing:
    """Route N tokens by their fp32 router logits (N, E): top-k choice, combine weights, capacity and dropping."""
    n, e = logits.shape
    probs = logits.softmax(dim=-1)
    top_p, top_i = probs.topk(top_k, dim=-1)  # (N, k), descending
    weight = top_p / top_p.sum(dim=-1, keepdim=True) if top_k > 1 else top_p
    # Choice-major order (all first choices, then all second ones): the slot of an assignment in its expert is
    # the number of earlier assignments to the same expert.
    expert = top_i.t().reshape(-1)  # (k*N,)
    onehot = F.one_hot(expert, e)  # (k*N, E)
    slot = ((onehot.cumsum(dim=0) - 1) * onehot).sum(dim=-1)  # (k*N,)
    keep = slot < capacity
    token = torch.arange(n, device=logits.device).repeat(top_k)
    load = onehot.float().mean(dim=0)  # (E,), sums to one
    dropped = 1.0 - keep.float().mean()
    return Routing(
        token=token[keep],
        expert=expert[keep],
        slot=slot[keep],
        weight=weight.t().reshape(-1)[keep],
        logits=logits,
        probs=probs,
        load=load,
        dropped_frac=dropped,
        capacity=capacity,
    )


def load_balancing_loss(probs: torch.Tensor, load: torch.Tensor) -> torch.Tensor:
    """Switch's auxiliary loss E * sum_i f_i P_i (f = load, not differentiable; P = mean router probability)."""
    return probs.size(-1) * torch.sum(load.detach() * probs.mean(dim=0))


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE's z-loss: mean over tokens of logsumexp(logits)^2, keeping router logits small."""
    return torch.logsumexp(logits, dim=-1).pow(2).mean()


class Experts(nn.Module):
    """n_experts MLPs of one kind (gelu: fc, proj; swiglu: gate, up, down) as stacked (E, in, out) weights, applied
    to an (E, C, d) buffer with torch.bmm. Initialised like the dense MLP (N(0, 0.02); output projection scaled)."""

    def __init__(self, n_experts: int, n_embd: int, ffn: int, mlp: str, bias: bool, residual_std: float):
        super().__init__()
        self.mlp = mlp
        self.residual_std = residual_std
        e = n_experts
        self.w_in = nn.Parameter(torch.empty(e, n_embd, ffn))
        self.w_gate = nn.Parameter(torch.empty(e, n_embd, ffn)) if mlp == "swiglu" else None
        self.w_out = nn.Parameter(torch.empty(e, ffn, n_embd))
        self.b_in = nn.Parameter(torch.empty(e, 1, ffn)) if bias else None
        self.b_gate = nn.Parameter(torch.empty(e, 1, ffn)) if bias and mlp == "swiglu" else None
        self.b_out = nn.Parameter(torch.empty(e, 1, n_embd)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.w_in, std=0.02)
        nn.init.normal_(self.w_out, std=self.residual_std)
        if self.w_gate is not None:
            nn.init.normal_(self.w_gate, std=0.02)
        for b in (self.b_in, self.b_gate, self.b_out):
            if b is not None:
                nn.init.zeros_(b)

    def _lin(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return torch.baddbmm(b, x, w) if b is not None else torch.bmm(x, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (E, C, d) -> (E, C, d)."""
        if self.mlp == "swiglu":
            h = F.silu(self._lin(x, self.w_gate, self.b_gate)) * self._lin(x, self.w_in, self.b_in)
        else:
            h = F.gelu(self._lin(x, self.w_in, self.b_in), approximate="tanh")
        return self._lin(h, self.w_out, self.b_out)


class MoE(nn.Module):
    """The routed MLP of an MoE block. forward(x (B, T, d)) -> (B, T, d); after each forward `self.stats` holds the
    step's aux_loss and z_loss (tensors with gradients) and its load (E,) and dropped_frac (detached)."""

    def __init__(
        self,
        n_embd: int,
        ffn: int,
        mlp: str,
        bias: bool,
        n_layer: int,
        n_experts: int,
        top_k: int,
        capacity_factor: float,
        eval_capacity_factor: float,
        n_shared_experts: int = 0,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.n_experts, self.top_k = n_experts, top_k
        self.capacity_factor, self.eval_capacity_factor = capacity_factor, eval_capacity_factor
        residual_std = 0.02 / math.sqrt(2 * n_layer)
        self.router = nn.Linear(n_embd, n_experts, bias=False)
        nn.init.normal_(self.router.weight, std=0.02)
        self.experts = Experts(n_experts, n_embd, ffn, mlp, bias, residual_std)
        self.shared = None
        if n_shared_experts:
            self.shared = Experts(1, n_embd, n_shared_experts * ffn, mlp, bias, residual_std)
        self.dropout = nn.Dropout(dropout)
        self.stats: dict[str, torch.Tensor] = {}
        self.set_expert_compute(None)

    def set_expert_compute(self, fn) -> None:
        """What runs the (E, C, d) dispatch buffer through the experts: None, the local stacked experts; or a callable
        that sends each expert's rows to the rank holding it and back (expert parallelism, bigtrain/parallel). Kept
        out of the module tree (not a submodule), so state_dict keys stay those of the plain model."""
        self.__dict__["_expert_compute"] = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (N, d)
        n, d = x.shape
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = F.linear(x.float(), self.router.weight.float())  # (N, E) in fp32
        cf = self.capacity_factor if self.training else self.eval_capacity_factor
        r = route(logits, self.top_k, expert_capacity(n, self.n_experts, self.top_k, cf))
        e, c = self.n_experts, r.capacity
        row = r.expert * c + r.slot  # row of each kept assignment in the flattened (E*C, d) buffer
        buffer = x.new_zeros(e * c, d).index_copy(0, row, x[r.token])
        out = (self._expert_compute or self.experts)(buffer.view(e, c, d)).view(e * c, d)
        y = x.new_zeros(n, d).index_add(0, r.token, out[row] * r.weight.to(x.dtype).unsqueeze(-1))
        if self.shared is not None:
            y = y + self.shared(x.unsqueeze(0)).squeeze(0)
        self.stats = {
            "aux_loss": load_balancing_loss(r.probs, r.load),
            "z_loss": router_z_loss(r.logits),
            "load": r.load.detach(),
            "dropped_frac": r.dropped_frac.detach(),
        }
        return self.dropout(y).view(shape)
