"""FLOPs, step time, communication, offload traffic, training time and cost.

Model FLOPs per token follow PaLM (Chowdhery et al. 2022, appendix B): 6N for the weight matrix multiplies of the
forward and backward passes plus 12 * L * H * Q * T for attention (L layers, H heads, Q head size, T sequence).
N counts the matrices as they are: SwiGLU's three, grouped-query attention's narrower k and v (n_kv_head heads);
an untied input token table is a lookup and is left out (`params.matmul_params`). The attention term counts query
heads: each of the H heads scores T keys and mixes T values whether or not it shares them with its group.
Hardware FLOPs add the recomputed forward pass: all of it with full recomputation (8N, as in Narayanan et al.
2021's 96 B s l h^2 per iteration), the attention scores with selective recomputation (Korthikanti et al. 2022).
Time: with `plan.achieved_tflops` or `plan.from_run` (a measured end-to-end rate of hardware FLOPs per device, like
Megatron-LM's X), the devices execute the hardware FLOPs at that rate, nothing added; otherwise at `plan.mfu` of the
datasheet peak (so `plan.mfu` is the MFU reached
without recomputation; recomputed FLOPs lower the effective MFU), stretched by the pipeline bubble (p - 1)/(v m)
(Narayanan et al. 2021, section 2.2) and followed by the tensor-parallel all-reduces / reduce-scatters of each
layer (Korthikanti et al. 2022, section 4.2). Data-parallel communication and offload traffic are timed at the
achieved, shared bandwidths (bandwidth.py) and assumed to overlap with compute: a step takes the longest of the
three, plus, under optimizer offload, the serial host optimizer step (schedule.py: CPU Adam, the parameters' copy
back, NVMe state swaps), which DeepSpeed does not overlap with the forward and backward passes.
"""

from __future__ import annotations

from bigtrain.plan import bandwidth, memory, schedule
from bigtrain.plan.moe import all_to_all_bytes_per_step, expert_params
from bigtrain.plan.params import matmul_params
from bigtrain.plan.setup import Setup

FORMULAS = {
    "flops_per_token": "PaLM app. B: 6N + 12 L H Q T (model FLOPs, forward + backward) [+ distill: teacher forward "
    "2N_t + 4 L_t H_t Q_t T]",
    "hardware_flops_per_token": "+ recompute: full 8N + 16 LHQT; selective 6N + 16 LHQT (Korthikanti 2022)",
    "step_time_s": "max(compute, comm, offload) + optimizer_step (serial under optimizer offload); compute = "
    "tokens x hw flops/token / (world x peak x mfu) x (1 + bubble) + tp comm + ep all_to_all",
    "comm_bytes_per_step": "ZeRO sec. 7: 2 x grad bytes x N/(tp*pp) per rank at zero 0-2, 3x at zero 3 (ring, x "
    "(dp-1)/dp); ep: experts/ep over dp/ep ranks",
    "achieved_tflops": "plan.achieved_tflops / plan.from_run: compute = tokens x hw flops/token / (world x achieved "
    "hardware FLOP/s per device), bubble and tp comm inside the measured rate (Megatron-LM's X, Narayanan 2021 sec. 5.1)",
    "ep_comm_bytes_per_step": "GShard all_to_all: 4 (dispatch + combine, forward + backward) x MoE layers x "
    "micro-batches x capacity_factor x top_k x b s h x act bytes x (ep-1)/ep per rank; not overlapped (in compute)",
    "offload_bytes_per_step": "PCIe per device: grads down + params up (optimizer offload), 2 param fetches per "
    "micro-batch (param offload), activations down and up (activation offload); at the shared PCIe bandwidth",
    "train_time_s": "train_tokens / tokens_per_s",
    "cost_usd": "world x train_time / 3600 x price_per_device_hour",
}


def attention_flops_per_token(s: Setup) -> float:
    return 12 * s.n_layer * s.n_head * s.head_dim * s.block_size


def teacher_flops_per_token(s: Setup) -> float:
    """task=distill: the frozen teacher's forward pass, a third of PaLM's count (2N + 4 L H Q T); 0 without one.
    The teacher's FLOPs are work the run needs, so they count in model FLOPs (and MFU) too."""
    if s.teacher is None:
        return 0.0
    from bigtrain.plan.params import n_params

    t = s.teacher  # its own block_size sizes its position table; it attends over the student's s.block_size
    return 2 * n_params(t) + 4 * t.n_layer * t.n_head * t.head_dim * s.block_size


