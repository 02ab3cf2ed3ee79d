"""Pipeline schedules, activation offload and the host's optimizer step: the terms that bound real runs.

Pipeline bubble (Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU Clusters Using
Megatron-LM", sec. 2.2.1-2.2.2): with p stages and m micro-batches per step, 1F1B idles (p - 1)/m of the ideal
time; the interleaved schedule gives each device v model chunks of n_layer/(p v) layers and idles (p - 1)/(v m), at
v times the point-to-point traffic. Megatron-LM runs it only when m is a multiple of p (config/layout.py).

Activations in flight on the first stage (the fullest): 1F1B keeps p micro-batches of its n_layer/p layers, i.e.
n_layer layers' worth whatever p is; interleaving keeps p (1 + (p - 1)/(p v)) micro-batches' worth (Korthikanti et
al. 2022, "Reducing Activation Recomputation in Large Transformer Models", sec. 4.2.3, for Narayanan et al.'s
interleaved schedule); GPipe (bigtrain's parallelism=pipeline with schedule=gpipe) all m before the first backward,
m/p times 1F1B's. Other strategies planned with pp > 1 are planned as Megatron-LM's 1F1B.

Activation offload (plan.activation_offload): what the layers keep for their backward pass moves to host memory in
the forward pass and back in the backward pass (DeepSpeed's activation_checkpointing.cpu_checkpointing for the
checkpointed layer inputs; torch.autograd.graph.save_on_cpu for everything without recomputation). The device keeps
the working set plus two layers' kept activations (the one in use and the next, prefetched); every micro-batch
moves its stage's kept bytes down and back up over PCIe (overlapped with compute, like the other offload traffic).

CPU Adam (optimizer offload): DeepSpeed steps the fp32 partition on the host after the backward pass and copies the
updated 16-bit parameters back before the next forward pass. Its ZeRO-Offload engine has no delayed parameter
update (the ZeRO-Offload paper's one-step delayed update, Ren et al. 2021, is not in DeepSpeed's config), so the step is serial: its time is
ADDED to the step, not overlapped. Its rate is DeepSpeedCPUAdam's, per core (hardware.cpu_adam_elements_per_s_per_core;
measured on this project's 2-core VM with 20M fp32 elements, one thread: 0.42e9 median, 0.52e9 best elements/s,
against 0.045e9 for torch.optim.AdamW, foreach=False), times the cores each rank gets, and at most the host's memory
bandwidth over the 30 bytes each element moves (fp32 parameter, gradient, two moments read; parameter and moments
written; the 16-bit copy written: DeepSpeed's cpu_adam Step). With NVMe offload the sub-groups' states are read and
written in the same step (DeepSpeed's pipeline_read/pipeline_write are off by default, so that is serial too).
"""

from __future__ import annotations

from bigtrain.plan import bandwidth
from bigtrain.plan.setup import Setup

# Bytes of host memory traffic per parameter of one CPU Adam step (see the module docstring).
CPU_ADAM_BYTES_PER_ELEMENT = 30

FORMULAS = {
    "pipeline_bubble": "Narayanan 2021 sec. 2.2: 1F1B (pp-1)/m; interleaved with v = virtual_stages (pp-1)/(v m)",
    "pipeline_in_flight": "first stage's kept activations, in n_layer layers of one micro-batch: 1F1B 1; interleaved "
    "1 + (pp-1)/(pp v) (Korthikanti 2022 sec. 4.2.3); GPipe (parallelism=pipeline) m/pp",
    "activation_offload": "plan.activation_offload: kept activations to the host; device keeps 2 layers' worth of "
    "one micro-batch; PCIe 2 x kept bytes of one micro-batch / pp x m per step (overlapped)",
    "cpu_adam_time_s": "optimizer offload: partition N/(tp pp dp) / min(cpu_adam_elements_per_s_per_core x host_cores"
    " / ranks, host_memory_bandwidth / ranks / 30 B); DeepSpeedCPUAdam rate measured (schedule.py); serial, added",
    "optimizer_step_time_s": "cpu_adam_time + updated 16-bit params up over PCIe + NVMe states read and written "
    "(offload=nvme): all after the backward pass, added to the step (DeepSpeed has no delayed parameter update)",
}


def pipeline_bubble(s: Setup) -> float:
    """Idle fraction of the schedule relative to useful time: (p - 1)/(v m), v = 1 without interleaving."""
    if s.pp <= 1:
        return 0.0
    return (s.pp - 1) / (s.virtual_stages * s.accumulate)


def in_flight_factor(s: Setup) -> float:
    """The first stage's kept activations relative to 1F1B's n_layer layers of one micro-batch."""
    if s.pp <= 1:
        return 1.0
    if s.layout.pipelined and s.layout.schedule == "gpipe":
        return s.accumulate / s.pp  # every micro-batch's forward before the first backward
    if s.virtual_stages > 1:
        return 1 + (s.pp - 1) / (s.pp * s.virtual_stages)
    return 1.0


def offload_resident(s: Setup, kept_one_microbatch: float) -> float:
    """Device bytes of kept activations left under activation offload: two layers' worth of one micro-batch (the
    layer in use and the next one, prefetched); `kept_one_microbatch` is n_layer layers' worth."""
    return 2 * kept_one_microbatch / s.n_layer


def activation_offload_bytes(s: Setup, kept_one_microbatch: float) -> float:
    """PCIe bytes per device per step: each micro-batch's kept activations of this stage's n_layer/pp layers go
    down in the forward pass and back in the backward pass (0 without activation offload)."""
    if not s.activation_offload:
        return 0.0
    return 2 * kept_one_microbatch / s.pp * s.accumulate


def cpu_adam_rate(s: Setup) -> float:
    """fp32 elements per second one rank's CPU Adam steps."""
    ranks = bandwidth.ranks_per_node(s)
    rate = s.cpu_adam_rate_per_core * s.host_cores / ranks
    if s.host_memory_bandwidth > 0:
        rate = min(rate, s.host_memory_bandwidth / ranks / CPU_ADAM_BYTES_PER_ELEMENT)
    return rate


def cpu_adam_time(s: Setup, n: int) -> float:
    """Seconds of the host's Adam step on this rank's partition (0 without optimizer offload)."""
    if s.offload_optimizer == "none":
        return 0.0
    return n / (s.tp * s.pp * s.dp) / cpu_adam_rate(s)


def optimizer_step_time(s: Setup, n: int, param_upload_bytes: float, nvme_state_bytes: float) -> float:
    """The serial optimizer phase of an offloaded step: CPU Adam, the updated parameters' copy to the device, and
    (offload=nvme) the states' NVMe reads and writes per node."""
    if s.offload_optimizer == "none":
        return 0.0
    upload = param_upload_bytes / bandwidth.pcie_per_device(s) if param_upload_bytes else 0.0
    nvme = nvme_state_bytes / s.nvme_bandwidth if nvme_state_bytes else 0.0
    return cpu_adam_time(s, n) + upload + nvme
