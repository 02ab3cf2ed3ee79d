"""The extra local ranks started early (bigtrain/parallel/prestart.py, `bigtrain.worker --wait`): they leave quietly
and promptly when rank zero stops before launch, and train exactly as a freshly started rank would when launched."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import NANO, REPO, assert_ok, compose, read_summary, run_bigtrain


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_waiting_rank_exits_quietly_when_its_stdin_closes(tmp_path):
    """Rank zero gone (crashed, killed, or released it): the pipe closes and the waiting rank exits 0, silent."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bigtrain.worker", "--wait", str(tmp_path / "never-written")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    out, err = proc.communicate(input=b"", timeout=120)  # nothing written, stdin closed
    assert (proc.returncode, out, err) == (0, b"", b"")
    assert not (tmp_path / "never-written").exists()


def test_rank_zero_failing_before_launch_lets_its_waiting_ranks_go(tmp_path, monkeypatch, capfd):
    """Rank zero refuses the run directory (it holds another run) after it started rank 1 waiting: run() raises
    the one clear error, and the waiting rank (found by PID) has exited 0, with no traceback, before run()
    returns: no orphan. (Validation errors come before any rank starts.)"""
    from bigtrain.errors import BigtrainError
    from bigtrain.parallel import prestart
    from bigtrain.tasks.train import run

    started: list[subprocess.Popen] = []

    class RecordingPopen(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(prestart.subprocess, "Popen", RecordingPopen)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # what trainer.threads=auto would set in this test process
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text("{}")  # another run's
    with pytest.raises(BigtrainError, match="already holds a run"):
        run(compose(*NANO, "parallelism=ddp", "hardware.devices=2"), run_dir)
    assert len(started) == 1 and "--wait" in started[0].args
    assert started[0].returncode == 0 and _gone(started[0].pid)
    assert not prestart._WAITING
    assert "Traceback" not in capfd.readouterr().err


def test_handed_environment_decides_between_going_on_and_a_fresh_interpreter():
    """Only the variables Lightning's launcher sets may arrive after the imports; any other difference (one an
    import may have read, e.g. OMP_NUM_THREADS) makes the waiting rank start over with exactly that environment."""
    from bigtrain.worker import changed_since_imports

    now = {"PATH": "/bin", "OMP_NUM_THREADS": "1"}
    launch = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1234", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "NODE_RANK": "0"}
    assert changed_since_imports({**now, **launch}, now) == []
    assert changed_since_imports({**now, **launch, "OMP_NUM_THREADS": "2"}, now) == ["OMP_NUM_THREADS"]
    assert changed_since_imports({"PATH": "/bin", **launch}, now) == ["OMP_NUM_THREADS"]


@pytest.mark.slow
def test_ddp_run_launches_its_prestarted_rank_without_a_restart(tmp_path):
    """A 2-process run trains through the hand-over (no 'restarts' note: the environment matched) and agrees with
    a run whose rank 1 started fresh at launch (BIGTRAIN_PRESTART=0): same losses, identical replicas."""
    short = [*NANO, "parallelism=ddp", "hardware.devices=2", "trainer.max_steps=4", "trainer.val_check_interval=2"]
    early, late = tmp_path / "early", tmp_path / "late"
    proc = run_bigtrain(*short, run_dir=early)
    assert_ok(proc)
    assert "restarts" not in proc.stderr and "Traceback" not in proc.stderr
    assert_ok(run_bigtrain(*short, run_dir=late, env={"BIGTRAIN_PRESTART": "0"}))
    a, b = read_summary(early), read_summary(late)
    assert a["world_size"] == 2 and a["replicas_identical"] is True
    assert a["val_history"] == b["val_history"]
