"""Data: corpus -> tokenizer -> prepared token files -> DataModule."""

from bigtrain.data.datamodule import GPTDataModule
from bigtrain.data.prepare import check_block_fits, prepare, read_meta
from bigtrain.data.tokenizer import load_tokenizer

__all__ = ["GPTDataModule", "check_block_fits", "load_tokenizer", "prepare", "read_meta"]
