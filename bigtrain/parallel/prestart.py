"""Starting the extra local ranks early, while rank zero still prepares: they import while it works.

A fresh interpreter of a rank needs seconds to import torch and Lightning. Started at Lightning's launch (the end
of rank zero's preparation), that time adds to the run's time to first step. Where bigtrain's own launcher will
start the ranks (launcher.py), rank zero instead starts them right after it has set the environment every rank
inherits (`trainer.threads`), as `python -m bigtrain.worker --wait RUN_DIR`: each imports what training needs and
then waits for one line on its stdin. At launch, RunDirLauncher writes each its environment (the rendezvous
variables Lightning sets) and working directory on that line instead of starting a process; rank zero's
preparation and the other ranks' imports overlap. If rank zero stops before launch (an error, a refusal, a run
with nothing left to do), the line never comes: each waiting rank sees its stdin close and exits quietly, status 0.
No rank reads the recorded config before the hand-over, so none reads it before rank zero wrote it.

Only where the launcher would start them: a multi-process layout on one machine's devices, not under SLURM,
torchrun or any scheduler that starts every rank itself; tasks/train.py does not call it in a sweep's own process
(that point trains in a fresh process, which starts its own ranks). No Lightning import here: this runs before rank
zero imports it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Set by a scheduler or launcher that starts every rank itself (SLURM, torchrun, MPI, LSF, Kubeflow): then
# Lightning's cluster environment creates the processes externally and nothing is spawned.
EXTERNAL_LAUNCH_VARS = ("LOCAL_RANK", "RANK", "GROUP_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID",
                        "SLURM_JOB_ID", "SLURM_NTASKS", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "LSB_JOBID",
                        "JSM_NAMESPACE_RANK")  # fmt: skip

# Waiting ranks of this process not yet handed to the launcher, by resolved run directory. Module state because a
# process has one rank zero, and the launcher Lightning builds deep inside fit must find them.
_WAITING: dict[Path, list[subprocess.Popen]] = {}


def worker_command(run_dir: Path, wait: bool, preload: tuple[str, ...] = ()) -> list[str]:
    flags = ["--wait", *(f"--preload={name}" for name in preload)] if wait else []
    return [sys.executable, "-m", "bigtrain.worker", *flags, str(Path(run_dir).resolve())]


def should_prestart(layout) -> bool:
    """Whether bigtrain's launcher will start this run's extra local ranks from this process."""
    from bigtrain.parallel.traits import traits_of

    if not traits_of(layout).multi_process or layout.trainer_devices < 2:
        return False
    return not any(var in os.environ for var in EXTERNAL_LAUNCH_VARS)


def prestart_local_ranks(layout, run_dir: Path) -> None:
    """Rank zero, after `trainer.threads` set the environment and before torch is imported: start the extra local
    ranks waiting (see the module docstring); a no-op where the launcher would not start them."""
    if os.environ.get("BIGTRAIN_PRESTART", "1") == "0" or not should_prestart(layout):
        return
    release_waiting()  # a previous run of this process that never launched
    preload = ()
    if layout.parallelism == "deepspeed":
        from bigtrain.parallel.ops_cache import use_extensions_cache

        use_extensions_cache()  # as build_strategy will: set now, it is the environment the waiting ranks import in
        preload = ("deepspeed",)
    command = worker_command(run_dir, wait=True, preload=preload)
    _WAITING[Path(run_dir).resolve()] = [
        subprocess.Popen(command, stdin=subprocess.PIPE) for _ in range(1, layout.trainer_devices)
    ]


def take_waiting(run_dir: Path) -> list[subprocess.Popen]:
    """The launcher's side: the waiting ranks for run_dir (each to be handed one line), and none left behind."""
    return [proc for proc in _WAITING.pop(Path(run_dir).resolve(), []) if proc.poll() is None]


def hand_over(proc: subprocess.Popen, env: dict[str, str]) -> bool:
    """Start a waiting rank: the one line it waits for, its whole environment and working directory. False when
    it is gone (then the launcher starts a fresh one)."""
    import json

    try:
        proc.stdin.write((json.dumps({"env": env, "cwd": os.getcwd()}) + "\n").encode())
        proc.stdin.close()
    except BrokenPipeError:
        proc.wait()
        return False
    return True


def release_waiting(timeout_s: float = 10) -> None:
    """Let every rank still waiting go (its stdin closes: it exits 0), and reap it; killed if it does not leave."""
    procs = [proc for group in _WAITING.values() for proc in group]
    _WAITING.clear()
    for proc in procs:
        proc.stdin.close()
    for proc in procs:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def releases_waiting_ranks(run):
    """Decorator for rank zero's `run`: whatever way it ends, ranks it started and did not launch go."""
    import functools

    @functools.wraps(run)
    def wrapper(*args, **kwargs):
        try:
            return run(*args, **kwargs)
        finally:
            release_waiting()

    return wrapper
