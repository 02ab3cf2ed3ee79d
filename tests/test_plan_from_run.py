"""Rates a user measured: plan.achieved_tflops (a published end-to-end rate) and plan.from_run (a finished run's
measured tokens/s carried to another scale)."""

from __future__ import annotations

import json

import pytest
from conftest import NANO, compose, run_bigtrain
from plan_helpers import setup

from bigtrain.config.run_config import save_run_config
from bigtrain.config.validate import validate
from bigtrain.errors import ConfigError
from bigtrain.plan import compute, plan, setup_from
from bigtrain.plan.params import n_params
from bigtrain.plan.report import table

MEGATRON = ("recipe=gpt3-175b-a100", "plan.activation_recompute=full", "plan.sequence_parallel=false")


def test_achieved_tflops_is_end_to_end_megatrons_34_days():
    """Narayanan et al. 2021 (sec. 5.1): 175B on 1024 A100s at X = 140 TFLOP/s per GPU (achieved, end to end, with
    full recomputation, on tp 8 x pp 16) trains 300B tokens in ~34 days. Entered as plan.achieved_tflops the rate
    holds the pipeline bubble and tensor-parallel traffic, so nothing is added; the same 140/312 as plan.mfu is
    stretched by them."""
    s = setup(*MEGATRON, "plan.achieved_tflops=140")
    t = compute.timing(s, n_params(s))
    assert s.pp == 16 and t["pipeline_bubble"] > 0 and t["tp_comm_time_s"] > 0
    assert t["rate_source"] == "achieved_tflops" and t["achieved_tflops_per_device"] == 140
    assert t["hfu"] == pytest.approx(140 / 312)
    assert 33.5 <= t["train_days"] <= 35.5
    as_mfu = compute.timing(setup(*MEGATRON, f"plan.mfu={140 / 312}"), n_params(s))
    assert as_mfu["train_days"] > t["train_days"] * (1 + t["pipeline_bubble"]) * 0.999


def _hand_made_run(tmp_path, efficiency: float):
    """A run directory as a training run leaves it (config.yaml, summary.json), whose tokens/s is the given
    fraction of the CPU's peak in hardware FLOPs."""
    run = tmp_path / "run"
    cfg = compose(*NANO)
    save_run_config(cfg, run)
    s = setup_from(cfg)
    hw = compute.hardware_flops_per_token(s, n_params(s))
    tokens_per_s = efficiency * s.world * s.peak_flops / hw
    (run / "summary.json").write_text(json.dumps({"tokens_per_s": tokens_per_s, "peak_memory_bytes": 1}))
    return run, tokens_per_s


A100 = ("hardware=a100-80g-x8", "parallelism=ddp", "trainer.global_batch_size=128", "trainer.micro_batch_size=16")


def test_from_run_carries_the_measured_efficiency_to_other_hardware(tmp_path):
    run, tokens_per_s = _hand_made_run(tmp_path, 0.25)
    cfg = compose("task=plan", *NANO, *A100, f"plan.from_run={run}")
    validate(cfg, planning=True)
    p = plan(cfg)
    assert p["from_run"]["efficiency"] == pytest.approx(0.25)
    assert p["from_run"]["tokens_per_s"] == pytest.approx(tokens_per_s)
    assert p["rate_source"] == "from_run" and p["achieved_tflops_per_device"] == pytest.approx(0.25 * 312)
    assert p["hfu"] == pytest.approx(0.25)
    if p["bound_by"] == "compute":
        assert p["tokens_per_s"] == pytest.approx(0.25 * 312e12 * 8 / p["hardware_flops_per_token"])
    text = table(p, "nano on a100")
    assert "efficiency 0.2500" in text and str(run) in text


def test_bad_rate_inputs_are_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"plan.from_run=.*summary.json is missing"):
        setup_from(compose("task=plan", f"plan.from_run={tmp_path}"))
    run, _ = _hand_made_run(tmp_path, 0.25)
    (run / "summary.json").write_text(json.dumps({"tokens_per_s": None}))
    with pytest.raises(ConfigError, match=r"no measured tokens_per_s"):
        setup_from(compose("task=plan", f"plan.from_run={run}"))
    for damaged in ("{not json", "[1]", '{"tokens_per_s": "fast"}'):  # a user's file: one line, never a traceback
        (run / "summary.json").write_text(damaged)
        with pytest.raises(ConfigError, match=r"plan.from_run=.*(cannot be read|no measured tokens_per_s)"):
            setup_from(compose("task=plan", f"plan.from_run={run}"))
    (run / "summary.json").write_text(json.dumps({"tokens_per_s": 5.0}))
    (run / "config.yaml").write_text("trainer: [\n")
    with pytest.raises(ConfigError, match=r"plan.from_run=.*its run files cannot be read"):
        setup_from(compose("task=plan", f"plan.from_run={run}"))
    with pytest.raises(ConfigError, match=r"both set the rate"):
        validate(compose("task=plan", "plan.achieved_tflops=100", f"plan.from_run={run}"), planning=True)
    with pytest.raises(ConfigError, match=r"plan.achieved_tflops=-1.0 must be a positive"):
        validate(compose("task=plan", "plan.achieved_tflops=-1"), planning=True)


@pytest.mark.slow
def test_from_a_real_nano_run_to_a100(tmp_path):
    """A real short training run, then `task=plan plan.from_run=RUN hardware=a100-80g-x8`: the efficiency it prints
    is the run's own measured hardware FLOPs utilisation (its summary's hfu, timed by another callback)."""
    run = tmp_path / "run"
    proc = run_bigtrain(*NANO, "trainer.max_steps=6", "trainer.val_check_interval=6", run_dir=run)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run / "summary.json").read_text())
    proc = run_bigtrain("task=plan", "plan.format=json", *NANO, *A100, f"plan.from_run={run}", run_dir=tmp_path / "p")
    assert proc.returncode == 0, proc.stderr
    p = json.loads(proc.stdout)
    assert p["from_run"]["tokens_per_s"] == pytest.approx(summary["tokens_per_s"])
    assert 0.5 < p["from_run"]["efficiency"] / summary["hfu"] < 2
    proc = run_bigtrain("task=plan", *NANO, *A100, f"plan.from_run={run}", run_dir=tmp_path / "t")
    assert "efficiency" in proc.stdout and str(run) in proc.stdout
