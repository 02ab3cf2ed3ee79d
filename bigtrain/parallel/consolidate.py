"""Sharded checkpoint -> one fp32 state dict that the plain `bigtrain.model.GPT` loads.

`consolidated_state_dict(path)` reads, without a process group:
- a DeepSpeed checkpoint folder (Lightning's `*.ckpt/` with `latest` and a `checkpoint/` tag folder): ZeRO 1-3 via
  DeepSpeed's own zero_to_fp32 (which rebuilds the fp32 master weights from every rank's optimizer shard and
  restores tied weights); ZeRO 0 from the module states file;
- an FSDP sharded checkpoint folder (torch.distributed.checkpoint, `.metadata`): the model entries;
- a single Lightning `.ckpt` file (single / ddp runs): its `state_dict`.
Keys lose the LightningModule's `model.` prefix; the tied `lm_head.weight` is filled from the token table.
"""

from __future__ import annotations

from pathlib import Path

import torch

PREFIX = "model."  # GPTLightningModule keeps the GPT as `self.model`


def _strip(state: dict) -> dict[str, torch.Tensor]:
    out = {k[len(PREFIX) :]: v.float() for k, v in state.items() if k.startswith(PREFIX) and torch.is_tensor(v)}
    if "lm_head.weight" not in out and "transformer.wte.weight" in out:
        out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def is_deepspeed_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / "latest").is_file()


def is_fsdp_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / ".metadata").is_file()


def _deepspeed_state(path: Path) -> dict:
    tag = (path / "latest").read_text().strip()
    folder = path / tag
    model_states = sorted(folder.glob("*model_states.pt"))
    if not model_states:
        raise FileNotFoundError(f"{folder} holds no DeepSpeed model states")
    optim_states = sorted(folder.glob("*optim_states.pt"))
    if not optim_states:  # ZeRO stage 0: the module states file is the whole model
        return torch.load(model_states[0], map_location="cpu", weights_only=False)["module"]
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(path), tag=tag)


def _fsdp_state(path: Path) -> dict:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = dcp.FileSystemReader(str(path)).read_metadata()
    keys = [
        k
        for k, v in metadata.state_dict_metadata.items()
        if k.startswith("model.") and isinstance(v, TensorStorageMetadata)
    ]
    state = {"model": {k[len("model.") :]: torch.empty(metadata.state_dict_metadata[k].size) for k in keys}}
    dcp.load(state, storage_reader=dcp.FileSystemReader(str(path)), no_dist=True)
    return state["model"]


def consolidated_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The fp32 GPT state dict stored in checkpoint `path` (see the module docstring for the formats)."""
    path = Path(path).resolve()  # `last.ckpt` may be a link to the newest step's folder
    if is_deepspeed_checkpoint(path):
        state = _deepspeed_state(path)
    elif is_fsdp_checkpoint(path):
        state = _fsdp_state(path)
    elif path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    else:
        raise FileNotFoundError(f"{path} is not a checkpoint (no DeepSpeed `latest`, FSDP `.metadata` or .ckpt file)")
    return _strip(state)
