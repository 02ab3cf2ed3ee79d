"""2. Time to first step: `python -m bigtrain` (imports, compose, validate, data check, model, trainer, one step)
against the plain loop script doing its one step, both as fresh subprocesses on already-prepared data, alternating.

Both are timed from spawn to exit of a one-step run, so both include interpreter start-up and shutdown; bigtrain's
also includes its end-of-run work (final checkpoint, summary), which makes its figure an upper bound. Beside the
ratio: what importing torch and Lightning alone costs on this machine (the floor under any Lightning-based
trainer), and which heavy optional libraries the default path imports (`python -X importtime`).
"""

from __future__ import annotations

import subprocess

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
    run_command,
    run_plain,
)

# Libraries the default CPU run has no use for: each may be imported only where it is used.
OPTIONAL = ("deepspeed", "wandb", "tensorboard", "tensorboardX", "matplotlib", "transformers", "scipy", "tiktoken")
# Of those, the ones bigtrain controls (the rest arrive through Lightning's own dependency torchmetrics).
MUST_BE_LAZY = ("deepspeed", "wandb", "tensorboard", "tensorboardX", "tiktoken")


def imported_by(log: str) -> dict[str, str]:
    """From `python -X importtime` output: each OPTIONAL top-level module imported -> the chain that imported it."""
    rows = []
    for line in log.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        name = line.split("|")[2]
        rows.append((len(name) - len(name.lstrip()), name.strip()))
    found: dict[str, str] = {}
    for i, (depth, name) in enumerate(rows):  # importtime prints children before their parent
        top = name.split(".")[0]
        if top in OPTIONAL and top not in found and name == top:
            chain, level = [], depth
            for d, parent in rows[i + 1 :]:
                if d < level:
                    chain.append(parent)
                    level = d
            firsts = [c for c in chain if not c.startswith(top)]
            found[top] = " <- ".join(firsts[:3] + (["..."] if len(firsts) > 3 else []) + firsts[-1:])
    return found


def run(ctx: Context) -> list[Row]:
    cfg = compose(*model_overrides(ctx), *data_overrides(ctx))
    data = prepared_dir(ctx)
    overrides = [*model_overrides(ctx), *data_overrides(ctx), "trainer.max_steps=1", *TRAIN_ONLY]
    bt, plain, plain_inner = [], [], []
    for _ in range(ctx.repeats):
        # Not data.prepared_dir: the default path finds its prepared data itself, and that check is part of the cost.
        wall, _ = run_bigtrain(overrides, ctx, "ttfs")
        bt.append(wall)
        wall, out = run_plain(plain_args(cfg, data, 1), ctx)
        plain.append(wall)
        plain_inner.append(out["first_step_s"])
    floors = 0 if ctx.quick else ctx.repeats  # --quick skips the import floor (two more interpreters per repeat)
    torch_s = [run_command([ctx.python, "-c", "import torch"], ctx)[0] for _ in range(floors)]
    pl_s = [run_command([ctx.python, "-c", "import pytorch_lightning"], ctx)[0] for _ in range(floors)]

    proc = subprocess.run(
        [ctx.python, "-X", "importtime", "-m", "bigtrain", *overrides, f"hydra.run.dir={ctx.workdir / 'ttfs-imp'}"],
        env=ctx.env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    found = imported_by(proc.stderr)
    ours = sorted(m for m in found if m in MUST_BE_LAZY)
    rows = [
        Row(
            "ttfs",
            "time to first step (spawn to exit, 1 step)",
            median(bt),
            median(plain),
            "s",
            ratio(median(bt), median(plain)),
            "<= 2",
            f"median of {ctx.repeats} alternating pairs; bigtrain's includes its final checkpoint + summary",
            {"bigtrain_s": bt, "plain_s": plain, "plain_first_step_after_script_start_s": plain_inner},
        ),
        Row(
            "ttfs",
            "import floor: `import pytorch_lightning` vs `import torch`",
            median(pl_s) if floors else None,
            median(torch_s) if floors else None,
            "s",
            ratio(median(pl_s), median(torch_s)) if floors else None,
            "",
            f"Lightning's import chain alone adds {median(pl_s) - median(torch_s):.1f} s (torchmetrics, torch._dynamo)"
            if floors
            else "skipped in --quick",
            {"pytorch_lightning_s": pl_s, "torch_s": torch_s},
        ),
        Row(
            "ttfs",
            "optional heavy imports on the default path",
            float(len(ours)),
            unit="modules",
            target="none of " + "/".join(MUST_BE_LAZY[:3]),
            note="; ".join(f"{m} via {via}" for m, via in sorted(found.items())) or "none",
            samples={"imported": found, "importtime_exit": proc.returncode},
            passed=proc.returncode == 0 and not ours,
        ),
    ]
    return rows
