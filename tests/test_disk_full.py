"""A full disk, a file-size limit and a read-only run directory each end a run in one `bigtrain: error:` line, and
nothing written before is lost: every checkpoint left is complete, no temporary file remains, and the run
continues with resume=auto once there is space again.

Uses a small tmpfs when this process may mount one (root), else RLIMIT_FSIZE in the child (the same errno family,
EFBIG instead of ENOSPC; a read-only folder is then made with permission bits)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

from bigtrain.training.checkpointing import check_loadable
from tests.conftest import REPO, assert_ok, read_summary

RUN = [
    "model=nano",
    "trainer.max_steps=80",
    "trainer.checkpoint_every_n_steps=1",
    "trainer.keep_last=100",
    "trainer.val_check_interval=40",
    "trainer.val_batches=1",
    "trainer.global_batch_size=8",
    "trainer.micro_batch_size=8",
    "trainer.progress=false",
    "trainer.sample_tokens=0",
    "data.max_bytes=300000",
]


def _bigtrain(*overrides, run_dir, file_limit: int | None = None) -> subprocess.CompletedProcess:
    def limit():
        if file_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run(
        [sys.executable, "-m", "bigtrain", *overrides, f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=limit,
    )


def _can_mount(path) -> bool:
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(path)]).returncode == 0


def _one_line(proc, starts: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"bigtrain: error: {starts}"), proc.stderr[-3000:]


def _intact(run_dir) -> list:
    checkpoints = sorted((run_dir / "checkpoints").glob("step-*.ckpt"))
    assert all(check_loadable(p) is None for p in checkpoints)
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]
    return checkpoints


@pytest.mark.slow
def test_disk_full_then_read_only_then_resume(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = _can_mount(mount)
    run_dir = mount / "run"
    try:
        if mounted:  # 24 MiB: about 17 nano checkpoints fit, then the disk is full
            full = _bigtrain(*RUN, run_dir=run_dir)
            _one_line(full, "the disk is full (No space left on device)")
        else:  # no mount: a 300 kB file-size limit stops the first checkpoint (470 kB)
            full = _bigtrain(*RUN, run_dir=run_dir, file_limit=300_000)
            _one_line(full, "a file-size limit was reached")
        kept = _intact(run_dir)
        assert (
            f"the newest complete checkpoint is {kept[-1]}" in full.stderr if kept else "no checkpoint" in full.stderr
        )
        config = (run_dir / "config.yaml").read_text()

        # The same run dir, now read-only: refused before anything is written. (Root without a mount cannot make
        # one: permission bits do not stop root.)
        if mounted or os.geteuid() != 0:
            if mounted:
                subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
            else:
                run_dir.chmod(0o555)
            read_only = _bigtrain(*RUN, "resume=auto", run_dir=run_dir)
            _one_line(read_only, f"hydra.run.dir={run_dir} is not writable")
            assert (run_dir / "config.yaml").read_text() == config and _intact(run_dir) == kept

        # Space again: resume=auto finishes the run from the newest complete checkpoint.
        if mounted:
            subprocess.run(["mount", "-o", "remount,rw,size=96m", str(mount)], check=True)
        else:
            run_dir.chmod(0o755)
        assert_ok(_bigtrain(*RUN, "resume=auto", run_dir=run_dir))
        summary = read_summary(run_dir)
        assert summary["status"] == "completed" and summary["steps"] == 80
        assert summary["resumed_from"] == (str(kept[-1]) if kept else None)
    finally:
        if mounted:
            subprocess.run(["umount", str(mount)], check=False)
