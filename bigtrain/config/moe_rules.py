"""Rules of `model.moe` (bigtrain/model/moe.py), called from the one validation step (bigtrain/config/validate.py).

Each broken rule is one phrase naming the value and what would be valid. A dense model (n_experts=0) has none.
"""

from __future__ import annotations

# Strategies whose model is the plain GPT, so the LightningModule sees the routing losses: the MoE layer runs
# replicated (single, ddp) or with its stacked expert weights sharded like any other tensor (deepspeed, fsdp).
# Tensor parallelism would need the experts split (not planned), the pipeline schedule would need the router losses
# carried across stages: both refused until they are built.
MOE_PARALLELISMS = ("single", "ddp", "deepspeed", "fsdp")


def moe_problems(m, parallelism: str) -> list[str]:
    moe = m.moe
    p: list[str] = []
    if moe.n_experts < 0:
        p.append(f"model.moe.n_experts={moe.n_experts} must be 0 (a dense model) or positive")
    if moe.n_experts <= 0:
        return p
    if not 1 <= moe.top_k <= moe.n_experts:
        p.append(f"model.moe.top_k={moe.top_k} must be between 1 and model.moe.n_experts={moe.n_experts}")
    for key in ("capacity_factor", "eval_capacity_factor"):
        if not moe[key] > 0:
            p.append(f"model.moe.{key}={moe[key]} must be positive (1.0: an expert takes its even share of tokens)")
    for key in ("aux_loss_coef", "z_loss_coef"):
        if not moe[key] >= 0:
            p.append(f"model.moe.{key}={moe[key]} must be zero or positive")
    if moe.every_n_layers < 1:
        p.append(f"model.moe.every_n_layers={moe.every_n_layers} must be at least 1 (1: every block is MoE)")
    if moe.n_shared_experts < 0:
        p.append(f"model.moe.n_shared_experts={moe.n_shared_experts} must be zero or positive")
    if parallelism not in MOE_PARALLELISMS:
        p.append(
            f"parallelism={parallelism} does not support mixture-of-experts models (model.moe.n_experts="
            f"{moe.n_experts}) yet; valid: {', '.join(MOE_PARALLELISMS)}"
        )
    return p
