"""The planner against published figures: the ZeRO paper, GPT-3's training compute, Megatron-LM's time estimate,
the Megatron-LM parameter formula, and DeepSpeed's own model-state estimators called on the same inputs."""

from __future__ import annotations

import pytest
from plan_helpers import setup

from bigtrain.plan import compute, memory
from bigtrain.plan.params import largest_module_params, megatron_n_params, n_params, persistent_params

GB = 1e9  # the ZeRO paper's GB


def _zero_paper_setup(stage: int):
    # The worked example: fp16 mixed-precision Adam (K = 12), Nd = 64 data-parallel GPUs (4 DGX-2 nodes), under
    # DeepSpeed at every stage (its stage 0 keeps the paper's 16-bit layout, unlike torch AMP's fp32 weights).
    return setup(
        "model=zero-7.5b",
        "hardware=v100-32g-x16",
        "hardware.nodes=4",
        "parallelism=ddp",
        zero=stage,
        parallelism="deepspeed",
    )


@pytest.mark.parametrize(
    ("stage", "published_gb"),
    [(0, 120), (1, 31.4), (2, 16.6), (3, 1.9)],
)
def test_zero_paper_worked_example(stage, published_gb):
    """ZeRO (Rajbhandari et al. 2020) Figure 1: Psi = 7.5B, Nd = 64, K = 12 -> 120 / 31.4 / 16.6 / 1.9 GB per GPU
    for the baseline and stages 1, 2, 3 (the paper rounds to one decimal)."""
    s = _zero_paper_setup(stage)
    assert s.dp == 64 and memory.state_bytes(s) == (2, 2, 12)
    states = memory.model_states(s, 7.5e9, accounting="paper")
    total = states["params"] + states["grads"] + states["optimizer"]
    assert total / GB == pytest.approx(published_gb, abs=0.05)


def test_zero_paper_formulas_term_by_term():
    """(2 + 2 + K) Psi; 2 Psi + 2 Psi + K Psi / Nd; 2 Psi + (2 + K) Psi / Nd; (2 + 2 + K) Psi / Nd."""
    psi, nd, k = 7.5e9, 64, 12
    expected = {
        0: (2 * psi, 2 * psi, k * psi),
        1: (2 * psi, 2 * psi, k * psi / nd),
        2: (2 * psi, 2 * psi / nd, k * psi / nd),
        3: (2 * psi / nd, 2 * psi / nd, k * psi / nd),
    }
    for stage, (p, g, o) in expected.items():
        st = memory.model_states(_zero_paper_setup(stage), psi, accounting="paper")
        assert (st["params"], st["grads"], st["optimizer"]) == pytest.approx((p, g, o))


def test_zero_7_5b_config_is_the_papers_size():
    s = _zero_paper_setup(0)
    assert n_params(s) == pytest.approx(7.5e9, rel=0.005)


def test_gpt3_175b_training_compute():
    """GPT-3 (Brown et al. 2020, Table D.1): 3.14e23 FLOPs for 300B tokens, counted as 6N per token; PaLM's
    attention term (appendix B) adds ~2.8% on top."""
    s = setup("model=gpt3-175b", "plan.train_tokens=300000000000")
    n = n_params(s)
    assert n == pytest.approx(174.6e9, rel=0.001)  # 175B as published
    t = compute.timing(s, n)
    assert t["flops_per_token_6n"] * 300e9 == pytest.approx(3.14e23, rel=0.005)
    assert t["train_flops"] == pytest.approx(3.14e23 * (1 + 12 * 96 * 12288 * 2048 / (6 * n)), rel=0.005)
    assert t["train_tokens"] == 300e9


def test_megatron_175b_on_1024_a100_takes_about_34_days():
    """Narayanan et al. 2021 (Megatron-LM, section 5.1): 8TP / (nX) with T = 300B tokens, P = 175B, n = 1024 A100s
    at X = 140 TFLOP/s per GPU (achieved, with full activation recomputation) is about 34 days. X is an end-to-end
    rate, so plan without a pipeline bubble or tensor-parallel traffic (tp = pp = 1): plan.mfu is then exactly the
    hardware FLOPs utilisation 140 / 312."""
    s = setup(
        "model=gpt3-175b",
        "hardware=a100-80g-x8",
        "hardware.nodes=128",
        "parallelism=ddp",
        "zero.stage=1",
        "trainer.global_batch_size=1536",
        "trainer.micro_batch_size=1",
        "plan.activation_recompute=full",
        "plan.train_tokens=300000000000",
        "plan.mfu=0.44871794871794873",
    )
    n = n_params(s)
    t = compute.timing(s, n)
    assert t["bound_by"] == "compute" and t["pipeline_bubble"] == 0 and t["tp_comm_time_s"] == 0
    assert t["hfu"] == pytest.approx(140 / 312)
    assert t["hardware_flops_per_token"] == pytest.approx(8 * n + 16 * 96 * 12288 * 2048)
    # Megatron's closed form on the planner's own parameter count:
    assert 8 * 300e9 * n / (1024 * 140e12) / 86400 == pytest.approx(34, abs=0.5)
    # The plan adds the attention FLOPs Megatron's 8TP leaves out (+2.8%): still about 34 days.
    assert 33.5 <= t["train_days"] <= 35.5
    assert t["device_hours"] == pytest.approx(t["train_time_s"] * 1024 / 3600)
    assert t["cost_usd"] == pytest.approx(t["device_hours"] * 4.10)


