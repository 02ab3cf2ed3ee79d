"""Hugging Face folders in and out, one module per architecture: GPT-2 (`bigtrain.hf.gpt2`, GPT2LMHeadModel) and
Llama (`bigtrain.hf.llama`, LlamaForCausalLM). The functions here pick the module: by the model's switches on export,
by the folder's config.json `model_type` on import."""

from __future__ import annotations

import json
from pathlib import Path

from bigtrain.errors import BigtrainError
from bigtrain.hf import gpt2, llama
from bigtrain.hf.tokenizers import read_hf_tokenizer
from bigtrain.model import GPT, GPTConfig

WEIGHTS = "model.safetensors"
MODEL_TYPES = {"gpt2": gpt2, "llama": llama}


def is_hf_dir(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / WEIGHTS).is_file()


def module_for(config: GPTConfig):
    """The architecture module that can write this model (GPT-2 also for a GPT-2-shaped model it then refuses)."""
    return llama if llama.is_llama_shaped(config) else gpt2


def check_exportable(config: GPTConfig) -> None:
    module_for(config).check_exportable(config)


def write_hf_dir(model: GPT, out: Path, tokenizer=None, meta: dict | None = None) -> list[str]:
    return module_for(model.config).write_hf_dir(model, out, tokenizer, meta)


def read_config_json(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise BigtrainError(f"{folder}/config.json is not valid JSON ({e.msg})") from None


def read_hf_config(folder: Path) -> GPTConfig:
    c = read_config_json(folder)
    kind = c.get("model_type")
    if kind not in MODEL_TYPES:
        raise BigtrainError(
            f"{folder} holds model_type={kind}; bigtrain imports {', '.join(MODEL_TYPES)} (bigtrain/hf/<type>.py)"
        )
    return gpt2.read_hf_config(folder) if kind == "gpt2" else llama.read_hf_config(folder, c)


def read_hf_weights(folder: Path, config: GPTConfig):
    return module_for(config).read_hf_weights(folder, config)


__all__ = [
    "check_exportable",
    "is_hf_dir",
    "read_hf_config",
    "read_hf_tokenizer",
    "read_hf_weights",
    "write_hf_dir",
]
