"""Config -> Lightning strategy. Nothing outside this package imports deepspeed.

build_strategy resolves on first use (PEP 562): it needs Lightning, seconds to import, while the light modules
here (traits, SLURM job facts, the COMPLETE-marker rule) are read by code that must stay quick to import.
"""

__all__ = ["build_strategy"]


def __getattr__(name: str):
    if name == "build_strategy":
        from bigtrain.parallel.strategy import build_strategy

        return build_strategy
    raise AttributeError(f"module 'bigtrain.parallel' has no attribute {name!r}")
