"""bigtrain GPT with the Llama switches <-> Hugging Face `LlamaForCausalLM` folder (config.json + model.safetensors).

The mapping, per layer i (bigtrain -> Hugging Face `model.layers.i.`):
    ln_1 / ln_2                 input_layernorm / post_attention_layernorm (RMSNorm gains)
    attn.c_attn = [q | k | v]   self_attn.q_proj, k_proj, v_proj (q: n_head heads, k and v: n_kv_head heads)
    attn.c_proj                 self_attn.o_proj
    mlp.gate_proj/up_proj/down_proj   mlp.gate_proj/up_proj/down_proj
and wte -> model.embed_tokens, ln_f -> model.norm, lm_head -> lm_head (left out when tied).

Rotary convention. bigtrain rotates interleaved pairs (x0, x1), (x2, x3), ... of each head, as Meta's reference
Llama code does; Hugging Face's Llama rotates the halves (x_i, x_{i + hs/2}) (`rotate_half`). The two compute the
same function once the rows of each q and k head are reordered: pair component c of pair j (row 2j + c) becomes row
c * hs/2 + j. `to_half_split` does that on export and `to_interleaved` undoes it on import, as transformers' own
convert_llama_weights_to_hf.py `permute` does for Meta's checkpoints. v and o are not rotated and stay as they are.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bigtrain.errors import BigtrainError
from bigtrain.hf.tokenizers import eos_id, write_tokenizer
from bigtrain.model import GPT, GPTConfig

WEIGHTS = "model.safetensors"
LAYER_NAMES = {  # bigtrain name inside block i -> Hugging Face name inside model.layers.i
    "ln_1.weight": "input_layernorm.weight",
    "ln_2.weight": "post_attention_layernorm.weight",
    "attn.c_proj.weight": "self_attn.o_proj.weight",
    "attn.c_proj.bias": "self_attn.o_proj.bias",
    **{f"mlp.{p}.{w}": f"mlp.{p}.{w}" for p in ("gate_proj", "up_proj", "down_proj") for w in ("weight", "bias")},
}
TOP_NAMES = {"transformer.wte.weight": "model.embed_tokens.weight", "transformer.ln_f.weight": "model.norm.weight"}


def is_llama_shaped(config: GPTConfig) -> bool:
    """Llama's switches: RMSNorm, SwiGLU, rotary positions (any head counts, tied or untied head)."""
    return config.norm == "rmsnorm" and config.mlp == "swiglu" and config.position == "rope"


def check_exportable(config: GPTConfig) -> None:
    if not is_llama_shaped(config):
        raise BigtrainError(
            f"model norm={config.norm} mlp={config.mlp} position={config.position} mixes GPT-2's and Llama's "
            f"switches; Hugging Face has a class for each whole set: GPT-2 (layernorm, gelu, learned) or Llama "
            f"(rmsnorm, swiglu, rope)"
        )


