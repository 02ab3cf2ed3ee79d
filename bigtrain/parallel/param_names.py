"""The plain GPT's parameter names <-> those of the model-parallel layouts, both directions in one place.

    tensor parallel (tensor_parallel.py)  the fused attention input `h.N.attn.c_attn.{weight,bias}` (rows: q, then k,
                                          then v) is three Linear layers `h.N.attn.c_attn.{q,k,v}.{weight,bias}`
                                          (SplitQKV); every other name is the GPT's own
    pipeline (pipeline.py)                each stage keeps the GPT's names for its slice of the blocks; the last
                                          stage of a tied model holds its own copy of the token table as
                                          `lm_head.weight`
Adam's moments are elementwise, so a parameter's exp_avg / exp_avg_sq split and join exactly as its weight does;
its step is the same count for every part. Used by the layout-neutral reader (neutral.py: model-parallel
checkpoints as sources) and loader (neutral_load.py, pipeline.py: as targets).
"""

from __future__ import annotations

import re

import torch

QKV = ("q", "k", "v")  # SplitQKV's parts, in the fused matrix's row order
_SPLIT = re.compile(r"^(.*\.attn\.c_attn)\.([qkv])\.(weight|bias)$")
_FUSED = re.compile(r"^(.*\.attn\.c_attn)\.(weight|bias)$")


def qkv_widths(gpt_config) -> tuple[int, int, int]:
    """Rows of q, k and v in the fused c_attn (k and v narrower under grouped-query attention)."""
    return (gpt_config.attn_dim, gpt_config.kv_dim, gpt_config.kv_dim)


def _join(parts: list, dim: int = 0):
    if isinstance(parts[0], dict):  # an Adam state: join the moments, keep the (shared) step
        return {k: _join([p[k] for p in parts]) if torch.is_tensor(v) and v.dim() else v for k, v in parts[0].items()}
    return torch.cat(parts, dim=dim)


def _split(value, widths: tuple[int, int, int]) -> list:
    if isinstance(value, dict):
        # A 0-dim step is copied, not shared: torch's Adam increments each parameter's step tensor in place.
        parts = {
            k: _split(v, widths) if torch.is_tensor(v) and v.dim() else [_copy(v) for _ in QKV]
            for k, v in value.items()
        }
        return [{k: parts[k][i] for k in value} for i in range(3)]
    return list(torch.split(value, list(widths), dim=0))


def _copy(v):
    return v.clone() if torch.is_tensor(v) else v


def fuse_qkv(by_name: dict) -> dict:
    """Tensor-parallel names -> the GPT's: each split q/k/v triple (weights, or Adam states) joined row-wise.
    Any other name (an unsplit model's, or FSDP's) passes through unchanged."""
    out, triples = {}, {}
    for name, value in by_name.items():
        m = _SPLIT.match(name)
        if m:
            triples.setdefault(f"{m.group(1)}.{m.group(3)}", {})[m.group(2)] = value
        else:
            out[name] = value
    for fused, parts in triples.items():
        if set(parts) != set(QKV):
            raise ValueError(f"{fused}: tensor-parallel parts {sorted(parts)}, expected q, k and v")
        out[fused] = _join([parts[p] for p in QKV])
    return out


def split_qkv(by_name: dict, gpt_config) -> dict:
    """The GPT's names -> tensor parallel's: each fused c_attn weight/bias (or its Adam state) split into q, k, v."""
    widths = qkv_widths(gpt_config)
    out = {}
    for name, value in by_name.items():
        m = _FUSED.match(name)
        if not m:
            out[name] = value
            continue
        for part, piece in zip(QKV, _split(value, widths), strict=True):
            out[f"{m.group(1)}.{part}.{m.group(2)}"] = piece
    return out


def stage_groups(gpt_config, stage: int, pp: int) -> list[list[str]]:
    """The names of a pipeline stage's parameters in its AdamW groups (decayed matrices, then the rest), in the
    order training/module.py builds them: ids of the stage's torch optimizer state are positions in this order."""
    from bigtrain.model import GPT
    from bigtrain.model.param_groups import decay_split
    from bigtrain.parallel.pipeline import GPTStage

    with torch.device("meta"):
        named = [(n, p.dim()) for n, p in GPTStage(GPT(gpt_config), stage, pp).named_parameters()]
    return [list(g) for g in decay_split(named)]


def stage_copies_head(gpt_config, stage: int, pp: int) -> bool:
    """Whether this stage's `lm_head.weight` is its own copy of the tied token table (the last of several stages)."""
    return bool(gpt_config.tie_embeddings) and pp > 1 and stage == pp - 1


TIED_HEAD, TOKEN_TABLE = "lm_head.weight", "transformer.wte.weight"
