"""bigtrain GPT <-> Hugging Face GPT-2 directory (config.json + model.safetensors + tokenizer files).

bigtrain's GPT is GPT-2's architecture with the same parameter names, so the mapping is short:
- HF GPT-2 stores its linear layers as `Conv1D`, weight (in, out): the transpose of nn.Linear's (out, in).
- lm_head is tied to wte; like `save_pretrained`, the file stores the matrix once.
- bias=false has no GPT-2 switch: the export writes zero biases (exactly the same function) and records
  `bigtrain.bias=false` in config.json, so an import gives back a bias-free model.
- GPT-2 ties the head width to n_embd / n_head: a model with another head_dim (GPT-3 13B) has no GPT-2 form.
Reading and writing need only torch, safetensors and tokenizers; `transformers` is a test dependency.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bigtrain.errors import BigtrainError
from bigtrain.hf.tokenizers import byte_tokenizer_json, bytes_to_unicode, eos_id, read_hf_tokenizer, write_tokenizer
from bigtrain.model import GPT, GPTConfig

WEIGHTS = "model.safetensors"
# The tokenizer helpers live in bigtrain.hf.tokenizers (shared by every architecture) and stay importable from here.
__all__ = ["byte_tokenizer_json", "bytes_to_unicode", "read_hf_tokenizer", "write_tokenizer"]
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def is_hf_dir(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / WEIGHTS).is_file()


def is_gpt2_shaped(config: GPTConfig) -> bool:
    """GPT-2's switches: LayerNorm, GELU at 4 x n_embd, learned positions, multi-head attention, tied head."""
    return (
        config.norm == "layernorm"
        and config.norm_eps == 1e-5
        and config.mlp == "gelu"
        and config.ffn_dim == 4 * config.n_embd
        and config.position == "learned"
        and config.kv_heads == config.n_head
        and config.tie_embeddings
    )


def check_exportable(config: GPTConfig) -> None:
    if not is_gpt2_shaped(config):
        raise BigtrainError(
            f"model norm={config.norm} (eps {config.norm_eps}) mlp={config.mlp} (width {config.ffn_dim}) "
            f"position={config.position} n_kv_head={config.kv_heads} tie_embeddings={config.tie_embeddings} is neither "
            f"GPT-2's architecture (layernorm, gelu at 4 x n_embd, learned, n_kv_head=n_head, tied) nor Llama's "
            f"(rmsnorm, swiglu, rope): Hugging Face has no class for it"
        )
    if config.attn_dim != config.n_embd:
        raise BigtrainError(
            f"model head_dim={config.head_dim} x n_head={config.n_head} = {config.attn_dim} differs from "
            f"n_embd={config.n_embd}; GPT-2 fixes the head width at n_embd / n_head, so this model (like gpt3-13b) "
            f"cannot be exported as a Hugging Face GPT-2"
        )


def hf_config(config: GPTConfig, eos_token_id: int | None = None, extra: dict | None = None) -> dict:
    """config.json for transformers' GPT2Config: GPT-2's own values wherever bigtrain has no field."""
    cfg = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": 4 * config.n_embd,
        "activation_function": "gelu_new",  # GPT-2's tanh-approximated GELU, as bigtrain's MLP computes it
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "layer_norm_epsilon": 1e-5,  # torch.nn.LayerNorm's default, which bigtrain uses
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "use_cache": True,
        "torch_dtype": "float32",
        "bigtrain": {"bias": config.bias, **(extra or {})},
    }
    cfg["bos_token_id"] = cfg["eos_token_id"] = eos_token_id  # None for the byte tokenizer (it has none)
    return cfg


def to_hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """bigtrain names -> GPT2LMHeadModel names (the same, prefixed `transformer.`), Conv1D weights transposed,
    zero biases where bias=false, the tied lm_head stored once."""
    check_exportable(model.config)
    out = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        t = t.detach().float().cpu()
        out[name] = (t.t() if name.endswith(CONV1D) else t).contiguous()
    if not model.config.bias:
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear | torch.nn.LayerNorm) and name != "lm_head":
                width = module.weight.shape[0]
                out[f"{name}.bias"] = torch.zeros(width)
    return out


