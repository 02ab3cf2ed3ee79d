"""Parameter counts of bigtrain's GPT (bigtrain/model/gpt.py), from the shape alone.

`n_params` counts exactly what the torch model holds (tied token/output matrix once, biases and LayerNorm gains
included), so planned bytes can be checked against real tensors. `megatron_n_params` is the closed form of
Narayanan et al. 2021 ("Efficient Large-Scale Language Model Training on GPU Clusters Using Megatron-LM", eq. 2):
P = 12 l h^2 (1 + 13/(12 h) + (V + s)/(12 l h)), which is the same count less the final LayerNorm (2h).
"""

from __future__ import annotations

from bigtrain.plan.setup import Setup


def layer_params(s: Setup) -> int:
    """One transformer block: attention (qkv + output projection), 4x MLP, two LayerNorms."""
    h, a, b = s.n_embd, s.n_head * s.head_dim, int(s.bias)
    attn = h * 3 * a + 3 * a * b + a * h + h * b
    mlp = h * 4 * h + 4 * h * b + 4 * h * h + h * b
    norms = 2 * (h + h * b)
    return attn + mlp + norms


def embedding_params(s: Setup) -> int:
    """Token table (shared with the output layer) and learned positions."""
    return (s.vocab_size + s.block_size) * s.n_embd


def n_params(s: Setup) -> int:
    return s.n_layer * layer_params(s) + embedding_params(s) + s.n_embd * (1 + int(s.bias))  # + final LayerNorm


def megatron_n_params(s: Setup) -> int:
    """Narayanan et al. 2021, eq. 2 (assumes head_dim x n_head = n_embd and biases)."""
    layers, h, v, sq = s.n_layer, s.n_embd, s.vocab_size, s.block_size
    return round(12 * layers * h * h * (1 + 13 / (12 * h) + (v + sq) / (12 * layers * h)))


def largest_module_params(s: Setup) -> int:
    """Parameters of the biggest leaf module, the unit ZeRO-3 gathers at once (DeepSpeed's `largest_layer_params`
    in estimate_zero3_model_states_mem_needs): the token table or one 4x MLP projection."""
    h, b = s.n_embd, int(s.bias)
    return max(s.vocab_size * h, 4 * h * h + 4 * h * b, 3 * h * s.n_head * s.head_dim + 3 * s.n_head * s.head_dim * b)


def tensor_sizes(s: Setup) -> list[tuple[int, int]]:
    """(numel, how many) for every parameter tensor of the model, tied ones once."""
    h, a, b = s.n_embd, s.n_head * s.head_dim, bool(s.bias)
    per_layer = [(h * 3 * a, 1), (a * h, 1), (h * 4 * h, 1), (4 * h * h, 1), (h, 2)]  # matrices, LayerNorm gains
    if b:
        per_layer += [(3 * a, 1), (h, 1), (4 * h, 1), (h, 1), (h, 2)]  # linear biases, LayerNorm biases
    sizes = [(numel, count * s.n_layer) for numel, count in per_layer]
    sizes += [(s.vocab_size * h, 1), (s.block_size * h, 1), (h, 1 + int(b))]  # wte (= lm_head), wpe, ln_f
    return sizes


def persistent_params(s: Setup, threshold: int) -> int:
    """Parameters ZeRO-3 keeps whole on every rank: tensors below DeepSpeed's stage3_param_persistence_threshold."""
    return sum(numel * count for numel, count in tensor_sizes(s) if numel < threshold)
