"""Data: corpus -> tokenizer -> prepared token files -> DataModule.

The DataModule (which imports torch and Lightning) lives in bigtrain.data.datamodule and is not imported here, so
preparing and validating data stays light."""

from bigtrain.data.prepare import check_block_fits, prepare, read_meta
from bigtrain.data.tokenizer import load_tokenizer

__all__ = ["check_block_fits", "load_tokenizer", "prepare", "read_meta"]