@pytest.mark.parametrize("model", ["gpt2-124m", "gpt3-175b", "gpt3-6.7b", "zero-7.5b"])
def test_megatron_parameter_formula(model):
    """Narayanan et al. 2021 eq. 2 counts everything but the final LayerNorm (2h)."""
    s = setup(f"model={model}")
    assert n_params(s) - megatron_n_params(s) == pytest.approx(2 * s.n_embd, abs=1)


@pytest.mark.parametrize(
    "overrides",
    [["model=nano"], ["model=tiny", "model.bias=false"], ["model=nano", "model.head_dim=8"]],
)
def test_parameter_count_matches_the_torch_model(overrides):
    """The planner's count is the real model's (tied embeddings once, biases, head_dim decoupled from n_embd)."""
    from conftest import compose

    from bigtrain.model import GPT, gpt_config_from

    cfg = compose(*overrides)
    model = GPT(gpt_config_from(cfg.model))
    s = setup(*overrides)
    assert n_params(s) == model.num_params()
    largest = max(
        sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()
    )  # DeepSpeed's largest_layer_params
    assert largest_module_params(s) == largest


# --- DeepSpeed's own estimators on the same inputs ---------------------------------------------------------------


def _ds_setup(stage: int, offload: str, devices: int, nodes: int):
    return setup(
        "model=gpt2-1.5b",
        "hardware=a100-80g-x8",
        f"hardware.devices={devices}",
        f"hardware.nodes={nodes}",
        "parallelism=ddp",
        f"zero.stage={stage}",
        f"offload={offload}",
        "trainer.global_batch_size=64",
        "trainer.micro_batch_size=1",
    )


def _device_states(s, n):
    st = memory.model_states(s, n)
    return st["params"] + st["grads"] + st["optimizer"] + memory.gather_buffer(s)


@pytest.mark.parametrize(("devices", "nodes"), [(4, 1), (8, 2)])
def test_deepspeed_zero2_estimator(devices, nodes):
    """estimate_zero2_model_states_mem_needs. With CPU offload the GPU side matches exactly (16-bit parameters only)
    and so does the host for up to 4 GPUs per node: 16 bytes/param (fp32 Adam states + fp32 gradients) x 1.5
    (DeepSpeed's additional_buffer_factor). DeepSpeed's max(4 x total_gpus, 16) also covers loading an fp32
    copy of the whole model in every process at start-up, a transient the planner leaves out.
    Without offload DeepSpeed adds a 4-byte fp32 gradient partition to the paper's K = 12 (18 = 2 + 4 + 4 + 8 per
    its source comment): the planner's DeepSpeed accounting matches it exactly, the paper's is 4 Psi / Nd below."""
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    total = devices * nodes
    s = _ds_setup(2, "cpu", devices, nodes)
    n = n_params(s)
    cpu, gpu = estimate_zero2_model_states_mem_needs(n, devices, nodes, cpu_offload=True)
    assert _device_states(s, n) == pytest.approx(gpu)
    host = memory.offloaded(s, n)[0]
    if 4 * total <= 16:
        assert host * 1.5 == pytest.approx(cpu)
    else:
        assert cpu == pytest.approx(n * 4 * total * 1.5) and host == pytest.approx(16 * n / nodes)

    s = _ds_setup(2, "none", devices, nodes)
    _, gpu = estimate_zero2_model_states_mem_needs(n, devices, nodes, cpu_offload=False)
    assert _device_states(s, n) == pytest.approx(gpu, abs=2)
    paper = memory.model_states(s, n, accounting="paper")
    assert gpu - sum(paper.values()) == pytest.approx(4 * n / total, abs=2)


@pytest.mark.parametrize(("devices", "nodes"), [(8, 1), (8, 4)])
def test_deepspeed_zero3_estimator(devices, nodes):
    """estimate_zero3_model_states_mem_needs (zero_init=True). With CPU offload of the optimizer, and of the
    parameters too, GPU and host match exactly (host x 1.5, DeepSpeed's additional_buffer_factor) once the planner's
    whole copies of tensors below stage3_param_persistence_threshold (biases, LayerNorms: ~0.1% here), which the
    estimator leaves out, are set aside; the gather buffer is DeepSpeed's 4 x largest_layer_params. Without
    offload the estimator counts 18 bytes/param over Nd; the planner, like the paper and like the real engine's
    persistent partitions (tests/test_plan_measured.py), 16: exactly 2 Psi / Nd below."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    total = devices * nodes
    s = _ds_setup(3, "cpu", devices, nodes)
    n, largest = n_params(s), largest_module_params(s)
    persistent = 2 * persistent_params(s, s.persistence_threshold)
    assert 0 < persistent < 0.002 * 2 * n
    cpu, gpu, largest_mem = estimate_zero3_model_states_mem_needs(n, largest, devices, nodes, True, False)
    assert memory.gather_buffer(s) == largest_mem
    assert _device_states(s, n) - persistent == pytest.approx(gpu, abs=2)
    assert memory.offloaded(s, n)[0] * 1.5 == pytest.approx(cpu)

    s = _ds_setup(3, "cpu-params", devices, nodes)
    cpu, gpu, _ = estimate_zero3_model_states_mem_needs(n, largest, devices, nodes, True, True)
    assert _device_states(s, n) - persistent == pytest.approx(gpu)
    assert memory.offloaded(s, n)[0] * 1.5 == pytest.approx(cpu)

    s = _ds_setup(3, "none", devices, nodes)
    _, gpu, _ = estimate_zero3_model_states_mem_needs(n, largest, devices, nodes, False, False)
    assert gpu - (_device_states(s, n) - persistent) == pytest.approx(2 * n / total, abs=2)