def flops_per_token(s: Setup, n: int) -> float:
    """Model FLOPs per trained token (PaLM appendix B), plus a distillation teacher's forward."""
    return 6 * matmul_params(s, n) + attention_flops_per_token(s) + teacher_flops_per_token(s)


def hardware_flops_per_token(s: Setup, n: int) -> float:
    """FLOPs the devices execute per token, recomputation included."""
    attn, teacher = attention_flops_per_token(s), teacher_flops_per_token(s)
    n = matmul_params(s, n)
    if s.recompute == "full":
        return 8 * n + attn * 4 / 3 + teacher
    if s.recompute == "selective":
        return 6 * n + attn * 4 / 3 + teacher
    return 6 * n + attn + teacher


def comm_bytes_per_step(s: Setup, n: int) -> float:
    """Bytes each rank sends per optimizer step for data parallelism (ZeRO paper, section 7): an all-reduce of the
    gradients moves 2 x their size (reduce-scatter + all-gather); ZeRO-1/2 the same, ZeRO-3 3x (parameters are
    all-gathered in the forward and again in the backward pass). Ring algorithms send (dp-1)/dp of that."""
    if s.dp <= 1:
        return 0.0
    grad_bytes = 4 if s.precision in ("32", "32-true") else 8 if s.precision.startswith("64") else 2
    factor = (3 if s.zero >= 3 else 2) * grad_bytes / (s.tp * s.pp)
    # Expert parallelism: each rank reduces only its 1/ep of the experts, over the dp / ep ranks that share them.
    experts = expert_params(s) if s.layout.ep > 1 and s.n_experts else 0
    edp = s.layout.edp
    return factor * ((n - experts) * (s.dp - 1) / s.dp + experts / s.layout.ep * (edp - 1) / edp)


def comm_bandwidth(s: Setup) -> float:
    """Data-parallel groups span nodes once tp x pp x dp ranks exceed one node (achieved, not datasheet)."""
    return bandwidth.inter_node(s) if s.nodes > 1 and s.world > s.devices else bandwidth.intra_node(s)


def offload_bytes_per_step(s: Setup, n: int) -> tuple[float, float]:
    """(PCIe bytes per device, NVMe bytes per node) moved per optimizer step by offloading."""
    partition = n / (s.tp * s.pp * s.dp)
    pb, gb, _ = memory.state_bytes(s)
    pcie = nvme = 0.0
    if s.offload_optimizer != "none":
        pcie += (gb + pb) * partition  # (16-bit) gradients to the host, updated (16-bit) parameters back
        if s.offload_optimizer == "nvme":
            nvme += 2 * 16 * partition * min(s.devices, s.world)  # fp32 states read and written back
    if s.offload_params != "none":
        pcie += 2 * pb * partition * s.accumulate  # the partition is fetched for forward and for backward
        if s.offload_params == "nvme":
            nvme += 2 * pb * partition * s.accumulate * min(s.devices, s.world)
    return pcie, nvme


def pipeline_bubble(s: Setup) -> float:
    """Idle fraction of the schedule relative to useful time: (p - 1)/(v m) (schedule.py)."""
    return schedule.pipeline_bubble(s)


