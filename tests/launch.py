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
import tempfile
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], world: int, cwd: Path, env: dict | None = None) -> list[subprocess.Popen]:
    """The ranks, started (not waited for): for tests that kill them."""
    base = {**os.environ, **(env or {}), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    base.update(WORLD_SIZE=str(world), NODE_RANK="0", LOCAL_WORLD_SIZE=str(world))
    procs = []
    for r in range(world):
        # Each rank's output goes to an unnamed file, not a pipe: a rank that writes more than a pipe holds while
        # the test waits on another rank would block on its write, and its peers on it (a hang, not a failure).
        output = tempfile.TemporaryFile("w+")
        proc = subprocess.Popen(
            command,
            env={**base, "RANK": str(r), "LOCAL_RANK": str(r)},
            cwd=cwd,
            text=True,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc.output = output
        procs.append(proc)
    return procs


def output_of(proc: subprocess.Popen) -> str:
    proc.output.seek(0)
    return proc.output.read()


def launch(command: list[str], world: int, cwd: Path, env: dict | None = None, timeout: float = 840) -> list[str]:
    """Run `command` as `world` ranks to the end; each rank's output. Fails (AssertionError) if any rank fails."""
    return wait(start(command, world, cwd, env), command, timeout)


def wait(procs: list[subprocess.Popen], command: list[str], timeout: float = 840) -> list[str]:
    """The ranks `start` started, waited for to the end; each rank's output. Fails (AssertionError) if any rank
    fails. Two jobs started before either is waited for run side by side."""
    outputs = []
    try:
        for p in procs:
            p.wait(timeout=timeout)
        outputs = [output_of(p) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.output.close()
    for rank, (p, out) in enumerate(zip(procs, outputs, strict=True)):
        assert p.returncode == 0, f"rank {rank} of {command[1:3]} exited {p.returncode}\n{out[-8000:]}"
    return outputs
