"""Shape arithmetic of the GPT that the torch-free planner and the DeepSpeed config need too (no imports)."""

from __future__ import annotations


def head_dim_of(n_embd: int, n_head: int, head_dim: int | None = None) -> int:
    """Per-head width: head_dim when set (GPT-3 13B decouples it from n_embd), else n_embd // n_head."""
    return head_dim or n_embd // n_head


def attn_width(n_embd: int, n_head: int, head_dim: int | None = None) -> int:
    """Width of the concatenated heads (= n_embd unless head_dim decouples it)."""
    return n_head * head_dim_of(n_embd, n_head, head_dim)
