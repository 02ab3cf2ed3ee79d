"""Launch checks, before anything heavy: the run directory, the data cache, Hydra flags that would be ignored,
several choices for one group, and multi-node launches without a cluster launcher.

A run directory must be a folder of its own that this user can write: not the filesystem root, the home folder
or a system folder (a plan once wrote `/plan.json`), not a file, not on a read-only mount. The check writes a real
probe file, since permission bits say nothing about root, read-only mounts or pseudo file systems.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

# Folders a run must never write into directly (their sub-folders of one's own are fine, e.g. /tmp/run).
SYSTEM_FOLDERS = (
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib64",
    "/proc",
    "/root",
    "/sbin",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
    "/home",
    "/mnt",
    "/opt",
    "/srv",
    "/run",
)
MIN_FREE_BYTES = 16 * 2**20  # below this, even the config, metrics and summary may not fit


def folder_problem(key: str, path: str | os.PathLike, own_folder: bool = True) -> str | None:
    """Why `path` cannot be a folder this run writes into, or None. own_folder: refuse system folders and home."""
    raw = str(path)
    if not raw.strip():
        return f"{key}='' is empty; give a folder"
    target = Path(raw).expanduser().absolute()
    if own_folder and (str(target.resolve()) in SYSTEM_FOLDERS or target.resolve() == Path.home().resolve()):
        return f"{key}={raw} is a system or home folder; give the run a folder of its own, e.g. hydra.run.dir=runs/NAME"
    existing = target
    while not existing.exists():  # the nearest ancestor that exists is where the folders will be made
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == target else f"cannot be made: {existing} is a file"
        return f"{key}={raw} {what}, not a folder; choose a folder"
    try:  # a real write
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        return f"{key}={raw} is not writable ({existing}: {e.strerror}); choose a folder you can write"
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        return f"{key}={raw} has only {free / 2**20:.1f} MiB free on its disk; free space or choose another disk"
    return None


def data_cache_problems(cfg) -> list[str]:
    """data.cache_dir, where task=train/prepare writes token files (unless data.prepared_dir names them)."""
    if cfg.task not in ("train", "prepare") or cfg.data.prepared_dir is not None:
        return []
    problem = folder_problem("data.cache_dir", cfg.data.cache_dir, own_folder=False)
    return [problem] if problem else []


def group_list_problems(overrides: list[str]) -> list[str]:
    """`model=[nano,tiny]`: Hydra merges both files, the last silently winning; a run has one choice per group
    (a sweep over several is `-m model=nano,tiny`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from bigtrain.config.cli import config_groups

    groups, p = config_groups(), []
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # Hydra reports its own grammar errors when it composes
        return []
    for o in parsed:
        if o.key_or_group in groups and isinstance(o.value(), list):
            p.append(
                f"{o.key_or_group}={o.get_value_element_as_str()} lists several {o.key_or_group} choices, but a run "
                f"uses one; pick one, or sweep them with `-m {o.key_or_group}={','.join(map(str, o.value()))}`"
            )
    return p


def flag_problems(args: list[str]) -> list[str]:
    """Hydra flags that change meaning alone: `-p/--package` only selects what `--cfg` prints; without `--cfg`
    Hydra would ignore it and start a full run."""
    has_cfg = any(a in ("-c", "--cfg") or a.startswith("--cfg=") for a in args)
    has_package = any(a in ("-p", "--package") or a.startswith("--package=") for a in args)
    if has_package and not has_cfg:
        return [
            "-p/--package only selects what --cfg prints; add --cfg job (e.g. `python -m bigtrain --cfg job -p model`)"
        ]
    return []


def check_launch(overrides: list[str], run_dir: Path) -> None:
    """Inside Hydra's job, before the task: one choice per group, and a run directory of its own."""
    from bigtrain.errors import ConfigError

    problems = group_list_problems(overrides)
    problem = folder_problem("hydra.run.dir", run_dir)
    if problem:
        problems.append(problem)
    if problems:
        raise ConfigError("; ".join(problems))


def check_cli_shape(args: list[str]) -> None:
    """Before Hydra starts (it makes the run directory at once): flags that would be ignored, and a run directory
    given on the command line that cannot be one."""
    from bigtrain.errors import ConfigError

    problems = flag_problems(args)
    multirun = any(a in ("-m", "--multirun") for a in args)
    for a in args:
        key, _, value = a.lstrip("+").partition("=")
        if key == ("hydra.sweep.dir" if multirun else "hydra.run.dir") and "${" not in value:
            problem = folder_problem(key, value.strip("'\""))
            if problem:
                problems.append(problem)
    if problems:
        raise ConfigError("; ".join(problems))


def multi_node_problems(cfg) -> list[str]:
    """hardware.nodes > 1 needs every node started by a cluster launcher (SLURM, torchrun, or NODE_RANK and
    MASTER_ADDR set by hand on each node). Started alone on one machine, this process would wait at the
    rendezvous for nodes that never come."""
    hw = cfg.hardware
    if cfg.parallelism.name == "single" or hw.nodes <= 1:
        return []
    from lightning_fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    with warnings.catch_warnings():  # detect() warns that srun exists but is unused: the line below says more
        warnings.simplefilter("ignore")
        if SLURMEnvironment.detect() or TorchElasticEnvironment.detect():
            return []
    if os.environ.get("NODE_RANK") is not None and os.environ.get("MASTER_ADDR"):
        return []
    return [
        f"hardware.nodes={hw.nodes} x hardware.devices={hw.devices} = {hw.nodes * hw.devices} processes on "
        f"{hw.nodes} machines, but this one was started alone (no SLURM job, torchrun, or NODE_RANK + MASTER_ADDR), "
        f"so the rendezvous would wait forever for the other nodes; launch with `-m hydra/launcher=slurm` (or srun / "
        f"torchrun --nnodes={hw.nodes} on every node), or use hardware.nodes=1 hardware.devices={hw.nodes * hw.devices}"
    ]
