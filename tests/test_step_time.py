"""The step-time breakdown of a real CPU run: every part logged to the loggers, and the parts (data, forward,
backward, optimizer) covering the step time the Throughput callback measures on its own clock to within 10%."""

from __future__ import annotations

import csv

import pytest
from conftest import SMALL_DATA, assert_ok, read_summary, run_bigtrain

from bigtrain.training.step_time import PARTS, StepTimeBreakdown, StepTimeProfiler, peak_key_for

# The tiny model: its steps are long enough (~0.1 s on 2 cores) that Lightning's own per-step bookkeeping is small
# beside them, as in any real run. Logged every 2 steps, as a real run logs every N.
TINY = [
    "model=tiny",
    "trainer.max_steps=10",
    "trainer.val_check_interval=5",
    "trainer.val_batches=2",
    "trainer.global_batch_size=8",
    "trainer.micro_batch_size=4",
    "trainer.log_every_n_steps=2",
    "trainer.progress=false",
    "trainer.sample_tokens=0",
    *SMALL_DATA,
]
BREAKDOWN_KEYS = [f"time/{p}_ms" for p in (*PARTS, "step", "other")]
PERF_KEYS = ["perf/tokens_per_s", "perf/tflops_per_device", "perf/mfu", "perf/hfu"]
MEMORY_KEYS = ["memory/rss_mib", "memory/peak_mib", "memory/planned_mib"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("step-time") / "run"
    assert_ok(run_bigtrain(*TINY, run_dir=run_dir))
    return run_dir


def test_logged_keys_hold_the_breakdown_every_log_interval(tiny_run):
    with (tiny_run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    for key in BREAKDOWN_KEYS + PERF_KEYS + MEMORY_KEYS:
        logged = {int(r["step"]) for r in rows if r.get(key)}
        assert logged == set(range(2, 11, 2)), (key, logged)
    one = next(r for r in rows if r.get("time/step_ms"))
    assert float(one["memory/planned_mib"]) > 0 and float(one["memory/rss_mib"]) > 50  # the interpreter alone


def test_parts_add_up_to_the_measured_step_time(tiny_run):
    s = read_summary(tiny_run)
    parts = [s[f"time_{p}_ms"] for p in PARTS]
    assert all(p > 0 for p in parts), parts
    # The step time of the Throughput callback (its own clock, same steps: all but the first, validation excluded).
    measured_ms = 1e3 * s["tokens"] / s["steps"] / s["tokens_per_s"]
    assert s["time_step_ms"] == pytest.approx(measured_ms, rel=0.02)
    assert sum(parts) == pytest.approx(measured_ms, rel=0.10), (parts, s["time_other_ms"], measured_ms)
    assert 0 < s["mfu"] < 1 and s["hfu"] == pytest.approx(s["mfu"])  # no recomputation: HFU = MFU
    assert s["tflops_per_device"] == pytest.approx(s["mfu"] * 0.2)  # hardware=cpu: peak_tflops_fp32 0.2


def test_an_mfu_above_one_names_the_peak_key_and_is_not_reported(capsys):
    """A peak far below what was measured (as if hardware.peak_tflops_fp32 were mistyped) gives no MFU and one line
    naming the key. Pure arithmetic on recorded step times: no run needed."""
    cb = StepTimeBreakdown(StepTimeProfiler(), 4096, 6e6, 6e6, peak_flops=1e6, peak_key=peak_key_for("32-true"))
    cb.steps = [dict.fromkeys((*PARTS, "step"), 0.01)] * 3
    assert cb._checked(2.5, 2.5e6) is None
    assert "hardware.peak_tflops_fp32=1e-06" in capsys.readouterr().err
    summary = cb.summary()
    assert summary["mfu"] is None and "hardware.peak_tflops_fp32" in summary["mfu_error"]
    assert peak_key_for("bf16-mixed") == "hardware.peak_tflops_bf16" and peak_key_for("16-mixed").endswith("fp16")


def test_profiler_adds_exclusive_time_per_part_and_skips_validation(monkeypatch):
    """Lightning's action names in the order its loop nests them, on a fake clock: the optimizer step's own time is
    what is left after the forward and backward its closure runs; validation's batch transfers count nowhere."""
    import bigtrain.training.step_time as st

    now = [0.0]
    monkeypatch.setattr(st.time, "perf_counter", lambda: now[0])
    p = StepTimeProfiler()

    def action(name: str, seconds: float, inner=()):
        p.start(name)
        now[0] += seconds
        for args in inner:
            action(*args)
        p.stop(name)

    action("[_TrainingEpochLoop].train_dataloader_next", 1)
    action("[Strategy]SingleDeviceStrategy.batch_to_device", 2)
    action("[Callback]Throughput.on_train_batch_start", 50)  # untracked: lands in "other"
    action(
        "[LightningModule]GPTLightningModule.optimizer_step",
        4,
        [("[Strategy]SingleDeviceStrategy.training_step", 8), ("[Strategy]SingleDeviceStrategy.backward", 16)],
    )
    p.paused = True
    action("[Strategy]SingleDeviceStrategy.batch_to_device", 100)
    p.paused = False
    assert p.take() == {"data": 3, "forward": 8, "backward": 16, "optimizer": 4}
    assert p.take() == dict.fromkeys(PARTS, 0.0)
