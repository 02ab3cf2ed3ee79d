"""`task=prepare`: tokenize the configured corpus into memory-mapped token files (train runs this itself when
the data is missing)."""

from __future__ import annotations

from pathlib import Path

from bigtrain.config import validate
from bigtrain.data import prepare, read_meta
from bigtrain.training.summary import print_summary


def run(cfg, run_dir: Path) -> dict:
    validate(cfg)
    # The data alone: the model's vocabulary and block size are checked when a run trains on it.
    folder = Path(cfg.data.prepared_dir) if cfg.data.prepared_dir else prepare(cfg.data)
    meta = read_meta(folder)
    info = {"dataset": str(folder), **{k: v for k, v in meta.items() if not isinstance(v, dict)}}
    print_summary(info, title="prepared dataset")
    if meta["vocab_size"] > cfg.model.vocab_size:
        print(
            f"to train on it: model.vocab_size>={meta['vocab_size']} (model={cfg.model.name} has "
            f"{cfg.model.vocab_size}) data.prepared_dir={folder}"
        )
    return info
