"""Schedules and bandwidth that bound real runs (bigtrain/plan/schedule.py, bandwidth.py), each term against a hand
computation from its published formula: interleaved 1F1B's bubble and in-flight activations (Narayanan et al. 2021;
Korthikanti et al. 2022), GPipe's in-flight activations, activation offload, the node's shared PCIe, collectives'
achieved fraction and the serial CPU Adam step of optimizer offload."""

from __future__ import annotations

import pytest
from conftest import compose
from plan_helpers import setup

from bigtrain.config.validate import validate
from bigtrain.errors import ConfigError
from bigtrain.plan import bandwidth, compute, memory, plan, schedule
from bigtrain.plan.params import n_params

# GPT-2 124M (12 layers) on 8 A100s as 4 pipeline stages x dp 2 with 8 micro-batches per step, planned like
# Megatron-LM (1F1B) under DeepSpeed ZeRO-1; bf16 activations, so Korthikanti's 2-byte count holds as is.
PIPE = (
    "model=gpt2-124m",
    "hardware=a100-80g-x8",
    "parallelism=deepspeed",
    "zero=1",
    "parallelism.pp=4",
    "trainer.global_batch_size=64",
    "trainer.micro_batch_size=4",
)


def korthikanti_kept(s) -> float:
    """Korthikanti et al. 2022 eq. 1 for GPT (no tp, no recomputation): L x s b h (34 + 5 a s / h) bytes."""
    sq, b, h, a, L = s.block_size, s.micro_batch_size, s.n_embd, s.n_head, s.n_layer
    return L * sq * b * h * (34 + 5 * a * sq / h)


def test_interleaved_bubble_is_the_1f1b_bubble_over_v():
    """Narayanan et al. 2021 sec. 2.2.2: (p - 1)/m for 1F1B, (p - 1)/(v m) with v model chunks per device."""
    plain = setup(*PIPE)
    assert (plain.pp, plain.accumulate) == (4, 8)
    assert compute.timing(plain, n_params(plain))["pipeline_bubble"] == pytest.approx(3 / 8)
    for v in (2, 3):
        s = setup(*PIPE, f"parallelism.virtual_stages={v}")
        assert s.virtual_stages == v
        assert schedule.pipeline_bubble(s) == pytest.approx(3 / (v * 8))
    # the bubble stretches compute time by (1 + bubble) when planned at plan.mfu
    t1 = compute.timing(plain, n_params(plain))
    t3 = compute.timing(setup(*PIPE, "parallelism.virtual_stages=3"), n_params(plain))
    assert t3["compute_time_s"] / t1["compute_time_s"] == pytest.approx((1 + 3 / 24) / (1 + 3 / 8))


def test_interleaved_first_stage_holds_1_plus_p_minus_1_over_pv_more_activations():
    """Korthikanti et al. 2022 sec. 4.2.3: the interleaved schedule's first stage keeps p (1 + (p-1)/(p v))
    micro-batches of its L/p layers, i.e. (1 + (p-1)/(p v)) x 1F1B's L layers' worth."""
    plain = setup(*PIPE)
    kept, working = memory.activation_parts(plain)
    assert kept == pytest.approx(korthikanti_kept(plain))
    assert memory.activations(plain) == pytest.approx(kept + working)
    s = setup(*PIPE, "parallelism.virtual_stages=3")
    assert schedule.in_flight_factor(s) == pytest.approx(1 + 3 / 12)
    assert memory.activations(s) - memory.activations(plain) == pytest.approx(korthikanti_kept(plain) * 3 / 12)


def test_gpipe_keeps_every_micro_batch_in_flight():
    """bigtrain's parallelism=pipeline with schedule=gpipe runs all m forwards before the first backward: m/p times
    1F1B's L layers' worth; schedule=1f1b keeps 1F1B's."""
    base = ("model=nano", "parallelism=pipeline", "hardware.devices=2", "trainer.global_batch_size=16")
    gpipe = setup(*base, "trainer.micro_batch_size=2", "parallelism.schedule=gpipe")
    one_f_one_b = setup(*base, "trainer.micro_batch_size=2", "parallelism.schedule=1f1b")
    assert gpipe.accumulate == 8 and gpipe.pp == 2
    assert schedule.in_flight_factor(gpipe) == 4 and schedule.in_flight_factor(one_f_one_b) == 1
    kept, working = memory.activation_parts(gpipe)
    assert memory.activations(gpipe) == pytest.approx(4 * kept + working)


