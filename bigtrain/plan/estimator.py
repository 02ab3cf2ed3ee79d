"""`plan.accounting=deepspeed-estimator`: DeepSpeed's own model-state estimators, re-stated without torch.

DeepSpeed users size a run with `estimate_zero2_model_states_mem_needs` (deepspeed/runtime/zero/stage_1_and_2.py,
used for stages 1 and 2, which share that implementation) and `estimate_zero3_model_states_mem_needs`
(deepspeed/runtime/zero/stage3.py). `zero2_estimate` and `zero3_estimate` are those functions term for term
(DeepSpeed 0.19; tests/test_plan_estimator.py calls the originals live and holds these to them); the rest maps a
Setup onto their arguments and splits the GPU column into the plan's params / grads / optimizer rows.

What the estimators assume, and so this accounting too: 16-bit mixed-precision Adam whatever the precision; no
tensor or pipeline parallelism (the planner applies them to the N/(tp*pp) model-parallel shard, over dp ranks);
CPU offload only (no NVMe option: an NVMe-offloaded state counts as offloaded on the GPU side and as not offloaded
on the host side); the CPU column is per node and includes the fp32 copy each process holds while the model is
built (`zero_init=False`, or any stage 1-2 run), scaled by `additional_buffer_factor`.
"""

from __future__ import annotations

from bigtrain.plan.params import largest_module_params
from bigtrain.plan.setup import Setup

FORMULA = (
    "DeepSpeed's estimate_zero{2,3}_model_states_mem_needs: zero 1-2 GPU 2P + 18P/Nd (offload: 2P), CPU "
    "P x 4 x gpus/node x f (offload: P x max(4 x gpus, 16) x f); zero 3 GPU 4 x largest + 18P/Nd (offload: + 2P/Nd; "
    "params too: 4 x largest), CPU zero_init ? 4 x largest x gpus/node x f : 4P x gpus/node x f (offload: "
    "16P or 18P per node x f, cold: max(4P x gpus/node, that)); f = additional_buffer_factor"
)


def zero2_estimate(
    total_params: float,
    num_gpus_per_node: int = 1,
    num_nodes: int = 1,
    cpu_offload: bool = True,
    additional_buffer_factor: float = 1.5,
) -> tuple[int, int]:
    """(CPU bytes per node, GPU bytes per device): deepspeed.runtime.zero.stage_1_and_2.
    estimate_zero2_model_states_mem_needs. GPU without offload: 2 bytes of 16-bit parameters plus, over the
    total_gpus partitions, 18 = 2 (16-bit grads) + 4 (fp32 grads) + 4 (fp32 params) + 8 (Adam moments), as its
    source comment itemises; with optimizer offload only the 16-bit parameters stay. CPU: the fp32 model every
    process loads (4 bytes x gpus per node), or with offload the larger of that over all GPUs and the 16 bytes of
    fp32 states; both times DeepSpeed's additional_buffer_factor."""
    total_gpus = num_nodes * num_gpus_per_node
    if cpu_offload:
        gpu_mem = 2 * total_params
        cpu_mem = total_params * max(4 * total_gpus, 16) * additional_buffer_factor
    else:
        gpu_mem = 2 * total_params + int(18 * total_params / total_gpus)
        cpu_mem = total_params * 4 * num_gpus_per_node * additional_buffer_factor
    return int(cpu_mem), int(gpu_mem)


