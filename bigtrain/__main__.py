"""`python -m bigtrain [overrides]`: compose the config with Hydra and run the chosen task.

A BigtrainError (bad config, bad data) prints one line and exits with status 2; in a multirun sweep the point
prints its line and returns a FailedPoint, which the sweep callback records as failed while the others carry on
(the sweep then exits 2 after its report). Under the Optuna sweeper the
job returns its final validation loss, the objective.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from bigtrain.config import register_configs
from bigtrain.config.cli import CONF_DIR, quote_numeric_group_choices
from bigtrain.config.launch_checks import check_cli_shape, check_launch
from bigtrain.errors import BigtrainError, FailedPoint

register_configs()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> dict | None:
    from bigtrain.tasks import run_task

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        check_launch(list(hydra_cfg.overrides.task), run_dir)
        result = run_task(cfg, run_dir)
    except BigtrainError as e:
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # Hydra made it; a refused run leaves nothing behind
        return refused(str(e), type(e).__name__, hydra_cfg)
    except Exception as e:  # a full disk or a read-only one while writing: one line too
        from bigtrain.diskerrors import disk_error_line

        line = disk_error_line(e, run_dir)
        if line is None:
            raise
        return refused(line, "BigtrainError", hydra_cfg)
    if "optuna" in str(hydra_cfg.sweeper.get("_target_", "")).lower():
        # Optuna's sweeper minimises the number a job returns: the run's final validation loss.
        return (result or {}).get("final_val_loss", float("nan"))
    return result


def refused(line: str, kind: str, hydra_cfg) -> FailedPoint:
    """One `bigtrain: error:` line; a plain run exits 2, a sweep point returns a FailedPoint (the others run on).
    Under the Optuna sweeper the point fails as Hydra reports it: Optuna marks that trial failed and carries on."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        print(f"bigtrain: error: {line}", file=sys.stderr)
        sys.exit(2)
    if "optuna" in str(hydra_cfg.sweeper.get("_target_", "")).lower():
        raise BigtrainError(line)
    print(f"bigtrain: error: sweep point {hydra_cfg.job.num}: {line}", file=sys.stderr, flush=True)
    return FailedPoint(f"{kind}: {line}")


def precheck(args: list[str]) -> None:
    """Before Hydra starts (it makes the run directory at once), for a plain run (no flags, no sweep): compose once
    outside Hydra so a typo or wrong type ends in one `bigtrain: error:` line instead of Hydra's multi-line report."""
    from bigtrain.config.compose import compose_config

    try:
        if any(a.startswith("-") for a in args):
            return
        # Hydra's own settings are Hydra's to check, except the search path: user config dirs hold groups too.
        keep = [
            a for a in args if a.startswith("hydra.searchpath=") or not a.lstrip("+~").startswith(("hydra.", "hydra/"))
        ]
        compose_config(keep)
    except BigtrainError as e:
        print(f"bigtrain: error: {e}", file=sys.stderr)
        sys.exit(2)


def check_targets(args: list[str]) -> bool:
    """Before Hydra configures logging or builds a callback: every name the config would make it call is allowed.
    True when the whole config composed (then the precheck's composition would find nothing more)."""
    from bigtrain.config.targets import check_command_line, guard_hydra_composition

    try:
        composed = check_command_line(args, CONF_DIR)
    except BigtrainError as e:
        print(f"bigtrain: error: {e}", file=sys.stderr)
        sys.exit(2)
    guard_hydra_composition()
    from bigtrain.config.secrets import redact_log_records

    redact_log_records()  # Hydra logs each sweep point's overrides; keep secrets out of the console and wandb
    return composed


def check_shape(args: list[str]) -> None:
    """Flags that would be ignored (`-p` without `--cfg`) and a run directory that cannot be one: first of all,
    before any composition (a run would start otherwise) and before Hydra makes the run directory."""
    try:
        check_cli_shape(args)
    except BigtrainError as e:
        print(f"bigtrain: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    sys.argv[1:] = quote_numeric_group_choices(sys.argv[1:])
    check_shape(sys.argv[1:])
    if not check_targets(sys.argv[1:]):
        precheck(sys.argv[1:])
    main()
