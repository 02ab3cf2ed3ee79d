"""Resume under another layout: the checkpoint the run's strategy loads, decided on rank zero before any rank starts.

A checkpoint saved under exactly this run's layout (same strategy, ZeRO stage, offload, world size and accumulation)
is loaded as it is, by the strategy that wrote its format. Any other is first checked to hold this run's model shape
(one line naming both shapes, before anything heavy and before anything is written), then converted to the
layout-neutral form (bigtrain/parallel/neutral.py: the format's own tools read it whole) in RUN_DIR/resharded/,
which every strategy loads with its engine's API (parallel/neutral_load.py; a pipeline stage takes its slice).
"""

from __future__ import annotations

from pathlib import Path

from bigtrain.config.layout import Layout
from bigtrain.errors import BigtrainError
from bigtrain.parallel.checkpoint_format import CheckpointFormat, check_same_shape, describe

RESHARDED_DIR = "resharded"
# Strategies that load the neutral form (tensor parallel splits q/k/v back, a pipeline stage takes its slice).
LOADS_NEUTRAL = ("single", "ddp", "deepspeed", "fsdp", "tp", "pipeline")


def same_layout(fmt: CheckpointFormat, layout: Layout) -> bool:
    """Whether `layout`'s strategy reads this checkpoint natively and continues it exactly where it stopped."""
    if fmt.format == "neutral" or not fmt.run_config:
        return False
    from omegaconf import OmegaConf

    from bigtrain.config.layout import layout_of

    saved = layout_of(OmegaConf.create(fmt.run_config))
    keys = ("parallelism", "zero", "offload_optimizer", "offload_params", "world", "tp", "pp", "fsdp")
    keys += ("trainer_accumulation",)
    return all(getattr(saved, k) == getattr(layout, k) for k in keys)


def checkpoint_for_layout(cfg, layout: Layout, checkpoint: Path, run_dir: Path, log=print) -> Path:
    """`checkpoint` itself when saved under this layout, else its neutral conversion (refusing another model)."""
    fmt = describe(checkpoint)
    check_same_shape(fmt, cfg.model)
    if same_layout(fmt, layout):
        return checkpoint
    if layout.parallelism not in LOADS_NEUTRAL:
        raise BigtrainError(
            f"resume={checkpoint} was saved under {fmt.layout_text()}; parallelism={layout.parallelism} cannot load "
            f"a checkpoint of another layout yet (those that can: {', '.join(LOADS_NEUTRAL)}); resume it under its "
            f"own layout, or convert it by resuming under one of those first"
        )
    from bigtrain.parallel.neutral import write_neutral

    out = run_dir / RESHARDED_DIR / f"{checkpoint.name.removesuffix('.ckpt')}-from-{fmt.parallelism}.ckpt"
    log(
        f"bigtrain: resume from {fmt.format} checkpoint {checkpoint} ({fmt.layout_text()}, step {fmt.step}) under "
        f"parallelism={layout.parallelism} world={layout.world}: converting it to the layout-neutral form {out}"
    )
    return write_neutral(fmt, layout.trainer_accumulation, out)
