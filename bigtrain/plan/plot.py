"""plan.png: memory per device by term for every zero stage x offload, the rest of the layout as configured."""

from __future__ import annotations

from pathlib import Path

from bigtrain.plan import memory
from bigtrain.plan.params import n_params
from bigtrain.plan.planner import MEMORY_TERMS
from bigtrain.plan.search import SHARDED, ZERO_OFFLOADS
from bigtrain.plan.setup import Setup

COLORS = {
    "params": "#4C72B0",
    "grads": "#DD8452",
    "optimizer": "#55A868",
    "activations": "#C44E52",
    "buffers": "#8172B3",
}


def plot_memory(s: Setup, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = n_params(s)
    labels, stacks, off = [], [], []
    for zero, offload, opt_dev, param_dev in ZERO_OFFLOADS:
        if "nvme" in (opt_dev, param_dev) and s.nvme_capacity_bytes <= 0:
            continue
        parallelism = s.parallelism if zero == 0 else SHARDED
        v = s.vary(zero=zero, offload_optimizer=opt_dev, offload_params=param_dev, parallelism=parallelism)
        mem = memory.memory(v, n)
        labels.append(f"zero {zero}\n{offload}")
        stacks.append([mem[t] / 1e9 for t in MEMORY_TERMS])
        off.append(("NVMe" if mem["nvme"] else "host", (mem["host"] + mem["nvme"]) / 1e9))

    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(labels)), 5), dpi=110)
    bottoms = [0.0] * len(labels)
    for i, term in enumerate(MEMORY_TERMS):
        values = [row[i] for row in stacks]
        ax.bar(labels, values, bottom=bottoms, label=term, color=COLORS[term])
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    usable = memory.usable_device_bytes(s) / 1e9
    ax.axhline(usable, color="black", linestyle="--", linewidth=1)
    ax.text(-0.4, usable, f" usable {usable:,.1f} GB", va="bottom", fontsize=8)
    for x, (top, (where, moved)) in enumerate(zip(bottoms, off, strict=True)):
        note = f"{top:,.1f}" + (f"\n{where} {moved:,.0f}/node" if moved else "")
        ax.text(x, top, note, ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("GB per device (1e9 bytes); off-device GB per node above the bars")
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0, max(max(bottoms), usable) * 1.25)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
