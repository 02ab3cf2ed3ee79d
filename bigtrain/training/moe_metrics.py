"""Router losses and routing metrics of a mixture-of-experts model in the LightningModule.

The model reports its routing (GPT.moe_stats: aux and z losses averaged over the MoE blocks, per-expert load,
dropped fraction); here the losses are weighted by model.moe's coefficients and added to the training loss, the
metrics are logged (moe/aux_loss, moe/z_loss, moe/dropped_frac, moe/load_max, moe/load_min, moe/load_e{i}) and
summed for summary.json (`moe_summary`).
"""

from __future__ import annotations

import torch


def add_router_losses(module, loss: torch.Tensor, moe: dict[str, torch.Tensor]) -> torch.Tensor:
    settings = module.gpt_config.moe
    total = loss + settings.aux_loss_coef * moe["aux_loss"] + settings.z_loss_coef * moe["z_loss"]
    load = moe["load"]
    metrics = {
        "moe/aux_loss": moe["aux_loss"].detach(),
        "moe/z_loss": moe["z_loss"].detach(),
        "moe/dropped_frac": moe["dropped_frac"],
        "moe/load_max": load.max(),
        "moe/load_min": load.min(),
    }
    totals = module.moe_totals
    for key, value in {**metrics, "load": load}.items():
        totals[key] = totals.get(key, 0) + value.float()
    totals["steps"] = totals.get("steps", 0) + 1
    if module.global_step % module.trainer.log_every_n_steps == 0:
        metrics.update({f"moe/load_e{i}": v for i, v in enumerate(load)})
        module.log_dict(metrics, rank_zero_only=True)
    return total


def moe_summary(module) -> dict:
    """Means over the training steps this process ran: router losses, dropped fraction, per-expert load."""
    totals = module.moe_totals
    if not totals:
        return {}
    steps = float(totals["steps"])
    out = {k.replace("/", "_") + "_mean": float(v) / steps for k, v in totals.items() if k.startswith("moe/")}
    out["moe_load_mean"] = [round(float(v) / steps, 6) for v in totals["load"]]
    return out
