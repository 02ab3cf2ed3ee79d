"""The sweep report's load-balance plot, when mixture-of-experts runs are among the points: each point's mean
fraction of routed assignments per expert (summary.json's moe_load_mean, averaged over the MoE blocks and the
training steps), side by side, against the uniform share 1 / n_experts that the Switch load-balancing loss pushes
toward. A collapsed router shows as one tall bar; dense points are left out."""

from __future__ import annotations

from pathlib import Path

from bigtrain.sweep.points import Point, varying_overrides

FILENAME = "expert_load.png"


def moe_points(points: list[Point]) -> list[tuple[Point, list[str]]]:
    """(point, what it varied) for the points whose summary records a per-expert load."""
    pairs = zip(points, varying_overrides(points), strict=True)
    return [(p, varied) for p, varied in pairs if (p.summary or {}).get("moe_load_mean")]


def plot_expert_load(sweep_dir: Path, points: list[Point]) -> Path | None:
    """expert_load.png in sweep_dir, or None when no point trained a mixture of experts."""
    moe = moe_points(points)
    if not moe:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only (SLURM nodes and CI have no display)
    import matplotlib.pyplot as plt

    n_experts = max(len(p.summary["moe_load_mean"]) for p, _ in moe)
    width = 0.8 / len(moe)
    fig, ax = plt.subplots(figsize=(max(7, 0.6 * n_experts + 3), 4.5))
    for i, (point, varied) in enumerate(moe):
        load = point.summary["moe_load_mean"]
        x = [e - 0.4 + width * (i + 0.5) for e in range(len(load))]
        dropped = point.summary.get("moe_dropped_frac_mean") or 0.0
        label = f"{point.name}: {' '.join(varied) or '(defaults)'} (dropped {dropped:.1%})"
        ax.bar(x, load, width=width, color=f"C{i % 10}", label=label)
        ax.hlines(1 / len(load), -0.5, len(load) - 0.5, colors="k", linestyles="--", linewidth=0.8)
    ax.set_xticks(range(n_experts), [str(e) for e in range(n_experts)])
    ax.set_xlabel("expert")
    ax.set_ylabel("fraction of routed assignments")
    ax.set_title("expert load per point (dashed: uniform 1 / n_experts)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    path = sweep_dir / FILENAME
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
