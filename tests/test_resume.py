"""Runs that survive: SIGKILL + resume=auto is exact, SIGTERM checkpoints and exits cleanly, corrupt checkpoints
are skipped, keep_last holds."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from bigtrain.training.checkpointing import check_loadable, find_resume_checkpoint
from tests.conftest import NANO, assert_ok, finish, read_summary, run_bigtrain, start_bigtrain

RUN = [
    *NANO,
    "trainer.max_steps=30",
    "trainer.checkpoint_every_n_steps=10",
    "trainer.val_check_interval=15",
    "trainer.keep_last=2",
]


def losses(run_dir: Path) -> dict[int, float]:
    """train/loss per step; a resumed run re-logs the steps after its checkpoint, and the last row wins."""
    with open(run_dir / "metrics.csv") as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}


def start(run_dir: Path, *extra: str) -> subprocess.Popen:
    return start_bigtrain(*RUN, *extra, run_dir=run_dir)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"run ended before {path.name} appeared:\n{finish(proc).stderr[-3000:]}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def single_process_runs(tmp_path_factory) -> dict:
    """The uninterrupted 30-step reference; a run SIGKILLed and one SIGTERMed once their step-10 checkpoint
    exists, then both continued with resume=auto. Side by side (one thread per run, two cores: about half the wall
    time; a run's losses do not depend on what else runs, and the comparisons below are bit-exact). Returns what
    the tests read, each fact taken when it held (before the resume changed the run directory)."""
    root = tmp_path_factory.mktemp("single")
    ref, killed, preempted = (root / name for name in ("reference", "killed", "preempted"))
    reference, kill, term = start(ref), start(killed), start(preempted)
    signalled: set[str] = set()
    deadline = time.monotonic() + 600
    while len(signalled) < 2:  # signal each as soon as its own checkpoint appears: they run at their own pace
        for name, proc, run_dir in (("kill", kill, killed), ("term", term, preempted)):
            if name in signalled:
                continue
            if (run_dir / "checkpoints" / "step-0000010.ckpt").exists():
                if name == "kill":
                    os.killpg(proc.pid, signal.SIGKILL)  # no chance to clean up
                else:
                    proc.send_signal(signal.SIGTERM)
                signalled.add(name)
            else:
                assert proc.poll() is None, f"{run_dir.name} ended before step 10:\n{finish(proc).stderr[-3000:]}"
        assert time.monotonic() < deadline, f"no step-10 checkpoint after 600 s in {signalled ^ {'kill', 'term'}}"
        time.sleep(0.05)
    finish(kill)
    facts = {"killed_left_a_summary": (killed / "summary.json").exists(), "sigterm": finish(term, timeout=120)}
    if facts["sigterm"].returncode == 0:
        facts["sigterm_summary"] = read_summary(preempted)
        stopped = facts["sigterm_summary"]["steps"]
        facts["sigterm_checkpoint"] = (preempted / "checkpoints" / f"step-{stopped:07d}.ckpt").is_file()
    resumed = {run_dir: start(run_dir, "resume=auto") for run_dir in (killed, preempted)}
    facts["resumed"] = {run_dir.name: finish(proc) for run_dir, proc in resumed.items()}
    assert_ok(finish(reference))
    return {**facts, "reference": ref, "killed": killed, "preempted": preempted}


@pytest.fixture(scope="module")
def reference(single_process_runs) -> Path:
    return single_process_runs["reference"]


@pytest.mark.slow
def test_sigkill_then_resume_auto_is_bit_identical(single_process_runs, reference):
    run_dir = single_process_runs["killed"]
    assert not single_process_runs["killed_left_a_summary"]
    assert_ok(single_process_runs["resumed"]["killed"])
    s = read_summary(run_dir)
    assert s["status"] == "completed" and s["steps"] == 30 and s["resumed_from"].endswith(".ckpt")
    ref, got = losses(reference), losses(run_dir)
    start_step = int(Path(s["resumed_from"]).stem.split("-")[1])
    assert start_step >= 10
    assert [got[k] for k in range(start_step, 30)] == [ref[k] for k in range(start_step, 30)]  # bit-identical
    assert s["first_val_loss"] == read_summary(reference)["first_val_loss"]  # history came with the checkpoint
    assert s["final_val_loss"] == read_summary(reference)["final_val_loss"]
    # keep_last=2: only the two newest step checkpoints remain; last.ckpt points at the newest.
    kept = sorted(p.name for p in (run_dir / "checkpoints").glob("step-*.ckpt"))
    assert kept == ["step-0000020.ckpt", "step-0000030.ckpt"]
    assert (run_dir / "checkpoints" / "last.ckpt").resolve().name == "step-0000030.ckpt"


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_exits_cleanly_and_resumes(single_process_runs, reference):
    run_dir = single_process_runs["preempted"]
    proc = single_process_runs["sigterm"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = single_process_runs["sigterm_summary"]
    assert s["status"].startswith("stopped by SIGTERM at step ") and s["steps"] < 30
    stopped = s["steps"]
    assert single_process_runs["sigterm_checkpoint"]  # step-{stopped}.ckpt, written on the way out
    assert_ok(single_process_runs["resumed"]["preempted"])
    ref, got = losses(reference), losses(run_dir)
    assert [got[k] for k in range(stopped, 30)] == [ref[k] for k in range(stopped, 30)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "strategy",
    [["parallelism=ddp"], ["parallelism=deepspeed", "zero=2"]],
    ids=["ddp", "deepspeed-zero2"],
)
def test_two_process_sigkill_then_resume_matches_uninterrupted(tmp_path, strategy):
    """2 ranks on gloo, killed with SIGKILL after the step-8 checkpoint (a DeepSpeed checkpoint is a folder of
    per-rank shards), resumed with resume=auto: steps 8-15 match an uninterrupted run within 1e-6. The uninterrupted
    run trains beside the one that is cut (one torch thread per rank in every run of the test)."""
    two = [
        *strategy,
        "hardware.devices=2",
        "trainer.max_steps=16",
        "trainer.checkpoint_every_n_steps=8",
        "trainer.sample_tokens=0",
    ]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    one_thread = {"OMP_NUM_THREADS": "1"}
    uninterrupted = start_bigtrain(*RUN, *two, run_dir=whole, env=one_thread)
    proc = start_bigtrain(*RUN, *two, run_dir=cut, env=one_thread)
    step8 = cut / "checkpoints" / "step-0000008.ckpt"
    # DDP's is one file (renamed into place whole); DeepSpeed's a folder of per-rank shards, whole once rank zero
    # wrote COMPLETE after every rank saved.
    wait_for(step8 / "COMPLETE" if "parallelism=deepspeed" in strategy else step8, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # both ranks: they share the session
    finish(proc)
    assert_ok(run_bigtrain(*RUN, *two, "resume=auto", run_dir=cut, env=one_thread))
    assert_ok(finish(uninterrupted))
    s = read_summary(cut)
    assert s["status"] == "completed" and s["steps"] == 16 and Path(s["resumed_from"]).name == "step-0000008.ckpt"
    a, b = losses(whole), losses(cut)
    assert all(abs(a[k] - b[k]) <= 1e-6 for k in range(8, 16)), [(a[k], b[k]) for k in range(8, 16)]


def test_corrupt_checkpoint_falls_back_to_the_previous_good_one(tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    good = {"state_dict": {"w": torch.ones(2)}, "global_step": 10}
    torch.save(good, folder / "step-0000010.ckpt")
    torch.save({**good, "global_step": 20}, folder / "step-0000020.ckpt")
    data = (folder / "step-0000020.ckpt").read_bytes()
    (folder / "step-0000020.ckpt").write_bytes(data[: len(data) // 2])  # truncated mid-write
    messages: list[str] = []
    assert find_resume_checkpoint("auto", tmp_path / "run", log=messages.append) == folder / "step-0000010.ckpt"
    assert "step-0000020.ckpt is unreadable" in messages[0] and "trying the previous one" in messages[0]
    assert check_loadable(folder / "step-0000010.ckpt") is None
    assert find_resume_checkpoint("auto", tmp_path / "fresh") is None  # nothing to resume: a fresh run


def test_a_sharded_checkpoint_without_its_complete_marker_is_skipped(tmp_path):
    """A sharded save cut short (some ranks' parts written, no COMPLETE from rank zero) is passed over for the
    previous complete one; the marker is what parallel/sharded_checkpoints.py writes after every rank's save."""
    from bigtrain.parallel.sharded_checkpoints import write_complete_marker

    folder = tmp_path / "run" / "checkpoints"
    for step in (10, 20):
        shard_dir = folder / f"step-{step:07d}.ckpt" / "checkpoint"
        shard_dir.mkdir(parents=True)
        torch.save({"module": {"w": torch.zeros(2)}}, shard_dir / "mp_rank_00_model_states.pt")  # a readable part
    write_complete_marker(folder / "step-0000010.ckpt", world_size=2)
    messages: list[str] = []
    assert find_resume_checkpoint("auto", tmp_path / "run", log=messages.append) == folder / "step-0000010.ckpt"
    assert "step-0000020.ckpt is an incomplete sharded checkpoint (no COMPLETE file" in messages[0]


def test_resume_path_errors(tmp_path):
    from bigtrain.errors import BigtrainError

    with pytest.raises(BigtrainError, match="resume=/no/such/run does not exist"):
        find_resume_checkpoint("/no/such/run", tmp_path)
    bad = tmp_path / "step-0000005.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(BigtrainError, match="cannot be used: unreadable"):
        find_resume_checkpoint(str(bad), tmp_path)


@pytest.mark.slow  # it reads the 30-step reference run (an end-to-end CLI run) the resume tests share
def test_checkpoints_load_with_weights_only(reference):
    ckpt = torch.load(reference / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 30 and "rng" in ckpt["bigtrain"] and ckpt["bigtrain"]["val_history"]
