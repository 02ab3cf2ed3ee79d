"""A sharded DeepSpeed checkpoint directory -> one full fp32 state dict, in this process, without a process group.

Lives in bigtrain/parallel because it is the only place that may import deepspeed; `bigtrain.checkpoint_io` calls
it when a user points generate/eval/export/init_from at a ZeRO checkpoint directory.
"""

from __future__ import annotations

from pathlib import Path


def is_deepspeed_checkpoint(folder: Path) -> bool:
    """Lightning's DeepSpeed checkpoints are folders with a `latest` tag file and <tag>/*model_states.pt."""
    return (folder / "latest").is_file() or any(folder.glob("*/*model_states.pt"))


def consolidated_state_dict(folder: Path, tag: str | None = None) -> dict:
    """DeepSpeed's own zero_to_fp32 merge of every rank's shards (ZeRO 1-3): {parameter name: fp32 tensor}."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return dict(get_fp32_state_dict_from_zero_checkpoint(str(folder), tag=tag))