def zero3_estimate(
    total_params: float,
    largest_layer_params: float,
    num_gpus_per_node: int = 1,
    num_nodes: int = 1,
    cpu_offload: bool = True,
    cpu_offload_params: bool = True,
    zero_init: bool = True,
    additional_buffer_factor: float = 1.5,
) -> tuple[int, int, float]:
    """(CPU bytes per node, GPU bytes per device, largest layer bytes): deepspeed.runtime.zero.stage3.
    estimate_zero3_model_states_mem_needs. The GPU always holds the largest layer's gathered 16-bit parameters and
    gradients (4 bytes each); without offload 18 bytes per parameter over the partitions, with optimizer offload the
    2-byte 16-bit parameter partition, with parameter offload nothing more. The CPU holds the node's share
    (1 / num_nodes) of 16 bytes of fp32 states (18 with the parameters), at least the 4-byte fp32 model each process
    builds when the model is not created under zero.Init (zero_init=False); without offload, that fp32 model, or
    under zero.Init only its largest layer."""
    total_gpus = num_nodes * num_gpus_per_node
    gpus_factor = 1 / num_nodes
    largest_layer_memory = 4 * largest_layer_params
    if cpu_offload:
        per_param = 18 if cpu_offload_params else 16
        gpu_mem = largest_layer_memory + (0 if cpu_offload_params else int(2 * total_params / total_gpus))
        if zero_init:
            cpu_mem = total_params * per_param * gpus_factor * additional_buffer_factor
        else:
            cpu_mem = total_params * max(4 * num_gpus_per_node, per_param * gpus_factor) * additional_buffer_factor
    else:
        gpu_mem = largest_layer_memory + int(18 * total_params / total_gpus)
        if zero_init:
            cpu_mem = largest_layer_params * 4 * num_gpus_per_node * additional_buffer_factor
        else:
            cpu_mem = total_params * 4 * num_gpus_per_node * additional_buffer_factor
    return int(cpu_mem), int(gpu_mem), largest_layer_memory


def applies(s: Setup) -> bool:
    """DeepSpeed has estimators for ZeRO engines only (stages 1-3); a layout without ZeRO is counted by the engine."""
    return s.sharded and s.zero >= 1


def estimate(s: Setup, n: int) -> dict[str, float]:
    """DeepSpeed's estimate for this layout: {"gpu": bytes per device, "cpu": bytes per node, "largest_layer":
    bytes of the ZeRO-3 gather (0 at stages 1-2)}. The estimators' arguments from the Setup: total_params = the
    N/(tp*pp) shard, total_gpus = dp ranks partitioning it, num_gpus_per_node = processes per node (DeepSpeed's
    num_nodes is then dp / that, so gpus_factor = processes per node / dp); offload to NVMe counts as offloaded on
    the GPU side only (the estimators know CPU offload alone)."""
    shard = n / (s.tp * s.pp)
    per_node = min(s.devices, s.world)
    # DeepSpeed's (num_gpus_per_node, num_nodes) over the dp ranks holding this shard; with tp = pp = 1 exactly
    # (hardware.devices, hardware.nodes). A float num_nodes keeps total_gpus = dp when tp*pp splits a node.
    nodes = s.dp / per_node if s.dp >= per_node else 1
    gpus = per_node if s.dp >= per_node else s.dp
    f = s.additional_buffer_factor
    if s.zero >= 3:
        largest = largest_module_params(s) / s.tp
        _, gpu, largest_mem = zero3_estimate(
            shard, largest, gpus, nodes, s.offload_optimizer != "none", s.offload_params != "none", s.zero_init, f
        )
        cpu, _, _ = zero3_estimate(
            shard, largest, gpus, nodes, s.offload_optimizer == "cpu", s.offload_params == "cpu", s.zero_init, f
        )
    else:
        _, gpu = zero2_estimate(shard, gpus, nodes, s.offload_optimizer != "none", f)
        cpu, _ = zero2_estimate(shard, gpus, nodes, s.offload_optimizer == "cpu", f)
        largest_mem = 0.0
    return {"gpu": float(gpu), "cpu": float(cpu), "largest_layer": float(largest_mem)}


def estimator_states(s: Setup, n: int, gather: float) -> dict[str, float]:
    """The GPU column as the plan's rows: 16-bit parameters (whole at stages 1-2, the partition at 3; none when
    offloaded), the 16-bit gradient partition (none with optimizer offload), and the rest of DeepSpeed's figure as
    optimizer (fp32 master, moments, fp32 gradients). The ZeRO-3 largest-layer term stays in the buffers row
    (`gather`: memory.gather_buffer, 4 x largest_layer_params in 16-bit training), so params + grads + optimizer +
    gather is the column."""
    est = estimate(s, n)
    shard = n / (s.tp * s.pp)
    off_opt, off_params = s.offload_optimizer != "none", s.offload_params != "none"
    if s.zero >= 3:
        params = 0.0 if off_params and off_opt else 2 * shard / s.dp
    else:
        params = 2 * shard
    grads = 0.0 if off_opt else 2 * shard / s.dp
    optimizer = max(est["gpu"] - gather - params - grads, 0.0)
    return {"params": params, "grads": grads, "optimizer": optimizer}
