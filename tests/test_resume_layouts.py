"""Resume on another layout from the command line: a 2-process ZeRO-2 run killed with SIGKILL continues on one
process with resume=auto; a checkpoint of another model shape is refused in one line, leaving the run dir as it was.
(The generated layout x layout matrix is tests/test_layout_matrix.py.) The uninterrupted single-process reference
trains beside the ZeRO-2 run that is killed."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.conftest import assert_ok, finish, read_summary, run_bigtrain, start_bigtrain
from tests.test_resume import RUN as NANO_RUN
from tests.test_resume import losses, start, wait_for

STEPS = 8
RUN = [
    *NANO_RUN,
    f"trainer.max_steps={STEPS}",
    "trainer.checkpoint_every_n_steps=4",
    "trainer.val_check_interval=4",
    "trainer.sample_tokens=0",
    "trainer.keep_last=4",
]
ZERO2 = ["parallelism=deepspeed", "zero=2", "hardware.devices=2"]


@pytest.fixture(scope="module")
def reference_started(tmp_path_factory):
    """The uninterrupted single-process run, started (killed_zero2 asks for it first, so the two run side by side)."""
    run_dir = tmp_path_factory.mktemp("reference") / "single"
    proc = start_bigtrain(*RUN, run_dir=run_dir, env={"OMP_NUM_THREADS": "1"})
    yield run_dir, proc
    if proc.returncode is None:  # a selection that never read it (-k): wait for it, leave nothing running
        finish(proc)


@pytest.fixture(scope="module")
def killed_zero2(reference_started, tmp_path_factory) -> Path:
    """A 2-process ZeRO-2 run killed with SIGKILL (both ranks) once its step-4 checkpoint is whole."""
    run_dir = tmp_path_factory.mktemp("zero2") / "cut"
    proc = start(run_dir, *RUN[len(NANO_RUN) :], *ZERO2)  # start() puts NANO_RUN first itself
    wait_for(run_dir / "checkpoints" / "step-0000004.ckpt" / "COMPLETE", proc)
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to clean up; both ranks share the session
    proc.wait()
    assert not (run_dir / "summary.json").exists()
    return run_dir


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.slow
def test_other_model_shape_is_refused_in_one_line_and_nothing_is_written(killed_zero2, tmp_path):
    before = _listing(killed_zero2)
    refused = run_bigtrain(*RUN, "model.n_layer=3", "resume=auto", run_dir=killed_zero2)
    assert refused.returncode != 0
    lines = [line for line in refused.stderr.splitlines() if line.startswith("bigtrain: error:")]
    assert len(lines) == 1, refused.stderr[-3000:]
    assert "n_layer=2" in lines[0] and "n_layer=3" in lines[0], lines[0]  # both shapes, named
    assert "Traceback" not in refused.stderr
    assert _listing(killed_zero2) == before  # nothing written, nothing overwritten
    # The same through resume=PATH into a fresh run directory: refused before that directory is created.
    fresh = tmp_path / "fresh"
    ckpt = killed_zero2 / "checkpoints" / "step-0000004.ckpt"
    refused = run_bigtrain(*RUN, "model.n_layer=3", f"resume={ckpt}", run_dir=fresh)
    assert refused.returncode != 0 and "n_layer=3" in refused.stderr
    assert not fresh.exists() or not any(fresh.iterdir())


@pytest.mark.slow
def test_sigkill_zero2_then_resume_auto_on_one_process_continues_exactly(killed_zero2, reference_started):
    """Steps 5-8 on one process after the 2-process ZeRO-2 steps 1-4 match an uninterrupted single-process run
    within 1e-5 (the two layouts compute the same steps: tests/test_layout_matrix.py (a))."""
    reference, proc = reference_started
    assert_ok(finish(proc))
    resumed = run_bigtrain(*RUN, "resume=auto", run_dir=killed_zero2)  # parallelism=single: one process
    assert_ok(resumed)
    assert "converting it to the layout-neutral form" in resumed.stdout + resumed.stderr
    s = read_summary(killed_zero2)
    assert s["status"] == "completed" and s["steps"] == STEPS and s["world_size"] == 1
    assert Path(s["resumed_from"]).parent.name == "resharded"
    ref, got = losses(reference), losses(killed_zero2)
    later = range(4, STEPS)  # metrics.csv numbers steps from 0: rows 4..7 are steps 5..8
    assert all(abs(got[k] - ref[k]) <= 1e-5 for k in later), [(k, ref[k], got[k]) for k in later]
    assert abs(s["final_val_loss"] - read_summary(reference)["final_val_loss"]) <= 1e-5
