"""Entry point of the extra local ranks: `python -m bigtrain.worker RUN_DIR`.

Rank zero composed and validated the config under Hydra and recorded it in RUN_DIR/config.yaml; the other ranks
train from exactly that file (see bigtrain/parallel/launcher.py for why they do not re-run Hydra)."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from bigtrain.config import BigtrainConfig
from bigtrain.tasks.train import CONFIG_FILE, fit


def load_run_config(run_dir: Path):
    return OmegaConf.merge(OmegaConf.structured(BigtrainConfig), OmegaConf.load(run_dir / CONFIG_FILE))


def main(argv: list[str]) -> None:
    run_dir = Path(argv[0])
    fit(load_run_config(run_dir), run_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
