"""Entry point of the extra local ranks: `python -m bigtrain.worker RUN_DIR`.

Rank zero composed and validated the config under Hydra and recorded it in RUN_DIR/config.yaml; the other ranks
train from exactly that file (see bigtrain/parallel/launcher.py for why they do not re-run Hydra)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bigtrain.config.run_config import load_run_config
from bigtrain.errors import BigtrainError
from bigtrain.tasks.train import fit_then_leave


def main(argv: list[str]) -> None:
    run_dir = Path(argv[0])
    try:
        fit_then_leave(load_run_config(run_dir), run_dir)
    except BigtrainError as e:  # rank zero reports the same error; no traceback here either
        print(f"bigtrain: error (rank {os.environ.get('LOCAL_RANK')}): {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
