"""Shape arithmetic shared by the torch model, the config validation, the DeepSpeed config and the torch-free
planner (no imports): one place for the rules that turn a `model` config into tensor widths, so the model that
trains and the planner that counts its parameters never disagree."""

from __future__ import annotations


def head_dim_of(n_embd: int, n_head: int, head_dim: int | None = None) -> int:
    """Per-head width: head_dim when set (GPT-3 13B decouples it from n_embd), else n_embd // n_head."""
    return head_dim or n_embd // n_head


def attn_width(n_embd: int, n_head: int, head_dim: int | None = None) -> int:
    """Width of the concatenated heads (= n_embd unless head_dim decouples it)."""
    return n_head * head_dim_of(n_embd, n_head, head_dim)


NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")
POSITIONS = ("learned", "rope")


def swiglu_hidden_size(n_embd: int, multiple_of: int = 256, ffn_dim_multiplier: float | None = None) -> int:
    """Llama's SwiGLU width (Meta's llama/model.py, `FeedForward`): two thirds of 4 x n_embd, so the three matrices
    hold as many parameters as GELU's two at 4 x n_embd, times ffn_dim_multiplier, rounded up to multiple_of.
    Llama 2 7B: 4096 -> 11008; Llama 3 8B (x1.3, multiple of 1024): 4096 -> 14336."""
    hidden = int(2 * 4 * n_embd / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def ffn_hidden_size(
    n_embd: int,
    mlp: str = "gelu",
    ffn_hidden_size: int | None = None,
    multiple_of: int = 256,
    ffn_dim_multiplier: float | None = None,
) -> int:
    """The MLP's hidden width: ffn_hidden_size when set, else 4 x n_embd (GELU) or Llama's rule (SwiGLU)."""
    if ffn_hidden_size:
        return int(ffn_hidden_size)
    if mlp == "swiglu":
        return swiglu_hidden_size(n_embd, multiple_of, ffn_dim_multiplier)
    return 4 * n_embd


def model_ffn_hidden_size(m) -> int:
    """ffn_hidden_size of a `model` config node (an OmegaConf node or a mapping with the schema's keys)."""
    return ffn_hidden_size(
        m["n_embd"],
        m.get("mlp", "gelu"),
        m.get("ffn_hidden_size"),
        m.get("ffn_multiple_of", 256),
        m.get("ffn_dim_multiplier"),
    )
