"""The bandwidth each kind of traffic really gets: datasheet links, derated and shared as a node runs them.

- Collectives (data- and tensor-parallel) reach a fraction of the datasheet NVLink / InfiniBand figure: nccl-tests
  report it as bus bandwidth (NVIDIA/nccl-tests, doc/PERFORMANCE.md), which is what the comm terms of
  bigtrain/plan/compute.py divide by. `hardware.intra_node_efficiency` / `inter_node_efficiency` hold that fraction.
- Host <-> device traffic (offload) crosses PCIe. Each device has its own link (`host_device_bandwidth_gbps`), but a
  node's devices reach the CPU sockets through a few shared PCIe switches (a DGX-2's 16 GPUs behind 4 x16 uplinks, a
  DGX A100's 8 behind 4). Offload traffic is synchronous: every rank moves its partition in the same phase of the
  step, so each rank gets at most `pcie_node_bandwidth_gbps` / (ranks on the node).
- NVMe: one array per node (`nvme_bandwidth_gbps`, the drives together), shared by the node's ranks; the planner
  already counts NVMe bytes per node.
"""

from __future__ import annotations

from bigtrain.plan.setup import Setup

FORMULAS = {
    "intra_node_bandwidth": "hardware.intra_node_bandwidth_gbps x intra_node_efficiency (achieved bus bandwidth / "
    "datasheet, nccl-tests' busbw)",
    "inter_node_bandwidth": "hardware.inter_node_bandwidth_gbps x inter_node_efficiency",
    "pcie_bandwidth_per_device": "min(host_device_bandwidth_gbps, pcie_node_bandwidth_gbps / ranks per node): the "
    "node's shared PCIe uplinks divide among the ranks offloading at once",
    "nvme_bandwidth_per_node": "nvme_bandwidth_gbps: the node's NVMe array, shared by its ranks",
}


def ranks_per_node(s: Setup) -> int:
    return max(1, min(s.devices, s.world))


def intra_node(s: Setup) -> float:
    """Achieved per-device bandwidth of collectives inside a node, bytes/s."""
    return s.intra_node_bandwidth * s.intra_node_efficiency


def inter_node(s: Setup) -> float:
    """Achieved per-device bandwidth of collectives between nodes, bytes/s."""
    return s.inter_node_bandwidth * s.inter_node_efficiency


def pcie_per_device(s: Setup) -> float:
    """Host <-> device bytes/s one rank gets while every rank of its node moves data at once."""
    if s.pcie_node_bandwidth > 0:
        return min(s.host_device_bandwidth, s.pcie_node_bandwidth / ranks_per_node(s))
    return s.host_device_bandwidth


def bandwidths(s: Setup) -> dict[str, float]:
    """The effective bandwidths of this plan (bytes/s), for its JSON and table."""
    return {
        "intra_node_bandwidth": intra_node(s),
        "inter_node_bandwidth": inter_node(s),
        "pcie_bandwidth_per_device": pcie_per_device(s),
        "nvme_bandwidth_per_node": s.nvme_bandwidth,
    }
