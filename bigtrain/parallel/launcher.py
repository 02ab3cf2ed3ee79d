"""Starting the other local ranks without re-running Hydra.

Lightning's subprocess launcher re-runs `sys.argv` for ranks 1..N-1, and under Hydra appends
`hydra.run.dir=...`. That breaks twice: a multirun (`-m`) child would launch a whole sweep of its own, and the run
directory it passes is the single-run one, not the sweep point's (the Hydra + DDP trap: one output directory per
rank). bigtrain's children instead run `python -m bigtrain.worker RUN_DIR`, which reads the resolved config rank 0
already wrote there. Everything else (environment, ports, process observer) is Lightning's. Where rank zero
started the ranks early (prestart.py), they are handed their environment instead of being started here.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from bigtrain.parallel.prestart import hand_over, take_waiting, worker_command


class RunDirLauncher(_SubprocessScriptLauncher):
    def __init__(self, cluster_environment, num_processes: int, num_nodes: int, run_dir: Path):
        super().__init__(cluster_environment, num_processes, num_nodes)
        self.run_dir = Path(run_dir)

    def _call_children_scripts(self) -> None:
        self._check_can_spawn_children()
        self.procs = []
        env = self.cluster_environment
        os.environ["MASTER_ADDR"] = env.main_address
        os.environ["MASTER_PORT"] = str(env.main_port)
        os.environ["NODE_RANK"] = str(env.node_rank())
        os.environ["LOCAL_RANK"] = str(env.local_rank())
        os.environ["WORLD_SIZE"] = f"{self.num_processes * self.num_nodes}"
        waiting = take_waiting(self.run_dir)  # started early by rank zero (prestart.py), importing or waiting
        for local_rank in range(1, self.num_processes):
            child_env = os.environ.copy()
            child_env["LOCAL_RANK"] = str(local_rank)
            proc = waiting.pop(0) if waiting else None
            if proc is None or not hand_over(proc, child_env):
                proc = subprocess.Popen(worker_command(self.run_dir, wait=False), env=child_env)
            self.procs.append(proc)
        for proc in waiting:  # more were started than this launch needs: they leave (stdin closed, exit 0)
            proc.stdin.close()


class RunDirLauncherMixin:
    """Mixin for a DDP-family strategy (DDP, DeepSpeed, FSDP, ModelParallel): takes `run_dir` and starts the extra
    local ranks through bigtrain.worker. Put it first in the bases: `class X(RunDirLauncherMixin, DDPStrategy)`."""

    def __init__(self, run_dir: Path, **kwargs):
        super().__init__(**kwargs)
        self.run_dir = run_dir

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        configure_run_dir_launcher(self, self.run_dir)


def configure_run_dir_launcher(strategy, run_dir: Path) -> None:
    """Give a DDP-family strategy (DDP, DeepSpeed, FSDP) bigtrain's launcher instead of Lightning's default."""
    env = strategy.cluster_environment
    # SLURM (and torchrun) start every rank themselves: nothing to spawn.
    if (
        getattr(strategy, "_start_method", "popen") == "popen"
        and env is not None
        and not env.creates_processes_externally
    ):
        strategy._launcher = RunDirLauncher(env, strategy.num_processes, strategy.num_nodes, run_dir)
