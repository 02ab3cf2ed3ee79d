"""plan.accounting: the ZeRO paper's formulas and the engine's allocation, chosen by config, both always reported."""

from __future__ import annotations

import pytest
from conftest import compose
from plan_helpers import setup

from bigtrain.config.validate import validate
from bigtrain.errors import ConfigError
from bigtrain.plan import memory, plan
from bigtrain.plan.params import n_params, persistent_params
from bigtrain.plan.report import table

GB = 1e9  # the ZeRO paper's GB
# The paper's worked example: Psi = 7.5B, Nd = 64 (4 DGX-2 nodes of 16 V100s), fp16 mixed-precision Adam (K = 12).
ZERO_PAPER = (
    "model=zero-7.5b",
    "hardware=v100-32g-x16",
    "hardware.nodes=4",
    "parallelism=deepspeed",
    "trainer.global_batch_size=64",
    "trainer.micro_batch_size=1",
)


@pytest.mark.parametrize(("stage", "published_gb"), [(0, 120), (1, 31.4), (2, 16.6), (3, 1.9)])
def test_paper_accounting_reproduces_the_zero_papers_worked_example(stage, published_gb):
    """ZeRO (Rajbhandari et al. 2020) Figure 1: 120 / 31.4 / 16.6 / 1.9 GB per GPU for the baseline and stages 1-3,
    chosen by `plan.accounting=paper` (no accounting argument: the config's choice is what the planner uses)."""
    s = setup(*ZERO_PAPER, f"zero.stage={stage}", "plan.accounting=paper")
    assert s.accounting == "paper" and s.dp == 64
    assert sum(memory.model_states(s, 7.5e9).values()) / GB == pytest.approx(published_gb, abs=0.05)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_the_plan_reports_both_totals_and_uses_the_chosen_one(stage):
    """The JSON holds every accounting's model-state total; the per-term rows sum to the chosen one. The zero-7.5b
    config counts 7.52B parameters, so the paper's figures hold to 0.5%."""
    out = {}
    for accounting in ("engine", "paper"):
        cfg = compose("task=plan", *ZERO_PAPER, f"zero.stage={stage}", f"plan.accounting={accounting}")
        validate(cfg, planning=True)
        out[accounting] = plan(cfg)
    published = {1: 31.4, 2: 16.6, 3: 1.9}[stage]
    for accounting, p in out.items():
        assert p["accounting"] == accounting
        assert set(p["model_states_bytes"]) == set(memory.ACCOUNTINGS)
        mem = p["memory_per_device_bytes"]
        assert mem["params"] + mem["grads"] + mem["optimizer"] == pytest.approx(
            p["model_states_bytes"][accounting], abs=3
        )
        assert p["model_states_bytes"]["paper"] / GB == pytest.approx(published * 7.52 / 7.5, abs=0.05)  # 1 decimal
    assert out["engine"]["model_states_bytes"] == out["paper"]["model_states_bytes"]  # reported the same either way
    # DeepSpeed's stages 1 and 2 share one implementation (memory.deepspeed_states): 2 + 18/Nd bytes per parameter,
    # the paper's stage 2 plus a 4-byte fp32 gradient partition; its stage 3 keeps small tensors whole (above 16/Nd).
    n, states = out["paper"]["n_params"], out["paper"]["model_states_bytes"]
    if stage < 3:
        assert states["engine"] == pytest.approx(2 * n + 18 * n / 64, abs=2)
    else:
        s = setup(*ZERO_PAPER, "zero.stage=3")
        assert states["engine"] - states["paper"] == pytest.approx(2 * persistent_params(s, s.persistence_threshold))
    text = table(out["paper"], "zero-7.5b")
    assert "accounting=paper (used above)" in text and "engine" in text


def test_paper_accounting_for_torch_ddp_is_the_engine_one():
    """Without a ZeRO engine (torch DDP) there is one layout, so both accountings give the same bytes."""
    s = setup("model=nano", "parallelism=ddp", "hardware.devices=2")
    n = n_params(s)
    assert memory.model_states(s, n, "paper") == memory.model_states(s, n, "engine")


def test_unknown_accounting_is_one_clear_error():
    cfg = compose("task=plan", "plan.accounting=papr")
    with pytest.raises(
        ConfigError, match=r"plan.accounting=papr is unknown; valid: engine, paper, deepspeed-estimator"
    ):
        validate(cfg, planning=True)