def write_hf_dir(model: GPT, out: Path, tokenizer=None, meta: dict | None = None) -> list[str]:
    """Write a directory that GPT2LMHeadModel.from_pretrained(out) loads offline; returns the files written."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    tokenizer_name = (meta or {}).get("tokenizer")
    eos = eos_id(tokenizer, tokenizer_name)
    config = hf_config(model.config, eos, {"tokenizer": tokenizer_name})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    save_file(to_hf_state_dict(model), str(out / WEIGHTS), metadata={"format": "pt"})
    files = ["config.json", WEIGHTS]
    if tokenizer is not None:
        files += write_tokenizer(tokenizer, meta or {}, out, model.config.block_size)
    return files


def read_hf_config(folder: Path) -> GPTConfig:
    """GPTConfig of a Hugging Face GPT-2 directory, refusing settings bigtrain's GPT does not compute."""
    try:
        c = json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise BigtrainError(f"{folder}/config.json is not valid JSON ({e.msg})") from None
    if c.get("model_type") != "gpt2":
        raise BigtrainError(f"{folder} holds model_type={c.get('model_type')}, not gpt2; bigtrain imports GPT-2 only")
    n_embd = c["n_embd"]
    refused = {
        "activation_function": (c.get("activation_function", "gelu_new"), ("gelu_new", "gelu_pytorch_tanh")),
        "n_inner": (c.get("n_inner"), (None, 4 * n_embd)),
        "layer_norm_epsilon": (c.get("layer_norm_epsilon", 1e-5), (1e-5,)),
        "scale_attn_by_inverse_layer_idx": (c.get("scale_attn_by_inverse_layer_idx", False), (False,)),
        "tie_word_embeddings": (c.get("tie_word_embeddings", True), (True,)),
    }
    bad = [f"{k}={v} (bigtrain computes {' or '.join(map(str, ok))})" for k, (v, ok) in refused.items() if v not in ok]
    if bad:
        raise BigtrainError(f"{folder} is a GPT-2 that bigtrain's GPT cannot reproduce: {'; '.join(bad)}")
    return GPTConfig(
        n_layer=c["n_layer"],
        n_head=c["n_head"],
        n_embd=n_embd,
        block_size=c.get("n_positions", c.get("n_ctx", 1024)),
        vocab_size=c["vocab_size"],
        dropout=float(c.get("resid_pdrop", 0.0)),
        bias=bool((c.get("bigtrain") or {}).get("bias", True)),
    )


def read_hf_weights(folder: Path, config: GPTConfig) -> dict[str, torch.Tensor]:
    """model.safetensors -> a bigtrain state dict (names with `transformer.`, Linear layout, tied lm_head)."""
    from safetensors.torch import load_file

    raw = load_file(str(folder / WEIGHTS))
    state = {}
    for name, t in raw.items():
        if name.endswith(".attn.bias") or name.endswith(".attn.masked_bias"):
            continue  # old transformers versions saved the causal mask as a buffer
        name = name if name.startswith(("transformer.", "lm_head.")) else f"transformer.{name}"  # GPT2Model saves
        state[name] = t.t().contiguous() if name.endswith(CONV1D) else t
    wte = state.get("transformer.wte.weight")
    head = state.pop("lm_head.weight", None)
    if head is not None and wte is not None and not torch.equal(head, wte):
        raise BigtrainError(f"{folder} has an lm_head that is not tied to wte; bigtrain's GPT ties them")
    if not config.bias:
        biases = [k for k in state if k.endswith(".bias")]
        nonzero = [k for k in biases if state[k].abs().max() > 0]
        if nonzero:
            raise BigtrainError(f"{folder} says bias=false but {nonzero[0]} is not zero")
        for k in biases:
            del state[k]
    return state
