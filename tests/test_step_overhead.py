"""What a training step costs beyond the work the user asked for: no collective per step beyond DDP's gradient
all-reduce where the gradients are replicated, the ranks still deciding alike (NaN guard, stop signal), and a train
path that imports none of the optional libraries torchmetrics would pull in (start-up time and memory per rank)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from bigtrain.training.guards import NonFiniteGuard
from bigtrain.training.signals import GracefulStop
from tests.conftest import NANO, SMALL_DATA, assert_ok, run_bigtrain
from tests.launch import launch

# ---------------------------------------------------------------- the NaN guard's agreement


class _Recorder:
    """Stands in for torch.distributed.all_reduce in one process: records each call; returns a finished work."""

    def __init__(self, others: float = 0.0):
        self.calls = 0
        self.others = others  # what the other rank contributes to a MAX reduction

    def __call__(self, tensor, op=None, async_op=False, group=None):
        self.calls += 1
        tensor.copy_(torch.maximum(tensor, torch.full_like(tensor, self.others)))
        return SimpleNamespace(wait=lambda: True) if async_op else None


def _module_with_grads(bad: bool) -> torch.nn.Module:
    module = torch.nn.Linear(3, 2)
    for p in module.parameters():
        p.grad = torch.ones_like(p)
    if bad:
        module.bias.grad[0] = float("inf")
    module.device = torch.device("cpu")
    module.log = lambda *a, **k: None
    return module


def _trainer(world: int) -> SimpleNamespace:
    return SimpleNamespace(world_size=world, global_step=5, is_global_zero=True)


@pytest.mark.parametrize("bad", [False, True])
def test_guard_on_replicated_gradients_takes_no_collective(monkeypatch, tmp_path, bad):
    """DDP (replicated_grads): the local verdict is every rank's verdict, so the guard makes no collective."""
    recorder = _Recorder()
    monkeypatch.setattr(dist, "all_reduce", recorder)
    guard = NonFiniteGuard("skip", tmp_path, replicated_grads=True)
    module = _module_with_grads(bad)
    guard.on_before_optimizer_step(_trainer(2), module, None)
    assert recorder.calls == 0
    assert guard.skipped == ([5] if bad else [])
    assert all((p.grad is None) == bad for p in module.parameters())


