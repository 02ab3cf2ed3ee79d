"""Tensor parallelism (Megatron-LM's column/row split, through DTensor) and FSDP2 over the data axis: `parallelize_gpt`.

Per block, the attention's q, k and v projections and the MLP's input layers (GELU's c_fc, SwiGLU's gate and up)
are split by output columns (ColwiseParallel: each rank computes whole heads / a slice of the hidden units), the two
output projections (c_proj, SwiGLU's down) by input rows (RowwiseParallel: partial sums, all-reduced). One
all-reduce per sub-layer in each direction; everything between (rotary, SDPA, GELU, SiLU * up) runs on local
shards. `CausalSelfAttention` counts its heads from the tensor, so a rank with n_head / tp query heads and
n_kv_head / tp key/value heads (grouped-query: the narrower k and v split the same way) needs no change to the model.

The token table and the output head share one row-sharded (vocab-parallel) matrix, tied as in the unsharded GPT
(untied, the head is its own column-sharded matrix). The position table and norms stay whole on every tensor-parallel rank, as Replicate DTensors on the same mesh:
every parameter is then a DTensor on one mesh, which torch's gradient-norm clipping and FSDP2 (`fully_shard` over
the data axis, stacking a second shard dimension on top: 2-D) need. Their gradients come out identical on every TP
rank: the backward of each column-parallel layer all-reduces the gradient of its (replicated) input.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pytorch_lightning.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Replicate, distribute_module
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

from bigtrain.parallel.launcher import RunDirLauncherMixin
from bigtrain.parallel.neutral_load import LoadsNeutralCheckpoints
from bigtrain.parallel.sharded_checkpoints import MarksCompleteCheckpoints

DP, TP = "data_parallel", "tensor_parallel"  # Lightning's ModelParallelStrategy names its mesh axes so


class SplitQKV(nn.Module):
    """The fused c_attn (q, k, v for all heads) as three Linear layers with the same rows.

    Column-sharding the fused (attn_dim + 2 * kv_dim, C) matrix would hand rank 0 all of q and part of k; sharding
    q, k and v separately gives every rank whole heads of each. The forward concatenates the local outputs in
    (q, k, v) order, which is what `CausalSelfAttention` splits. Checkpoint keys become `c_attn.{q,k,v}.weight`
    under TP (param_names.py maps the names both ways). widths: (attn_dim, kv_dim, kv_dim); k and v are narrower than
    q under grouped-query attention."""

    def __init__(self, fused: nn.Linear, widths: tuple[int, int, int]):
        super().__init__()
        assert sum(widths) == fused.out_features, (widths, fused.out_features)
        parts, start = [], 0
        for width in widths:
            part = nn.Linear(fused.in_features, width, bias=fused.bias is not None, device="meta")
            part.weight = nn.Parameter(fused.weight.detach()[start : start + width].clone())
            if fused.bias is not None:
                part.bias = nn.Parameter(fused.bias.detach()[start : start + width].clone())
            parts.append(part)
            start += width
        self.q, self.k, self.v = parts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)  # (B, T, 3 * local heads * hs)


def _inputs_to_replicate(module: nn.Module, inputs: tuple, mesh: DeviceMesh) -> tuple:
    return tuple(
        DTensor.from_local(a, mesh, [Replicate()], run_check=False)
        if isinstance(a, torch.Tensor) and not isinstance(a, DTensor)
        else a
        for a in inputs
    )


def _output_to_local(module: nn.Module, output, mesh: DeviceMesh):
    return output.to_local() if isinstance(output, DTensor) else output


def replicate(module: nn.Module, mesh: DeviceMesh) -> None:
    """Make module's own parameters Replicate DTensors on mesh; it takes and returns plain (identical) tensors."""
    distribute_module(module, mesh, input_fn=_inputs_to_replicate, output_fn=_output_to_local)


def tensor_parallelize(model: nn.Module, tp_mesh: DeviceMesh) -> nn.Module:
    """Shard a bigtrain GPT's blocks over tp_mesh in place (see the module docstring); returns the model."""
    c = model.config
    mlp_plan = (
        {"mlp.gate_proj": ColwiseParallel(), "mlp.up_proj": ColwiseParallel(), "mlp.down_proj": RowwiseParallel()}
        if c.mlp == "swiglu"
        else {"mlp.c_fc": ColwiseParallel(), "mlp.c_proj": RowwiseParallel()}
    )
    for block in model.transformer.h:
        block.attn.c_attn = SplitQKV(block.attn.c_attn, (c.attn_dim, c.kv_dim, c.kv_dim))
        parallelize_module(
            block,
            tp_mesh,
            {
                "attn.c_attn.q": ColwiseParallel(),
                "attn.c_attn.k": ColwiseParallel(),
                "attn.c_attn.v": ColwiseParallel(),
                "attn.c_proj": RowwiseParallel(),
                **mlp_plan,
            },
        )
        replicate(block.ln_1, tp_mesh)
        replicate(block.ln_2, tp_mesh)
    t = model.transformer
    # Vocabulary-parallel token table and output head (Megatron-LM): both shard the (vocab, C) matrix by rows; tied,
    # one DTensor serves both ends. The lookup is masked per rank and all-reduced; the logits are all-gathered.
    parallelize_module(t.wte, tp_mesh, RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate()))
    if c.tie_embeddings:
        model.lm_head.weight = t.wte.weight
    parallelize_module(model.lm_head, tp_mesh, ColwiseParallel(output_layouts=Replicate()))
    if c.tie_embeddings:
        model.lm_head.weight = t.wte.weight  # parallelize_module wrapped it in a new Parameter: tie them again
    for name in ("wpe", "ln_f"):
        if name in t:  # rotary positions have no table
            replicate(t[name], tp_mesh)
    return model


def parallelize_gpt(model: nn.Module, mesh: DeviceMesh, fsdp: bool) -> nn.Module:
    """Tensor parallelism over mesh's TP axis, then (fsdp) FSDP2 over its data axis: per block and the root."""
    tensor_parallelize(model, mesh[TP])
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        dp_mesh = mesh[DP]
        for block in model.transformer.h:
            fully_shard(block, mesh=dp_mesh)
        fully_shard(model, mesh=dp_mesh)  # embeddings, final norm and the tied head
    return model


class TensorParallelStrategy(
    LoadsNeutralCheckpoints, MarksCompleteCheckpoints, RunDirLauncherMixin, ModelParallelStrategy
):
    """Lightning's ModelParallelStrategy (a data_parallel x tensor_parallel device mesh, distributed checkpoints)
    with bigtrain's launcher for the extra local ranks and the GPT's parallelize step as `parallelize_model`, which
    the LightningModule calls from configure_model (where this strategy expects parallelization to happen). Another
    layout's checkpoint arrives in the layout-neutral form (neutral_load.py)."""

    def __init__(self, run_dir: Path, fsdp: bool, **kwargs):
        super().__init__(run_dir=run_dir, **kwargs)
        self.fsdp = fsdp

    def parallelize_model(self, model: nn.Module) -> nn.Module:
        return parallelize_gpt(model, self.device_mesh, self.fsdp)
