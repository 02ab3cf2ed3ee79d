"""The GPT model (plain torch). `gpt_config_from` maps a composed `model` config group onto GPTConfig.

GPT and GPTConfig resolve on first use (PEP 562), so the torch-free planner can read bigtrain.model.shapes
without importing torch.
"""

from collections.abc import Mapping
from dataclasses import fields

__all__ = ["GPT", "GPTConfig", "gpt_config_from"]


def gpt_config_from(model_cfg: Mapping):
    """Take the GPTConfig fields from a `model` config node; the rest (name, source, ...) is bookkeeping."""
    from bigtrain.model.gpt import GPTConfig

    return GPTConfig(**{f.name: model_cfg[f.name] for f in fields(GPTConfig) if f.name in model_cfg})


def __getattr__(name: str):
    if name in ("GPT", "GPTConfig"):
        from bigtrain.model import gpt

        return getattr(gpt, name)
    raise AttributeError(f"module 'bigtrain.model' has no attribute {name!r}")