def test_guard_on_partitioned_gradients_follows_the_other_ranks(monkeypatch, tmp_path):
    """ZeRO / FSDP (a part per rank): one all-reduce, and a rank whose own part is finite skips with the others."""
    recorder = _Recorder(others=1.0)  # the other rank saw a non-finite gradient
    monkeypatch.setattr(dist, "all_reduce", recorder)
    guard = NonFiniteGuard("skip", tmp_path)
    module = _module_with_grads(bad=False)
    guard.on_before_optimizer_step(_trainer(2), module, None)
    assert recorder.calls == 1 and guard.skipped == [5]
    assert all(p.grad is None for p in module.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("poison", ["nan", "inf"])
def test_ddp_all_reduce_hands_one_ranks_nonfinite_gradient_to_every_rank(tmp_path, poison):
    """The property the guard's collective-free DDP path rests on, with bigtrain's DDP settings (gradient buckets
    as views, static graph), on 2 gloo processes: a NaN or inf in one rank's backward is in every rank's reduced
    gradients, so each rank's local check gives the same verdict; later steps are finite again on both. (Started
    as two processes like every multi-process test here: a CI run stopped making progress at this test when it used
    torch.multiprocessing.spawn.)"""
    worker = Path(__file__).with_name("ddp_nonfinite_worker.py")
    launch([sys.executable, str(worker), poison, str(tmp_path)], world=2, cwd=tmp_path, timeout=180)
    verdicts = [(tmp_path / f"rank{r}").read_text() for r in (0, 1)]
    assert verdicts[0] == verdicts[1] == repr([True, False, True]), verdicts


@pytest.mark.parametrize(
    ("overrides", "static"),
    [
        (("trainer.micro_batch_size=8",), True),
        (("trainer.micro_batch_size=8", "model=tiny-moe"), False),  # an expert may get no tokens in a step
        (("trainer.micro_batch_size=4",), False),  # accumulation: no_sync in DDP's first, recorded iteration
    ],
)
def test_ddp_settings_use_a_static_graph_only_where_it_holds(overrides, static):
    from bigtrain.config.layout import layout_of
    from bigtrain.parallel.strategy import ddp_settings
    from tests.conftest import compose

    cfg = compose("parallelism=ddp", "hardware.devices=2", "trainer.global_batch_size=16", *overrides)
    settings = ddp_settings(cfg, layout_of(cfg))
    assert settings == {"gradient_as_bucket_view": True, "static_graph": static}


# ---------------------------------------------------------------- the stop signal's agreement


class _EpochLoop:
    """Lightning's training epoch loop, as far as GracefulStop touches it."""

    broadcasts = 0

    def _broadcast_sigterm_tensor(self) -> None:
        self.broadcasts += 1


def _stop_run(monkeypatch, tmp_path, signal_at: int, world: int):
    recorder = _Recorder()
    monkeypatch.setattr(dist, "all_reduce", recorder)
    saved: list[int] = []
    stop = GracefulStop(lambda step: tmp_path / f"step-{step}.ckpt")
    trainer = SimpleNamespace(
        world_size=world,
        global_step=0,
        accumulate_grad_batches=1,
        should_stop=False,
        save_checkpoint=lambda path: saved.append(trainer.global_step),
        fit_loop=SimpleNamespace(epoch_loop=_EpochLoop()),
    )
    loop = trainer.fit_loop.epoch_loop
    module = SimpleNamespace(device=torch.device("cpu"))
    stop.on_train_start(trainer, module)
    try:
        # Lightning's per-step broadcast of its own SIGTERM flag is switched off while this callback owns SIGTERM.
        loop._broadcast_sigterm_tensor()
        assert loop.broadcasts == 0
        for step in range(1, 8):
            trainer.global_step = step
            if step == signal_at:
                stop.received = "SIGTERM"  # what the handler does
            stop.on_train_batch_end(trainer, module, None, None, step - 1)
            if trainer.should_stop:
                break
    finally:
        stop.on_train_end(trainer, module)
    loop._broadcast_sigterm_tensor()  # Lightning's own again after the fit
    assert loop.broadcasts == 1
    return stop, recorder, saved


def test_stop_signal_on_one_process_stops_at_that_step(monkeypatch, tmp_path):
    stop, recorder, saved = _stop_run(monkeypatch, tmp_path, signal_at=3, world=1)
    assert saved == [3] and stop.stopped_at == 3 and recorder.calls == 0


def test_stop_signal_agreement_is_asynchronous_and_one_step_late(monkeypatch, tmp_path):
    """With several ranks the flag's all-reduce is started at one step boundary and read at the next: every rank
    reads the same result at the same step, so they checkpoint and stop together, one step after the signal."""
    stop, recorder, saved = _stop_run(monkeypatch, tmp_path, signal_at=3, world=2)
    assert saved == [4] and stop.stopped_at == 4
    assert recorder.calls == 3  # started at steps 1, 2, 3; the one of step 3 read at step 4, none started after


# ---------------------------------------------------------------- the train path's imports

EXTRAS = ("transformers", "scipy", "matplotlib")


@pytest.mark.slow
def test_train_path_imports_no_optional_extras_on_any_rank(tmp_path):
    """Lightning imports torchmetrics, which imports transformers, scipy and matplotlib whenever they are installed;
    bigtrain's train path keeps them out (training/lean_imports.py). PYTHONPROFILEIMPORTTIME reaches both ranks of
    a 2-process DDP run (rank 1 inherits the environment), and every import either makes goes to stderr."""
    installed = [m for m in EXTRAS if importlib.util.find_spec(m) is not None]
    if not installed:
        pytest.skip("none of transformers, scipy, matplotlib is installed: nothing could pull them in")
    proc = run_bigtrain(
        *NANO,
        *SMALL_DATA,
        "parallelism=ddp",
        "hardware.devices=2",
        "trainer.max_steps=1",
        "trainer.val_batches=0",
        "trainer.sample_tokens=0",
        run_dir=tmp_path / "run",
        env={"PYTHONPROFILEIMPORTTIME": "1"},
    )
    assert_ok(proc)
    imported = {
        line.split("|")[2].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "self [us]" not in line
    }
    assert "torch" in imported and "pytorch_lightning" in imported  # the log covers the training imports
    assert sum(1 for line in proc.stderr.splitlines() if line.endswith("| pytorch_lightning")) == 2  # both ranks
    assert not [m for m in installed if m in imported], sorted(m for m in imported if m.split(".")[0] in EXTRAS)[:10]
