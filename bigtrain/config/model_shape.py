"""Rules of the model's own shape (norm, MLP, positions, key/value heads) and how tensor parallelism splits it.

Called from the one validation step (bigtrain/config/validate.py); kept in its own module so the rules of the model
family sit together. Each broken rule is one phrase naming the value and what would be valid.
"""

from __future__ import annotations

from bigtrain.model.shapes import MLPS, NORMS, POSITIONS, model_ffn_hidden_size


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def model_shape_problems(m, tp: int = 1) -> list[str]:
    """Broken rules of a `model` config node; tp is the tensor-parallel degree that must split its heads."""
    p: list[str] = []
    if m.norm not in NORMS:
        p.append(f"model.norm={m.norm} is unknown; valid: {', '.join(NORMS)}")
    if m.mlp not in MLPS:
        p.append(f"model.mlp={m.mlp} is unknown; valid: {', '.join(MLPS)}")
    if m.position not in POSITIONS:
        p.append(f"model.position={m.position} is unknown; valid: {', '.join(POSITIONS)}")
    if not m.norm_eps > 0:
        p.append(f"model.norm_eps={m.norm_eps} must be positive")
    for key in ("ffn_hidden_size", "ffn_dim_multiplier"):
        if m[key] is not None and not m[key] > 0:
            p.append(f"model.{key}={m[key]} must be positive or null")
    if m.ffn_multiple_of <= 0:
        p.append(f"model.ffn_multiple_of={m.ffn_multiple_of} must be positive")
    if m.n_head <= 0 or m.n_embd <= 0 or (m.head_dim is not None and m.head_dim <= 0):
        return p  # the size rules of validate.py report these; nothing below can be computed
    head_size = m.head_dim or m.n_embd // m.n_head
    n_kv = m.n_kv_head if m.n_kv_head is not None else m.n_head
    if n_kv <= 0 or m.n_head % n_kv != 0:
        p.append(
            f"model.n_head={m.n_head} is not divisible by model.n_kv_head={m.n_kv_head} (each key/value head serves "
            f"a whole group of query heads); valid n_kv_head: {', '.join(map(str, _divisors(m.n_head)))}"
        )
        n_kv = 0
    if m.position == "rope":
        if head_size % 2:
            p.append(
                f"model.position=rope rotates pairs of channels but the head size is odd ({head_size} = "
                f"{'model.head_dim' if m.head_dim else f'n_embd={m.n_embd} / n_head={m.n_head}'}); "
                f"use an even head size, or model.position=learned"
            )
        if not m.rope_theta > 0:
            p.append(f"model.rope_theta={m.rope_theta} must be positive")
    if tp > 1 and n_kv > 0:
        if n_kv % tp and n_kv != m.n_head:  # (with n_kv_head = n_head the n_head rule of validate.py says it)
            valid = [t for t in _divisors(n_kv) if m.n_head % t == 0 and m.n_embd % t == 0]
            p.append(
                f"parallelism.tp={tp} does not divide model.n_kv_head={n_kv}: each rank needs whole key/value heads; "
                f"valid tp: {', '.join(map(str, valid))}"
            )
        ffn = model_ffn_hidden_size(m) if (m.ffn_hidden_size or 1) > 0 else 0
        if ffn > 0 and ffn % tp:
            p.append(
                f"parallelism.tp={tp} does not divide the MLP width {ffn} (model.ffn_hidden_size); pick a tp "
                f"that divides it, or set model.ffn_hidden_size to a multiple of {tp}"
            )
    return p
