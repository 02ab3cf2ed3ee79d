"""Config schemas (Hydra ConfigStore), the one validation step, and the Layout it derives."""

from bigtrain.config.layout import Layout, layout_of
from bigtrain.config.schema import BigtrainConfig, register_configs
from bigtrain.config.validate import validate

__all__ = ["BigtrainConfig", "Layout", "layout_of", "register_configs", "validate"]