def to_half_split(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows of n_heads rotary heads, interleaved pairs -> halves (bigtrain -> Hugging Face); weights or biases."""
    hs = w.shape[0] // n_heads
    return w.reshape(n_heads, hs // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def to_interleaved(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows of n_heads rotary heads, halves -> interleaved pairs (Hugging Face -> bigtrain); inverse of the above."""
    hs = w.shape[0] // n_heads
    return w.reshape(n_heads, 2, hs // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def hf_config(config: GPTConfig, eos_token_id: int | None = None, extra: dict | None = None) -> dict:
    """config.json for transformers' LlamaConfig (both the v4 `rope_theta` and the v5 `rope_parameters` keys)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.ffn_dim,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.head_size,
        "hidden_act": "silu",
        "max_position_embeddings": config.block_size,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "rope_scaling": None,
        "attention_bias": config.bias,
        "mlp_bias": config.bias,
        "attention_dropout": config.dropout,
        "tie_word_embeddings": config.tie_embeddings,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": "float32",
        "bos_token_id": eos_token_id,
        "eos_token_id": eos_token_id,
        "bigtrain": {"dropout": config.dropout, **(extra or {})},
    }


def to_hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """bigtrain names -> LlamaForCausalLM names, q/k rows to the half-split rotary order, the tied head once."""
    c = model.config
    check_exportable(c)
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    out = {hf: sd[ours] for ours, hf in TOP_NAMES.items()}
    if not c.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    for i in range(c.n_layer):
        ours, hf = f"transformer.h.{i}.", f"model.layers.{i}."
        for kind in ("weight", "bias"):
            fused = sd.get(f"{ours}attn.c_attn.{kind}")
            if fused is None:
                continue
            q, k, v = fused.split([c.attn_dim, c.kv_dim, c.kv_dim])
            out[f"{hf}self_attn.q_proj.{kind}"] = to_half_split(q, c.n_head)
            out[f"{hf}self_attn.k_proj.{kind}"] = to_half_split(k, c.kv_heads)
            out[f"{hf}self_attn.v_proj.{kind}"] = v
        for name, hf_name in LAYER_NAMES.items():
            if ours + name in sd:
                out[hf + hf_name] = sd[ours + name]
    return {k: v.contiguous() for k, v in out.items()}


def write_hf_dir(model: GPT, out: Path, tokenizer=None, meta: dict | None = None) -> list[str]:
    """Write a folder that LlamaForCausalLM.from_pretrained(out) loads offline; returns the files written."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    tokenizer_name = (meta or {}).get("tokenizer")
    config = hf_config(model.config, eos_id(tokenizer, tokenizer_name), {"tokenizer": tokenizer_name})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    save_file(to_hf_state_dict(model), str(out / WEIGHTS), metadata={"format": "pt"})
    files = ["config.json", WEIGHTS]
    if tokenizer is not None:
        files += write_tokenizer(tokenizer, meta or {}, out, model.config.block_size)
    return files


def read_hf_config(folder: Path, c: dict) -> GPTConfig:
    """GPTConfig of a Hugging Face Llama config.json `c`, refusing settings bigtrain's model does not compute."""
    rope = c.get("rope_parameters") or {}
    scaling = c.get("rope_scaling")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    refused = {
        "hidden_act": (c.get("hidden_act", "silu"), ("silu",)),
        "rope_type": (rope_type, ("default",)),
        "rope_scaling": (
            scaling if scaling and scaling.get("rope_type", scaling.get("type")) != "default" else None,
            (None,),
        ),
        "attention_bias == mlp_bias": (c.get("attention_bias", False) == c.get("mlp_bias", False), (True,)),
    }
    bad = [f"{k}={v} (bigtrain computes {' or '.join(map(str, ok))})" for k, (v, ok) in refused.items() if v not in ok]
    if bad:
        raise BigtrainError(f"{folder} is a Llama that bigtrain's model cannot reproduce: {'; '.join(bad)}")
    n_embd, n_head = c["hidden_size"], c["num_attention_heads"]
    head_dim = c.get("head_dim") or n_embd // n_head
    return GPTConfig(
        n_layer=c["num_hidden_layers"],
        n_head=n_head,
        n_kv_head=c.get("num_key_value_heads") or n_head,
        n_embd=n_embd,
        head_dim=head_dim if head_dim != n_embd // n_head or n_embd % n_head else None,
        block_size=c.get("max_position_embeddings", 2048),
        vocab_size=c["vocab_size"],
        dropout=float(c.get("attention_dropout", 0.0)),
        bias=bool(c.get("attention_bias", False)),
        norm="rmsnorm",
        norm_eps=float(c.get("rms_norm_eps", 1e-6)),
        mlp="swiglu",
        ffn_hidden_size=c["intermediate_size"],
        position="rope",
        rope_theta=float(rope.get("rope_theta", c.get("rope_theta", 10000.0))),
        tie_embeddings=bool(c.get("tie_word_embeddings", False)),
    )


def read_hf_weights(folder: Path, config: GPTConfig) -> dict[str, torch.Tensor]:
    """model.safetensors of a LlamaForCausalLM (or LlamaModel) -> a bigtrain state dict."""
    from safetensors.torch import load_file

    raw = load_file(str(folder / WEIGHTS))
    raw = {k if k.startswith(("model.", "lm_head.")) else f"model.{k}": v for k, v in raw.items()}  # LlamaModel
    state = {ours: raw.pop(hf) for ours, hf in TOP_NAMES.items() if hf in raw}
    head = raw.pop("lm_head.weight", None)
    if config.tie_embeddings:
        state["lm_head.weight"] = state["transformer.wte.weight"]
    elif head is not None:
        state["lm_head.weight"] = head
    for i in range(config.n_layer):
        ours, hf = f"transformer.h.{i}.", f"model.layers.{i}."
        for kind in ("weight", "bias"):
            parts = [raw.pop(f"{hf}self_attn.{p}_proj.{kind}", None) for p in "qkv"]
            if all(p is not None for p in parts):
                q, k, v = parts
                fused = [to_interleaved(q, config.n_head), to_interleaved(k, config.kv_heads), v]
                state[f"{ours}attn.c_attn.{kind}"] = torch.cat(fused)
        for name, hf_name in LAYER_NAMES.items():
            if hf + hf_name in raw:
                state[ours + name] = raw.pop(hf + hf_name)
    raw = {k: v for k, v in raw.items() if not k.endswith("rotary_emb.inv_freq")}  # a buffer older versions saved
    if raw:
        raise BigtrainError(f"{folder} holds tensors a Llama of this shape does not have, e.g. {next(iter(raw))}")
    return state
