"""Start a CPU job of several ranks the way torchrun would (env:// rendezvous on a free local port), for tests.

    outputs = launch([sys.executable, "tests/some_worker.py", ARGS...], world=2, cwd=tmp_path)

Every rank gets MASTER_ADDR/MASTER_PORT/WORLD_SIZE/RANK/LOCAL_RANK/NODE_RANK; each rank's stdout+stderr is returned;
a rank that exits non-zero fails the test with the tail of its output. One launch can run many configs in turn (the
workers loop over run dirs), so a test pays the process and process-group start-up once.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], world: int, cwd: Path, env: dict | None = None) -> list[subprocess.Popen]:
    """The ranks, started (not waited for): for tests that kill them."""
    base = {**os.environ, **(env or {}), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    base.update(WORLD_SIZE=str(world), NODE_RANK="0", LOCAL_WORLD_SIZE=str(world))
    return [
        subprocess.Popen(
            command,
            env={**base, "RANK": str(r), "LOCAL_RANK": str(r)},
            cwd=cwd,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for r in range(world)
    ]


def launch(command: list[str], world: int, cwd: Path, env: dict | None = None, timeout: float = 840) -> list[str]:
    """Run `command` as `world` ranks to the end; each rank's output. Fails (AssertionError) if any rank fails."""
    return wait(start(command, world, cwd, env), command, timeout)


def wait(procs: list[subprocess.Popen], command: list[str], timeout: float = 840) -> list[str]:
    """The ranks `start` started, waited for to the end; each rank's output. Fails (AssertionError) if any rank
    fails. Two jobs started before either is waited for run side by side."""
    outputs = []
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, out) in enumerate(zip(procs, outputs, strict=True)):
        assert p.returncode == 0, f"rank {rank} of {command[1:3]} exited {p.returncode}\n{out[-8000:]}"
    return outputs
