"""Silence library chatter that tells a bigtrain user nothing actionable (tips, deprecations inside Lightning,
notices about files bigtrain placed on purpose). Real warnings still show."""

import logging
import warnings

_IGNORED = (
    r".*exists and is not empty.*",  # CSVLogger writes metrics.csv into the run directory on purpose
    r".*isinstance\(treespec, LeafSpec\).*",
    r".*does not have many workers.*",  # windows are gathered in the main process by design (vectorised)
    r".*The number of training batches.*is smaller than the logging interval.*",
    r".*returned a view tensor.*",  # FSDP2 (2-D parallelism): bigtrain never modifies the GPT's outputs in place
    # On a machine with SLURM installed, local runs are local on purpose (SLURM jobs go through hydra/launcher=slurm).
    r".*The `srun` command is available on your system but is not used.*",
)


def quiet_libraries() -> None:
    for pattern in _IGNORED:
        warnings.filterwarnings("ignore", message=pattern)
    # "GPU available / TPU available / 💡 Tip" lines: rank-zero info from Lightning's device and setup notices.
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
