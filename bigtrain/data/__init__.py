"""Data: corpus -> tokenizer -> prepared token files -> DataModule.

GPTDataModule resolves on first use (PEP 562): it needs Lightning, seconds to import, while config validation,
`task=prepare` and `task=plan` only need the tokenizers and the prepare functions (numpy only).
"""

from bigtrain.data.prepare import check_block_fits, prepare, read_meta
from bigtrain.data.tokenizer import load_tokenizer

__all__ = ["GPTDataModule", "check_block_fits", "load_tokenizer", "prepare", "read_meta"]


def __getattr__(name: str):
    # The DataModule (torch + Lightning) loads on first use, so light importers such as the config validation the
    # torch-free planner reuses can read bigtrain.data.tokenizer without pulling torch in (PEP 562).
    if name == "GPTDataModule":
        from bigtrain.data.datamodule import GPTDataModule

        return GPTDataModule
    raise AttributeError(f"module 'bigtrain.data' has no attribute {name!r}")
