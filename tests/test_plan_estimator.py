"""plan.accounting=deepspeed-estimator against DeepSpeed's own estimate_zero2_model_states_mem_needs and
estimate_zero3_model_states_mem_needs, called live on the planner's parameter counts (deepspeed is imported here
only; the planner re-states the functions without torch in bigtrain/plan/estimator.py)."""

from __future__ import annotations

import itertools

import pytest
from conftest import compose
from plan_helpers import setup

from bigtrain.config.validate import validate
from bigtrain.plan import estimator, memory, plan
from bigtrain.plan.params import largest_module_params, n_params

# Shapes of every kind the model supports: GPT-2 (tied, learned positions, biases), Llama 2 (SwiGLU, RMSNorm, rope,
# untied head), GPT-3 175B; each on one (GPUs per node, nodes) layout and one DeepSpeed additional_buffer_factor.
# 2 GPUs take the other side of both max() terms of the CPU columns (4 bytes x GPUs below 16 or 16/nodes).
SHAPES = [("gpt2-124m", 2, 1, 1.5), ("gpt2-1.5b", 16, 4, 2.0), ("llama2-7b", 8, 2, 1.5), ("gpt3-175b", 8, 16, 1.25)]
# Every ZeRO stage x every offload the estimators know (the offload group less NVMe, which they do not model),
# and zero_init both ways where it matters (stage 3).
CASES = [(1, "none"), (1, "cpu"), (2, "none"), (2, "cpu"), (3, "none"), (3, "cpu"), (3, "cpu-params")]
COMBOS = [
    (model, devices, nodes, stage, offload, zero_init, factor)
    for (model, devices, nodes, factor), (stage, offload), zero_init in itertools.product(SHAPES, CASES, (True, False))
    if zero_init or stage == 3  # zero_init changes nothing at stages 1-2
]


# The offload group's files, as (optimizer, params) targets.
OFFLOAD_TARGETS = {"none": ("none", "none"), "cpu": ("cpu", "none"), "cpu-params": ("cpu", "cpu")}


def _setup(model, devices, nodes, stage, offload, zero_init, factor):
    """One composed config per shape; the stage, offload and estimator arguments varied on its Setup (composing
    every combination would cost ~0.3 s each)."""
    optimizer, params = OFFLOAD_TARGETS[offload]
    s = setup(
        f"model={model}",
        "hardware=a100-80g-x8",
        f"hardware.devices={devices}",
        f"hardware.nodes={nodes}",
        "parallelism=deepspeed",
        f"trainer.global_batch_size={devices * nodes}",
        "trainer.micro_batch_size=1",
        "plan.accounting=deepspeed-estimator",
    )
    return s.vary(
        zero=stage,
        offload_optimizer=optimizer,
        offload_params=params,
        zero_init=zero_init,
        additional_buffer_factor=factor,
    )


def test_offload_targets_are_the_offload_groups():
    for name, (optimizer, params) in OFFLOAD_TARGETS.items():
        s = setup("parallelism=deepspeed", "zero.stage=3", f"offload={name}")
        assert (s.offload_optimizer, s.offload_params) == (optimizer, params)
    s = setup("parallelism=deepspeed", "plan.zero_init=false", "plan.additional_buffer_factor=2.0")
    assert (s.zero_init, s.additional_buffer_factor) == (False, 2.0)


def test_enough_combinations():
    assert len(COMBOS) >= 12 and {c[3] for c in COMBOS} == {1, 2, 3}


@pytest.mark.parametrize(("model", "devices", "nodes", "stage", "offload", "zero_init", "factor"), COMBOS)
def test_matches_deepspeeds_estimators_live(model, devices, nodes, stage, offload, zero_init, factor):
    """GPU bytes per device (the plan's params + grads + optimizer + the ZeRO-3 gather buffer) and CPU bytes per
    node (the plan's host row) within 1% of DeepSpeed's functions on the same total and largest-layer counts."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    s = _setup(model, devices, nodes, stage, offload, zero_init, factor)
    n = n_params(s)
    cpu_offload, params_offload = offload != "none", offload == "cpu-params"
    if stage == 3:
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            n, largest_module_params(s), devices, nodes, cpu_offload, params_offload, zero_init, factor
        )
    else:
        cpu, gpu = estimate_zero2_model_states_mem_needs(n, devices, nodes, cpu_offload, factor)
    mem = memory.memory(s, n)
    planned_gpu = mem["params"] + mem["grads"] + mem["optimizer"] + memory.gather_buffer(s)
    assert planned_gpu == pytest.approx(gpu, rel=0.01)
    assert mem["host"] == pytest.approx(cpu, rel=0.01)
    # the torch-free re-statement is the function itself, to the byte
    assert estimator.estimate(s, n)["gpu"] == pytest.approx(gpu, abs=1)
    assert estimator.estimate(s, n)["cpu"] == pytest.approx(cpu, abs=1)


def test_the_plan_reports_the_estimate_under_every_accounting():
    """The JSON carries DeepSpeed's columns and every accounting's model-state total; the host row follows the
    chosen accounting (DeepSpeed's CPU column includes the load-time fp32 copy and the 1.5 buffer factor)."""
    base = ("model=gpt2-1.5b", "hardware=a100-80g-x8", "parallelism=deepspeed", "zero.stage=2", "offload=cpu")
    out = {}
    for accounting in ("engine", "deepspeed-estimator"):
        cfg = compose(
            "task=plan",
            *base,
            "trainer.global_batch_size=8",
            "trainer.micro_batch_size=1",
            f"plan.accounting={accounting}",
        )
        validate(cfg, planning=True)
        out[accounting] = plan(cfg)
    assert out["engine"]["deepspeed_estimate_bytes"] == out["deepspeed-estimator"]["deepspeed_estimate_bytes"]
    assert set(out["engine"]["model_states_bytes"]) == {"engine", "paper", "deepspeed-estimator"}
    n = out["engine"]["n_params"]
    assert out["engine"]["host_memory_bytes"] == pytest.approx(16 * n, rel=1e-6)  # fp32 states of 8 ranks
    assert out["deepspeed-estimator"]["host_memory_bytes"] == pytest.approx(n * max(4 * 8, 16) * 1.5, rel=1e-6)


def test_no_estimator_without_zero():
    s = setup("model=nano", "parallelism=ddp", "hardware.devices=2", "plan.accounting=deepspeed-estimator")
    n = n_params(s)
    assert not estimator.applies(s)
    assert memory.model_states(s, n) == memory.model_states(s, n, "engine")
