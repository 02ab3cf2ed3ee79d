"""One run per run directory (bigtrain/training/run_dir.py): an earlier run is never merged into, a completed run
is not re-run by resume=auto, and temporary files of killed writers are cleaned when the next run starts."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from bigtrain.atomic import pid_alive, remove_stale
from bigtrain.errors import ConfigError
from bigtrain.training.run_dir import claim
from tests.conftest import NANO, assert_ok, run_bigtrain


def _dead_pid() -> int:
    """The PID of a process that has exited (reaped), so no live process owns it for the moment."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)
    return proc.pid


def _summary(run_dir, steps=12, status="completed"):
    (run_dir / "summary.json").write_text(json.dumps({"status": status, "steps": steps, "final_val_loss": 2.0}))


def test_a_run_dir_holding_a_run_is_refused_without_resume(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,loss\n")
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(ConfigError, match=r"already holds a run \(metrics.csv\); continue it with resume=auto"):
        claim(tmp_path, None, 12)
    assert claim(tmp_path, "auto", 12, log=lambda _: None) is None  # resuming is fine


def test_an_empty_or_new_dir_is_fresh(tmp_path):
    (tmp_path / "checkpoints").mkdir()  # an empty checkpoints folder is no run
    assert claim(tmp_path, None, 12) is None
    assert claim(tmp_path / "new", "auto", 12) is None


def test_completed_run_is_not_rerun(tmp_path):
    _summary(tmp_path, steps=12)
    said = []
    assert claim(tmp_path, "auto", 12, log=said.append)["steps"] == 12
    assert claim(tmp_path, str(tmp_path), 12, log=said.append)["steps"] == 12  # resume=THIS_DIR is the same
    assert "already completed 12 steps" in said[0] and "nothing to resume" in said[0]
    assert claim(tmp_path, "auto", 20, log=said.append) is None  # more steps asked for: resume trains on
    _summary(tmp_path, steps=6, status="stopped by SIGTERM at step 6")
    assert claim(tmp_path, "auto", 12, log=said.append) is None


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    dead, alive = _dead_pid(), os.getpid()
    stale = ckpts / f".step-0000006.ckpt.tmp-{dead}"
    live = ckpts / f".step-0000012.ckpt.tmp-{alive}"
    stale.write_bytes(b"half")
    live.write_bytes(b"being written")
    (tmp_path / "summary.json.tmp").write_text("{")
    said = []
    claim(tmp_path, "auto", 12, log=said.append)
    assert not stale.exists() and live.exists() and not (tmp_path / "summary.json.tmp").exists()
    assert said and "removed 2 temporary file(s)" in said[0]


def test_prepare_leftovers_are_removed_only_when_old(tmp_path):
    dead = _dead_pid()
    old, fresh = tmp_path / f"text-byte-abc.tmp-{dead}", tmp_path / f"text-byte-def.tmp-{dead}"
    for folder in (old, fresh):
        folder.mkdir()
        (folder / "train.bin").write_bytes(b"\0" * 8)
    hour_ago = time.time() - 3700
    os.utime(old, (hour_ago, hour_ago))
    assert remove_stale(tmp_path, "*.tmp-*", min_age_s=3600) == [old.name]
    assert fresh.exists()  # maybe another host's preparation in progress on a shared cache


def _digest(run_dir) -> dict:
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_cli_completed_run_and_reused_dir(tmp_path):
    """A real nano run, then the same run dir again: resume=auto exits 0 saying there is nothing to do, and a run
    without resume is refused in one line; neither changes a byte of what the first run wrote."""
    run_dir = tmp_path / "run"
    assert_ok(run_bigtrain(*NANO, run_dir=run_dir))
    before = _digest(run_dir)
    again = run_bigtrain(*NANO, "resume=auto", run_dir=run_dir)
    assert_ok(again)
    assert "already completed 12 steps" in again.stdout
    other = run_bigtrain(*NANO, "optim.lr=1e-3", run_dir=run_dir)
    assert other.returncode == 2 and other.stderr.strip().splitlines() == [other.stderr.strip()], other.stderr
    assert other.stderr.startswith("bigtrain: error: hydra.run.dir=") and "already holds a run" in other.stderr
    assert _digest(run_dir) == before


@pytest.mark.slow
def test_resume_runs_the_validation_due_at_the_checkpoint_step(tmp_path):
    """A step checkpoint is written before that step's validation: a run killed between the two resumes from it.
    Simulated exactly by resuming a fresh run dir from a finished run's step-6 checkpoint (written before the
    step-6 validation): the resumed run's validation history matches the uninterrupted run's, step 6 included."""
    import csv
    import shutil

    import torch

    every6 = [*NANO, "trainer.checkpoint_every_n_steps=6", "trainer.sample_tokens=0"]
    reference = tmp_path / "reference"
    assert_ok(run_bigtrain(*every6, run_dir=reference))
    checkpoint = reference / "checkpoints" / "step-0000006.ckpt"
    history = torch.load(checkpoint, map_location="cpu", weights_only=True)["bigtrain"]["val_history"]
    assert [s for s, _ in history] == [0], history  # the step-6 validation came after this checkpoint
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(checkpoint, resumed / "checkpoints")
    assert_ok(run_bigtrain(*every6, "resume=auto", run_dir=resumed))
    ref = json.loads((reference / "summary.json").read_text())["val_history"]
    got = json.loads((resumed / "summary.json").read_text())["val_history"]
    assert [s for s, _ in got] == [s for s, _ in ref] == [0, 6, 12]
    assert all(abs(a - b) < 1e-6 for (_, a), (_, b) in zip(got, ref, strict=True)), (got, ref)

    def val_rows(run_dir):
        rows = csv.DictReader((run_dir / "metrics.csv").read_text().splitlines())
        return [int(r["step"]) for r in rows if r.get("val/loss")]

    assert val_rows(resumed) == [s for s in val_rows(reference) if s >= 5] == [5, 11]  # Lightning logs step - 1
