"""`model.n_params=7.5e9`: a model by size, not by shape.

The shape follows GPT-3's rule for its large models (Brown et al. 2020, Table 2.1: 6.7B is 32 x 4096, 13B
40 x 5140, 175B 96 x 12288): heads of 128 and a width of about 128 per layer (n_embd ~ 128 x n_layer), n_embd a
multiple of 128. Depth and width are searched together (width alone moves the count in steps of ~2 x 128 / n_embd,
6% at 4096), and the shape nearest that aspect whose exact parameter count (bigtrain/plan/params.py, the count of the
torch model) is within 0.5% of the request wins. Everything else of the `model` node (vocabulary, sequence, norm,
MLP kind, key/value heads, tied head) is kept; an MLP width rule (4 x n_embd, or Llama's SwiGLU rule) follows the
new width, so an explicit `model.ffn_hidden_size` is dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bigtrain.errors import ConfigError
from bigtrain.model.shapes import ffn_hidden_size
from bigtrain.plan.params import n_params
from bigtrain.plan.setup import moe_dims

HEAD_DIM = 128  # GPT-3 6.7B-175B, Llama, PaLM
ASPECT = 128  # n_embd / n_layer of GPT-3 6.7B (128), 13B (128.5), 175B (128)
TOLERANCE = 0.005
FORMULA = "GPT-3 Table 2.1 aspect: n_embd ~ 128 x n_layer, head_dim 128, n_embd a multiple of 128; count within 0.5%"


@dataclass(frozen=True)
class _Shape:
    """The fields bigtrain/plan/params.py reads (a Setup's model part)."""

    n_layer: int
    n_head: int
    n_embd: int
    head_dim: int
    block_size: int
    vocab_size: int
    bias: bool
    n_kv_head: int
    ffn_hidden_size: int
    mlp: str
    norm: str
    position: str
    tie_embeddings: bool
    # a mixture of experts' (plan/setup.py moe_dims; 0 experts: dense)
    n_experts: int = 0
    top_k: int = 1
    moe_every: int = 1
    n_shared_experts: int = 0

    kv_heads = property(lambda self: self.n_kv_head or self.n_head)
    ffn = property(lambda self: self.ffn_hidden_size)


def _shape(m, n_layer: int, n_embd: int) -> _Shape:
    n_head = n_embd // HEAD_DIM
    kv = m.get("n_kv_head")
    return _Shape(
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        head_dim=HEAD_DIM,
        block_size=int(m.block_size),
        vocab_size=int(m.vocab_size),
        bias=bool(m.bias),
        n_kv_head=int(kv) if kv else n_head,
        ffn_hidden_size=ffn_hidden_size(
            n_embd, str(m.get("mlp", "gelu")), None, int(m.get("ffn_multiple_of", 256)), m.get("ffn_dim_multiplier")
        ),
        mlp=str(m.get("mlp", "gelu")),
        norm=str(m.get("norm", "layernorm")),
        position=str(m.get("position", "learned")),
        tie_embeddings=bool(m.get("tie_embeddings", True)),
        **moe_dims(m),
    )


def shape_for(m, target: float, tp: int = 1) -> dict:
    """The shape for `target` parameters: {n_layer, n_head, n_embd, n_params, error} (error: relative to target),
    with n_head a multiple of the tensor-parallel degree tp. Raises ConfigError naming the nearest count when no
    shape within 0.5% exists (a tiny target)."""
    # 12 L h^2 with h = ASPECT x L: the depth of the ideal aspect, then every depth within a factor 2 of it.
    ideal = max(1.0, (target / (12 * ASPECT**2)) ** (1 / 3))
    kv = m.get("n_kv_head")
    best, nearest = None, None
    for n_layer in range(max(1, int(ideal / 2)), int(ideal * 2) + 2):
        # the widths (multiples of 128) around the one that gives the count at this depth
        h0 = math.sqrt(max(target, 1) / (12 * n_layer))
        step = HEAD_DIM * math.lcm(tp, int(kv or 1))  # whole n_kv_head groups of query heads over the tp ranks
        for n_embd in {max(step, step * round(h0 / step) + d * step) for d in (-2, -1, 0, 1, 2)}:
            count = n_params(_shape(m, n_layer, n_embd))
            error = count / target - 1
            skew = abs(math.log(n_embd / (ASPECT * n_layer)))
            if nearest is None or abs(error) < abs(nearest[0]):
                nearest = (error, n_layer, n_embd, count)
            if abs(error) <= TOLERANCE and (best is None or skew < best[0]):
                best = (skew, n_layer, n_embd, count, error)
    if best is None:
        error, n_layer, n_embd, count = nearest
        raise ConfigError(
            f"model.n_params={target:g}: no shape with heads of {HEAD_DIM} (a multiple of tp={tp} and n_kv_head={kv} of them) is within "
            f"{TOLERANCE:.1%} of it (nearest: "
            f"n_layer={n_layer} n_embd={n_embd}, {count:,} parameters, {error:+.2%}); ask for a nearby count, a smaller "
            f"parallelism.tp, or set model.n_layer/n_head/n_embd"
        )
    _, n_layer, n_embd, count, error = best
    return {"n_layer": n_layer, "n_head": n_embd // HEAD_DIM, "n_embd": n_embd, "n_params": count, "error": error}


def apply_model_size(cfg) -> str | None:
    """Set cfg.model's n_layer / n_head / n_embd from cfg.model.n_params (no-op when it is null) and return the line
    that says what was chosen. Idempotent: the shape depends on the request, not on the shape it replaces."""
    m = cfg.model
    target = m.get("n_params")
    if target is None:
        return None
    if not target > 0:
        raise ConfigError(f"model.n_params={target} must be a positive parameter count (e.g. 7.5e9) or null")
    chosen = shape_for(m, float(target), int(cfg.parallelism.tp))
    m.n_layer, m.n_head, m.n_embd = chosen["n_layer"], chosen["n_head"], chosen["n_embd"]
    m.head_dim = None  # n_embd / n_head = 128
    m.ffn_hidden_size = None  # the MLP rule follows the new width
    return (
        f"bigtrain: model.n_params={target:g} -> n_layer={chosen['n_layer']} n_head={chosen['n_head']} "
        f"n_embd={chosen['n_embd']} ({chosen['n_params']:,} parameters, {chosen['error']:+.2%}; {FORMULA})"
    )
