"""`task=inspect ckpt=PATH`: what a checkpoint is, without loading its weights.

    python -m bigtrain task=inspect ckpt=runs/.../checkpoints/step-0000100.ckpt
    runs/.../step-0000100.ckpt: deepspeed checkpoint, parallelism=deepspeed zero=2 world=2, step 100; model n_layer=...

Format (Lightning file, DeepSpeed ZeRO folder, torch.distributed.checkpoint folder, pipeline rank files, layout-
neutral file, Hugging Face folder, int8), the layout that wrote it (strategy, ZeRO stage, offload, world size),
its step and its model shape: bigtrain/parallel/checkpoint_format.py, the one place that answers this. A run
directory is inspected at its newest checkpoint. Any layout can resume any checkpoint of these formats but tensor
and pipeline parallel ones (training/cross_layout.py); the JSON result says which.
"""

from __future__ import annotations

from pathlib import Path


def run(cfg, run_dir: Path) -> dict:
    from bigtrain.config import validate
    from bigtrain.errors import BigtrainError
    from bigtrain.parallel.checkpoint_format import describe
    from bigtrain.training.checkpointing import CHECKPOINT_DIR, find_resume_checkpoint

    validate(cfg)  # ckpt is set
    path = Path(cfg.ckpt).expanduser()
    if path.is_dir() and (path / CHECKPOINT_DIR).is_dir():  # a run directory: its newest good checkpoint
        path = find_resume_checkpoint(str(path), path) or path
    fmt = describe(path)
    if fmt.format in ("hf", "int8") and not fmt.model:
        raise BigtrainError(f"ckpt={cfg.ckpt} is a {fmt.format} checkpoint; it holds weights only, no training state")
    print(fmt.summary_line())
    from bigtrain.parallel.neutral import CONVERTIBLE

    return {**fmt.as_dict(), "resumable_under_any_layout": fmt.format in CONVERTIBLE}
