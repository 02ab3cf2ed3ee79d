"""Mixture of experts vs dense at equal active parameters: `tiny-moe` (8 experts of half tiny's MLP width, top-2)
against dense `tiny`, the same steps, batch, data and seed (recipe moe-vs-dense), one process each on CPU.

Two rows per run: the final validation loss of each (the Switch Transformer's claim is that MoE wins on loss per
step: ratio moe / dense below 1) and the training tokens/s of each (what the routing and dispatch cost on CPU:
ratio moe / dense). Runs alternate (dense, moe, dense, moe, ...) and medians are taken; the losses do not vary
between repeats (same seed), the rates do. --quick: nano-sized models, a few steps (numbers mean nothing).

    python -m benchmarks moe [--repeats N]
    BIGTRAIN_BENCH_MOE_STEPS=80 python -m benchmarks moe     # a shorter run on a loaded machine (default: 300)
"""

from __future__ import annotations

import os

from benchmarks.common import Context, Row, median, ratio, run_bigtrain

DENSE, MOE = "tiny", "tiny-moe"


def overrides(ctx: Context, model: str) -> list[str]:
    if ctx.quick:  # nano's shape for both: 2 layers of 64, the MoE with 4 experts of half width
        shape = ["model.n_layer=2", "model.n_head=2", "model.n_embd=64", "model.block_size=64"]
        moe = ["model.ffn_hidden_size=128", "model.moe.n_experts=4"] if model == MOE else []
        steps = ["trainer.max_steps=6", "trainer.val_check_interval=3", "data.max_bytes=2000000"]
        return [f"model={model}", *shape, *moe, *steps, "trainer.val_batches=1"]
    steps = int(os.environ.get("BIGTRAIN_BENCH_MOE_STEPS", "300"))  # the recipe's 300 by default
    # Validation at the end only (and at the start, as always): the same batches for both models.
    return [
        "recipe=moe-vs-dense",
        f"model={model}",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
    ]


def run(ctx: Context) -> list[Row]:
    common = ["trainer.sample_tokens=0", "trainer.progress=false", "trainer.checkpoint_every_n_steps=0"]
    loss: dict[str, list[float]] = {DENSE: [], MOE: []}
    rate: dict[str, list[float]] = {DENSE: [], MOE: []}
    params: dict[str, int] = {}
    for _ in range(ctx.repeats):
        for model in (DENSE, MOE):
            _, summary = run_bigtrain([*overrides(ctx, model), *common], ctx, f"moe-bench-{model}")
            loss[model].append(summary["final_val_loss"])
            rate[model].append(summary["tokens_per_s"])
            params[model] = summary["n_params"]
    note = f"{MOE} {params[MOE] / 1e6:.2f}M total vs {DENSE} {params[DENSE] / 1e6:.2f}M, equal active per token"
    val = [median(loss[MOE]), median(loss[DENSE])]
    tps = [median(rate[MOE]), median(rate[DENSE])]
    return [
        Row("moe", "final val loss, moe / dense", val[0], val[1], "nats", ratio(*val), note=note, samples=loss),
        Row("moe", "train tokens/s, moe / dense", tps[0], tps[1], "tok/s", ratio(*tps), note=note, samples=rate),
    ]