def test_activation_offload_moves_kept_activations_to_the_host():
    """plan.activation_offload: the device keeps two layers' worth (in use + prefetched), the host holds what the
    device would have kept in flight (per rank, x ranks per node), PCIe carries each micro-batch's stage share down
    and back: 2 x kept / p x m bytes per device per step."""
    s = setup(*PIPE, "parallelism.virtual_stages=3", "plan.activation_offload=true")
    n = n_params(s)
    kept, working = memory.activation_parts(s)
    assert memory.activations(s) == pytest.approx(2 * kept / 12 + working)
    host_without = memory.memory(s.vary(activation_offload=False), n)["host"]
    assert memory.memory(s, n)["host"] - host_without == pytest.approx(kept * (1 + 3 / 12) * 8)
    t = compute.timing(s, n)
    assert t["activation_offload_bytes_per_step"] == pytest.approx(2 * kept / 4 * 8)
    # overlapped with compute, at the PCIe bandwidth one of 8 GPUs gets: DGX A100's 4 x 25 GB/s uplinks shared by 8
    assert t["offload_time_s"] == pytest.approx(2 * kept / 4 * 8 / 12.5e9)
    off = compute.timing(s.vary(activation_offload=False), n)
    assert t["step_time_s"] == pytest.approx(max(off["step_time_s"], t["offload_time_s"]))


def test_shared_pcie_divides_among_the_ranks_of_a_node():
    """A DGX-2's 16 GPUs share 48 GB/s of PCIe uplinks (hardware/v100-32g-x16.yaml): 3 GB/s each when all 16
    offload, each GPU's own 12 GB/s link when only 2 do; hardware without a shared cap gets its per-device link."""
    dgx2 = ("hardware=v100-32g-x16", "parallelism=deepspeed", "zero=3", "offload=cpu", "model=gpt2-124m")
    assert bandwidth.pcie_per_device(setup(*dgx2)) == pytest.approx(3e9)
    assert bandwidth.pcie_per_device(setup(*dgx2, "hardware.devices=2")) == pytest.approx(12e9)
    h100 = setup("hardware=h100-80g-x8", "parallelism=ddp")
    assert h100.pcie_node_bandwidth == 0 and bandwidth.pcie_per_device(h100) == pytest.approx(50e9)


def test_collectives_run_at_the_achieved_fraction_of_the_datasheet():
    """Data-parallel all-reduce time = bytes / (datasheet bandwidth x efficiency): inside a DGX A100 at 0.8 x 300
    GB/s, across nodes at 0.9 x 25 GB/s; the tensor-parallel traffic likewise."""
    ddp = setup("model=gpt2-124m", "hardware=a100-80g-x8", "parallelism=ddp", "trainer.global_batch_size=64")
    n = n_params(ddp)
    t = compute.timing(ddp, n)
    assert t["comm_bytes_per_step"] == pytest.approx(2 * 2 * n * 7 / 8)  # bf16 grads, ring all-reduce
    assert t["comm_time_s"] == pytest.approx(t["comm_bytes_per_step"] / (0.8 * 300e9))
    two = ddp.vary(nodes=2)
    assert compute.timing(two, n)["comm_time_s"] == pytest.approx(compute.comm_bytes_per_step(two, n) / (0.9 * 25e9))
    tp = setup("model=gpt2-124m", "hardware=a100-80g-x8", "parallelism=tp", "parallelism.tp=8")
    tt = compute.timing(tp, n_params(tp))
    assert tt["tp_comm_time_s"] == pytest.approx(tt["tp_comm_bytes_per_step"] / 240e9)


def test_cpu_adam_step_is_added_to_an_offloaded_step():
    """ZeRO-3 with CPU offload on a DGX-2 (recipe dgx2-largest-zero3-cpu): each of 16 ranks steps N/16 fp32
    elements on the host at min(4e8 x 48 cores / 16, 256 GB/s / 16 / 30 B) = 0.533e9 elements/s (memory-bound),
    then copies its 2-byte parameters up over its 3 GB/s PCIe share; both serial after the backward pass."""
    s = setup("recipe=dgx2-largest-zero3-cpu")
    n = n_params(s)
    partition = n / 16
    rate = min(4e8 * 48 / 16, 256e9 / 16 / 30)
    assert schedule.cpu_adam_rate(s) == pytest.approx(rate)
    t = compute.timing(s, n)
    assert t["cpu_adam_time_s"] == pytest.approx(partition / rate)
    assert t["optimizer_step_time_s"] == pytest.approx(partition / rate + 2 * partition / 3e9)
    assert t["step_time_s"] == pytest.approx(
        max(t["compute_time_s"], t["comm_time_s"], t["offload_time_s"]) + t["optimizer_step_time_s"]
    )
    # a host without a memory-bandwidth cap: cores x the per-core rate
    assert schedule.cpu_adam_rate(s.vary(host_memory_bandwidth=0.0)) == pytest.approx(4e8 * 48 / 16)
    # no optimizer offload: no serial optimizer phase
    assert compute.timing(s.vary(offload_optimizer="none", offload_params="none"), n)["optimizer_step_time_s"] == 0


