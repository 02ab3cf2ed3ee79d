"""The GPT model (plain torch). `gpt_config_from` maps a composed `model` config group onto GPTConfig."""

from collections.abc import Mapping
from dataclasses import fields

from bigtrain.model.gpt import GPT, GPTConfig


def gpt_config_from(model_cfg: Mapping) -> GPTConfig:
    """Take the GPTConfig fields from a `model` config node; the rest (name, source, ...) is bookkeeping."""
    return GPTConfig(**{f.name: model_cfg[f.name] for f in fields(GPTConfig) if f.name in model_cfg})


__all__ = ["GPT", "GPTConfig", "gpt_config_from"]
