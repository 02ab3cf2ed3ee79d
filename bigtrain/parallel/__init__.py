"""Config -> Lightning strategy. Nothing outside this package imports deepspeed."""

from bigtrain.parallel.strategy import build_strategy

__all__ = ["build_strategy"]