def tp_comm_bytes_per_step(s: Setup) -> float:
    """Each layer all-reduces (or, with sequence parallelism, reduce-scatters + all-gathers: the same volume) its
    s x b x h output twice forward and twice backward; a ring moves 2 (t - 1) / t of it per device."""
    if s.tp <= 1:
        return 0.0
    act = s.block_size * s.micro_batch_size * s.n_embd * 2  # 16-bit activations
    return 4 * 2 * (s.tp - 1) / s.tp * act * (s.n_layer // s.pp) * s.accumulate


def timing(s: Setup, n: int) -> dict[str, float]:
    tokens_per_step = s.global_batch_size * s.block_size
    model_flops = flops_per_token(s, n)
    hw_flops = hardware_flops_per_token(s, n)
    bubble = pipeline_bubble(s)
    tp_bytes = tp_comm_bytes_per_step(s)
    tp_s = tp_bytes / bandwidth.intra_node(s) if tp_bytes else 0.0
    ep_bytes = all_to_all_bytes_per_step(s, 4 if s.precision in ("32", "32-true") else 2)
    # ep groups are consecutive ranks: inside a node while ep <= devices per node
    ep_bandwidth = bandwidth.intra_node(s) if s.layout.ep <= s.devices else bandwidth.inter_node(s)
    ep_s = ep_bytes / ep_bandwidth if ep_bytes else 0.0
    if s.achieved_flops > 0:
        # a measured end-to-end rate already holds the bubble and the tensor-parallel traffic
        compute_s = tokens_per_step * hw_flops / (s.world * s.achieved_flops)
    elif s.peak_flops > 0:
        compute_s = tokens_per_step * hw_flops / (s.world * s.peak_flops * s.mfu) * (1 + bubble) + tp_s + ep_s
    else:
        compute_s = float("inf")
    comm_bytes = comm_bytes_per_step(s, n)
    comm_s = comm_bytes / comm_bandwidth(s) if comm_bytes else 0.0
    pcie, nvme = offload_bytes_per_step(s, n)
    # Serial after the backward pass (schedule.py): the updated 16-bit parameters' copy up and the NVMe states'
    # reads and writes of an offloaded optimizer; the rest of the offload traffic overlaps with compute.
    upload = memory.state_bytes(s)[0] * n / (s.tp * s.pp * s.dp) if s.offload_optimizer != "none" else 0.0
    nvme_states = (
        2 * 16 * n / (s.tp * s.pp * s.dp) * bandwidth.ranks_per_node(s) if s.offload_optimizer == "nvme" else 0.0
    )
    kept, _ = memory.activation_parts(s)
    act_bytes = schedule.activation_offload_bytes(s, kept)
    pcie += act_bytes
    pcie_bw = bandwidth.pcie_per_device(s)
    overlapped_pcie, overlapped_nvme = pcie - upload, nvme - nvme_states
    offload_s = max(
        overlapped_pcie / pcie_bw if overlapped_pcie > 0 else 0.0,
        overlapped_nvme / s.nvme_bandwidth if overlapped_nvme > 0 else 0.0,
    )
    cpu_adam_s = schedule.cpu_adam_time(s, n)
    optimizer_s = schedule.optimizer_step_time(s, n, upload, nvme_states)
    step_s = max(compute_s, comm_s, offload_s) + optimizer_s
    tokens_per_s = tokens_per_step / step_s
    train_time_s = s.train_tokens / tokens_per_s
    device_hours = train_time_s * s.world / 3600
    achieved = tokens_per_s / (s.world * s.peak_flops) if s.peak_flops > 0 else 0.0  # tokens per peak FLOP
    return {
        "flops_per_token": model_flops,
        "flops_per_token_6n": 6.0 * matmul_params(s, n),
        "attention_flops_per_token": attention_flops_per_token(s),
        "teacher_flops_per_token": teacher_flops_per_token(s),
        "hardware_flops_per_token": hw_flops,
        "tokens_per_step": tokens_per_step,
        "pipeline_bubble": bubble,
        "tp_comm_bytes_per_step": tp_bytes,
        "tp_comm_time_s": tp_s,
        "ep_comm_bytes_per_step": ep_bytes,
        "ep_comm_time_s": ep_s,
        "compute_time_s": compute_s,
        "comm_bytes_per_step": comm_bytes,
        "comm_time_s": comm_s,
        "offload_bytes_per_step": pcie,
        "nvme_bytes_per_step": nvme,
        "offload_time_s": offload_s,
        "activation_offload_bytes_per_step": act_bytes,
        "cpu_adam_time_s": cpu_adam_s,
        "optimizer_step_time_s": optimizer_s,
        "step_time_s": step_s,
        "bound_by": _bound_by(compute_s, comm_s, offload_s, optimizer_s),
        "bandwidth_bytes_per_s": bandwidth.bandwidths(s),
        "tokens_per_s": tokens_per_s,
        "rate_source": s.rate_source,
        "achieved_tflops_per_device": s.achieved_flops / 1e12 if s.achieved_flops else None,
        "mfu": achieved * model_flops,
        "hfu": achieved * hw_flops,
        "train_tokens": s.train_tokens,
        "train_flops": s.train_tokens * model_flops,
        "train_time_s": train_time_s,
        "train_days": train_time_s / 86400,
        "device_hours": device_hours,
        "cost_usd": device_hours * s.price_per_device_hour,
    }


def _bound_by(compute_s: float, comm_s: float, offload_s: float, optimizer_s: float) -> str:
    """The largest part of the step: the overlapped compute / comm / offload, or the serial optimizer step."""
    parts = {"compute": compute_s, "comm": comm_s, "offload": offload_s, "optimizer_step": optimizer_s}
    return max(parts, key=parts.__getitem__)
