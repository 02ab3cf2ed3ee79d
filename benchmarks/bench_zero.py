"""4. DeepSpeed ZeRO on CPU: tokens/s and per-rank peak memory for zero=0..3 over 2 processes, each beside the
planner's prediction for the same config.

It needs `parallelism=deepspeed` (conf/parallelism/deepspeed.yaml) and the planner (`bigtrain.plan`); until both
exist in this checkout it reports 'not available' instead of failing. Measured memory is the process's peak
resident set (torch and Python included), the planner's is model states + activations per device, so their ratio
shows the runtime's fixed share as much as the planner's accuracy. --quick prints the predictions only.
"""

from __future__ import annotations

import importlib
import importlib.util

from benchmarks.common import (
    REPO,
    TRAIN_ONLY,
    Context,
    Row,
    compose,
    median,
    model_overrides,
    prepared_dir,
    ratio,
    run_bigtrain,
)

STAGES = (0, 1, 2, 3)


def missing() -> list[str]:
    gone = []
    if not (REPO / "conf" / "parallelism" / "deepspeed.yaml").is_file():
        gone.append("parallelism=deepspeed")
    if importlib.util.find_spec("bigtrain.plan") is None:
        gone.append("bigtrain.plan")
    return gone


def planner():
    """The planner's plan(cfg) -> dict, wherever the plan package exposes it."""
    package = importlib.import_module("bigtrain.plan")
    if hasattr(package, "plan") and callable(package.plan):
        return package.plan
    return importlib.import_module("bigtrain.plan.planner").plan


def run(ctx: Context) -> list[Row]:
    gone = missing()
    if gone:
        return [Row("zero", f"zero={s}, 2 procs", note=f"not available: needs {' and '.join(gone)}") for s in STAGES]
    plan = planner()
    data = prepared_dir(ctx)
    steps = 20
    rows = []
    for stage in STAGES:
        overrides = [
            *model_overrides(ctx),
            "parallelism=deepspeed",
            f"zero={stage}",
            "hardware.devices=2",
            "trainer.global_batch_size=16",
            "trainer.micro_batch_size=8",
            f"trainer.max_steps={steps}",
            f"data.prepared_dir={data}",
            *TRAIN_ONLY,
        ]
        predicted = plan(compose(*overrides))
        pred_mem = predicted["memory_per_device_bytes"]["total"]
        pred_tps = predicted.get("tokens_per_s")
        tps, mem = [], []
        if not ctx.quick:
            for _ in range(ctx.repeats):
                _, summary = run_bigtrain(overrides, ctx, f"zero{stage}")
                tps.append(summary["tokens_per_s"])
                mem.append(summary["peak_memory_bytes"])
        gib = 2**30
        rows.append(
            Row(
                "zero",
                f"zero={stage}, 2 procs: tokens/s (measured / planned)",
                median(tps) if tps else None,
                pred_tps,
                "tok/s",
                ratio(median(tps), pred_tps) if tps else None,
                note="--quick: prediction only" if ctx.quick else f"median of {ctx.repeats} runs x {steps} steps",
                samples={"tokens_per_s": tps},
            )
        )
        rows.append(
            Row(
                "zero",
                f"zero={stage}, 2 procs: peak memory per rank (measured RSS / planned)",
                median(mem) / gib if mem else None,
                pred_mem / gib,
                "GiB",
                ratio(median(mem), pred_mem) if mem else None,
                note="RSS includes the torch + Python runtime",
                samples={"peak_memory_bytes": mem, "planned_bytes": pred_mem},
            )
        )
    return rows