def test_nvme_optimizer_states_are_read_and_written_in_the_serial_step():
    """offload=nvme: the fp32 states (16 bytes/param of the partition, read and written) of every rank of the node
    cross the node's NVMe array (24 GB/s) inside the optimizer step (DeepSpeed's pipeline_read/write are off)."""
    s = setup("recipe=dgx2-largest-zero3-nvme")
    n = n_params(s)
    partition = n / 16
    t = compute.timing(s, n)
    nvme_s = 2 * 16 * partition * 16 / 24e9
    assert t["optimizer_step_time_s"] == pytest.approx(t["cpu_adam_time_s"] + 2 * partition / 3e9 + nvme_s)


def test_the_plan_shows_every_new_term_with_its_formula():
    p = plan(compose("task=plan", *PIPE, "parallelism.virtual_stages=3", "plan.activation_offload=true"))
    for key in (
        "pipeline_bubble",
        "pipeline_in_flight",
        "activation_offload",
        "cpu_adam_time_s",
        "optimizer_step_time_s",
        "pcie_bandwidth_per_device",
        "intra_node_bandwidth",
    ):
        assert p["formulas"][key]
    assert p["layout"]["virtual_stages"] == 3
    assert p["bandwidth_bytes_per_s"]["pcie_bandwidth_per_device"] == pytest.approx(12.5e9)
    from bigtrain.plan.report import table

    text = table(p, "t")
    assert "bubble          12.50% (virtual_stages=3)" in text and "act. offload" in text


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            ("parallelism.virtual_stages=2",),
            "parallelism.virtual_stages=2 interleaves pipeline stages but parallelism.pp=1",
        ),
        (
            ("parallelism.pp=4", "parallelism.virtual_stages=2"),
            "do not divide model.n_layer=12 into equal chunks; valid virtual_stages for pp=4: 1, 3",
        ),
        (
            (
                "parallelism.pp=4",
                "parallelism.virtual_stages=3",
                "trainer.global_batch_size=24",
                "trainer.micro_batch_size=4",
            ),
            "needs the micro-batches per step to be a multiple of pp=4, but trainer.global_batch_size=24 / (micro_batch_size=4 x dp=2) = 3",
        ),
    ],
)
def test_virtual_stages_rules(overrides, expected):
    cfg = compose("task=plan", "model=gpt2-124m", "hardware=a100-80g-x8", "parallelism=deepspeed", "zero=1", *overrides)
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        validate(cfg, planning=True)


def test_a_launch_with_virtual_stages_is_refused():
    """bigtrain's own pipeline runs one stage per rank: interleaving is planned, not run."""
    cfg = compose(
        "model=nano",
        "parallelism=pipeline",
        "hardware.devices=2",
        "parallelism.schedule=1f1b",
        "model.n_layer=4",
        "parallelism.virtual_stages=2",
        "trainer.global_batch_size=16",
        "trainer.micro_batch_size=4",
    )
    validate(cfg, planning=True)
    with pytest.raises(ConfigError, match="the interleaved schedule is planned, not run"):
        validate(cfg)


def test_deepest_model_that_fits_keeps_equal_model_chunks():
    """max_n_layer_that_fits counts only depths every one of the pp x virtual_stages chunks gets equally."""
    from bigtrain.plan import max_n_layer_that_fits

    s = setup(*PIPE, "parallelism.virtual_stages=3")
    deepest = max_n_layer_that_fits(s)
    assert deepest > 0 and deepest % 12 == 0


def test_search_plans_plain_1f1b_whatever_the_config_interleaves():
    """The search varies pp, so a config's virtual_stages (valid for its own pp) is not carried into its layouts."""
    from bigtrain.plan import search

    found, tried = search(setup(*PIPE, "parallelism.virtual_stages=3"), max_nodes=1)
    assert tried and found and {c.setup.virtual_stages for c in found} == {1}
