"""Parameter counts of bigtrain's GPT (bigtrain/model/gpt.py), from the shape alone.

`n_params` counts exactly what the torch model holds (tied token/output matrix once, biases and norm gains
included) for every shape the model supports (grouped-query k/v, SwiGLU, RMSNorm, rotary positions, untied head),
so planned bytes can be checked against real tensors. `megatron_n_params` is the closed form of
Narayanan et al. 2021 ("Efficient Large-Scale Language Model Training on GPU Clusters Using Megatron-LM", eq. 2):
P = 12 l h^2 (1 + 13/(12 h) + (V + s)/(12 l h)), which is the same count less the final LayerNorm (2h).
"""

from __future__ import annotations

from bigtrain.plan.moe import inactive_params, mlp_params, moe_mlp_delta, n_moe_layers
from bigtrain.plan.setup import Setup


def layer_params(s: Setup) -> int:
    """One transformer block: attention (q for n_head heads, k and v for n_kv_head heads, output projection), the
    MLP (GELU: 2 matrices of ffn; SwiGLU: 3), two norms (LayerNorm: gain + bias; RMSNorm: gain)."""
    h, a, kv, f, b = s.n_embd, s.n_head * s.head_dim, s.kv_heads * s.head_dim, s.ffn, int(s.bias)
    attn = h * (a + 2 * kv) + (a + 2 * kv) * b + a * h + h * b
    mlp = (3 * h * f + 2 * f * b if s.mlp == "swiglu" else 2 * h * f + f * b) + h * b
    return attn + mlp + 2 * norm_params(s)


def norm_params(s: Setup) -> int:
    return s.n_embd * (1 + int(s.bias)) if s.norm == "layernorm" else s.n_embd


def embedding_params(s: Setup) -> int:
    """Token table, the output head when it is not tied to it, and learned positions (rotary ones have none)."""
    tables = 1 if s.tie_embeddings else 2
    return (tables * s.vocab_size + (s.block_size if s.position == "learned" else 0)) * s.n_embd


def n_params(s: Setup) -> int:
    """All parameters; an MoE block holds its router and experts instead of the dense MLP (bigtrain/plan/moe.py)."""
    moe = n_moe_layers(s) * moe_mlp_delta(s)
    return s.n_layer * layer_params(s) + moe + embedding_params(s) + norm_params(s)  # + final norm


def active_params(s: Setup) -> int:
    """Parameters one token passes through: n_params less the routed experts it is not sent to (= n_params when
    dense)."""
    return n_params(s) - inactive_params(s)


def matmul_params(s: Setup, n: int) -> int:
    """Parameters that multiply activations (the 6N of FLOPs): all of them but an untied input token table, which
    is a lookup (tied, the table is also the output layer's matrix and counts once), and but the experts a token
    is not routed to (a mixture of experts' FLOPs follow its active parameters)."""
    return n - (0 if s.tie_embeddings else s.vocab_size * s.n_embd) - inactive_params(s)


def megatron_n_params(s: Setup) -> int:
    """Narayanan et al. 2021, eq. 2 (assumes head_dim x n_head = n_embd and biases)."""
    layers, h, v, sq = s.n_layer, s.n_embd, s.vocab_size, s.block_size
    return round(12 * layers * h * h * (1 + 13 / (12 * h) + (v + sq) / (12 * layers * h)))


def largest_module_params(s: Setup) -> int:
    """Parameters of the biggest leaf module, the unit ZeRO-3 gathers at once (DeepSpeed's `largest_layer_params`
    in estimate_zero3_model_states_mem_needs): the token table (or untied head), one MLP projection, or the fused
    q/k/v projection."""
    h, b, f = s.n_embd, int(s.bias), s.ffn
    qkv = s.n_head * s.head_dim + 2 * s.kv_heads * s.head_dim
    experts = s.n_experts * mlp_params(s, f) if s.n_experts else 0  # one module holds all experts, stacked
    return max(s.vocab_size * h, f * h + f * b, h * qkv + qkv * b, experts)


def tensor_sizes(s: Setup) -> list[tuple[int, int]]:
    """(numel, how many) for every parameter tensor of the model, tied ones once."""
    h, a, kv, f, b = s.n_embd, s.n_head * s.head_dim, s.kv_heads * s.head_dim, s.ffn, bool(s.bias)
    n_in = 2 if s.mlp == "swiglu" else 1  # matrices that widen to f (SwiGLU: gate and up)
    per_layer = [(h * (a + 2 * kv), 1), (a * h, 1), (h, 2)]  # attention matrices, norm gains
    mlp = [(h * f, n_in), (f * h, 1)]  # a dense block's MLP
    if b:
        per_layer += [(a + 2 * kv, 1), (h, 1)]  # attention biases
        per_layer += [(h, 2)] if s.norm == "layernorm" else []  # LayerNorm biases
        mlp += [(f, n_in), (h, 1)]
    moe = n_moe_layers(s)
    sizes = [(numel, count * s.n_layer) for numel, count in per_layer]
    sizes += [(numel, count * (s.n_layer - moe)) for numel, count in mlp]
    if moe:  # router, stacked experts (one tensor per matrix kind), the shared experts' MLP
        e, sh = s.n_experts, s.n_shared_experts * f
        sizes += [(e * h, moe), (e * h * f, n_in * moe), (e * f * h, moe)]
        sizes += [(e * f, n_in * moe), (e * h, moe)] if b else []
        if sh:
            sizes += [(h * sh, n_in * moe), (sh * h, moe)] + ([(sh, n_in * moe), (h, moe)] if b else [])
    sizes += [(s.vocab_size * h, 1 if s.tie_embeddings else 2)]  # wte (= lm_head when tied)
    sizes += [(s.block_size * h, 1)] if s.position == "learned" else []  # wpe
    sizes += [(h, 1 + int(b and s.norm == "layernorm"))]  # final norm
    return sizes


def persistent_params(s: Setup, threshold: int) -> int:
    """Parameters ZeRO-3 keeps whole on every rank: tensors below DeepSpeed's stage3_param_persistence_threshold."""
    return sum(numel * count for numel, count in tensor_sizes(s) if numel < threshold)
