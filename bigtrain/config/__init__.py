"""Config schemas (Hydra ConfigStore) and the one validation step."""

from bigtrain.config.schema import BigtrainConfig, register_configs
from bigtrain.config.validate import Sizes, sizes, validate

__all__ = ["BigtrainConfig", "Sizes", "register_configs", "sizes", "validate"]
