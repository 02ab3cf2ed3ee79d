"""1. Framework overhead on CPU: bigtrain's training tokens/s against the plain loop's, same model, batch,
optimizer, precision and thread count, alternating runs (bigtrain, plain, bigtrain, plain, ...).

Both time every optimizer step the same way (wall clock from one step's end to the next's, the first step left
out) over the same number of steps; bigtrain's figure comes from its own Throughput callback (summary.json).
Two ratios: of mean tokens/s (what a run reports) and of the median step (robust to other processes stealing the
cores for a moment). bigtrain's runs carry the step-time breakdown (bigtrain/training/step_time.py, always on), so
the ratio includes its cost; the row's samples give bigtrain's mean data / forward / backward / optimizer / other
milliseconds per step. A second pair on the nano model, whose steps are nearly free, exposes the framework's fixed
cost per step in milliseconds.
"""

from __future__ import annotations

from benchmarks.common import (
    TRAIN_ONLY,
    Context,
    Row,
    compose,
    data_overrides,
    median,
    model_overrides,
    plain_args,
    prepared_dir,
    ratio,
    run_bigtrain,
    run_plain,
)

# bigtrain's own step-time breakdown (summary.json), mean milliseconds per step.
BREAKDOWN = ("time_data_ms", "time_forward_ms", "time_backward_ms", "time_optimizer_ms", "time_other_ms")


def _pairs(ctx: Context, overrides: list[str], steps: int, repeats: int, name: str) -> dict:
    cfg = compose(*overrides)
    data = prepared_dir(ctx)
    tokens_per_step = cfg.trainer.global_batch_size * cfg.model.block_size
    bigtrain = [*overrides, f"trainer.max_steps={steps}", f"data.prepared_dir={data}", *TRAIN_ONLY]
    got: dict[str, list[float]] = {"bigtrain_mean": [], "bigtrain_median": [], "plain_mean": [], "plain_median": []}
    for _ in range(repeats):
        _, summary = run_bigtrain(bigtrain, ctx, name)
        got["bigtrain_mean"].append(summary["tokens_per_s"])
        got["bigtrain_median"].append(summary["tokens_per_s_median"])
        for part in BREAKDOWN:
            got.setdefault(f"bigtrain_{part}", []).append(summary[part])
        _, plain = run_plain(plain_args(cfg, data, steps), ctx)
        got["plain_mean"].append(plain["tokens_per_s"])
        got["plain_median"].append(tokens_per_step / median(plain["step_times_s"][1:] or plain["step_times_s"]))
    return got


def run(ctx: Context) -> list[Row]:
    steps = 4 if ctx.quick else 40
    model = model_overrides(ctx)
    got = _pairs(ctx, [*model, *data_overrides(ctx)], steps, ctx.repeats, "overhead")
    label = "nano" if ctx.quick else "tiny (default)"

    def tokens_row(kind: str, what: str, note: str, samples: dict | None = None) -> Row:
        ours, theirs = median(got[f"bigtrain_{kind}"]), median(got[f"plain_{kind}"])
        metric = f"train tokens/s, {label}, {what}"
        return Row("overhead", metric, ours, theirs, "tok/s", ratio(ours, theirs), ">= 0.95", note, samples or {})

    rows = [
        tokens_row(
            "mean",
            "mean of steps",
            f"median of {ctx.repeats} alternating pairs x {steps} steps, first step excluded",
            {k: [round(v, 1) for v in vs] for k, vs in got.items()},
        ),
        tokens_row("median", "median step", "median step time: robust to other processes on the cores"),
    ]
    if not ctx.quick:
        # Nano steps take a few ms, so the difference in step time is the framework's own cost per step.
        nano_steps = 200
        nano = _pairs(ctx, ["model=nano"], nano_steps, max(ctx.repeats - 1, 1), "overhead-nano")
        cfg = compose("model=nano")
        tokens_per_step = cfg.trainer.global_batch_size * cfg.model.block_size
        ms_bt = 1000 * tokens_per_step / median(nano["bigtrain_median"])
        ms_plain = 1000 * tokens_per_step / median(nano["plain_median"])
        rows.append(
            Row(
                "overhead",
                "median step time, nano model",
                ms_bt,
                ms_plain,
                "ms",
                ratio(ms_bt, ms_plain),
                "",
                f"fixed framework cost ~{ms_bt - ms_plain:.1f} ms/step ({nano_steps} steps)",
                {k: [round(v, 1) for v in vs] for k, vs in nano.items()},
            )
        )
        rows.append(breakdown_cost(ctx, nano_steps, max(ctx.repeats - 1, 1)))
    return rows


def breakdown_cost(ctx: Context, steps: int, repeats: int) -> Row:
    """What the step-time breakdown itself costs: nano runs with it and without (trainer.step_time=false),
    alternating, median step time. Nano steps take milliseconds, so a fixed cost per step shows here first."""
    data = prepared_dir(ctx)
    base = ["model=nano", f"trainer.max_steps={steps}", f"data.prepared_dir={data}", *TRAIN_ONLY]
    cfg = compose("model=nano")
    tokens_per_step = cfg.trainer.global_batch_size * cfg.model.block_size
    got: dict[str, list[float]] = {"with_ms": [], "without_ms": []}
    for _ in range(repeats):
        for key, switch in (("with_ms", "true"), ("without_ms", "false")):
            _, summary = run_bigtrain([*base, f"trainer.step_time={switch}"], ctx, f"breakdown-{switch}")
            got[key].append(1000 * tokens_per_step / summary["tokens_per_s_median"])
    with_ms, without_ms = median(got["with_ms"]), median(got["without_ms"])
    return Row(
        "overhead",
        "median step time, nano, step-time breakdown on / off",
        with_ms,
        without_ms,
        "ms",
        ratio(with_ms, without_ms),
        "",
        f"the breakdown's own cost ~{with_ms - without_ms:.2f} ms/step ({repeats} alternating pairs x {steps} steps)",
        {k: [round(v, 2) for v in vs] for k, vs in got.items()},
    )
