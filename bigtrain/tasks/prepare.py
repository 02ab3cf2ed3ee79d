"""`task=prepare`: tokenize the configured corpus into memory-mapped token files (train runs this itself when
the data is missing)."""

from __future__ import annotations

from pathlib import Path

from bigtrain.config import validate
from bigtrain.data import read_meta
from bigtrain.training.summary import print_summary


def run(cfg, run_dir: Path) -> dict:
    validate(cfg)
    from bigtrain.tasks.train import prepared_data

    folder = prepared_data(cfg)
    meta = read_meta(folder)
    info = {"dataset": str(folder), **{k: v for k, v in meta.items() if not isinstance(v, dict)}}
    print_summary(info, title="prepared dataset")
    return info
