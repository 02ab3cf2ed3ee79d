"""Sharded checkpoint directories -> one full state dict, in this process, without a process group.

Two layouts, both as PyTorch Lightning writes them:
- DeepSpeed (ZeRO 1-3): `latest` + <tag>/*model_states.pt + *optim_states.pt; merged by DeepSpeed's own
  zero_to_fp32 (fp32 weights); everything else Lightning saved is client state in mp_rank_00_model_states.pt.
- FSDP (state_dict_type="sharded"): torch.distributed.checkpoint files (.metadata, *.distcp) with the weights
  under "model", and meta.pt holding everything else.
Lives in bigtrain/parallel because it is the only place that may import deepspeed; `bigtrain.checkpoint_io` calls
it when generate/eval/export/init_from points at such a directory. Every file is read weights-only: DeepSpeed's
zero_to_fp32 and DCP's reader run inside bigtrain.safe_load.weights_only_loads(), which routes their own
torch.load(weights_only=False) / pickle.load calls through the safe loader (see bigtrain/parallel/safe_globals.py
for the DeepSpeed types allowed).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from bigtrain.parallel.safe_globals import allow_deepspeed_globals
from bigtrain.safe_load import load, weights_only_loads

FSDP_META = "meta.pt"  # Lightning's _METADATA_FILENAME beside the distcp files


def is_deepspeed_checkpoint(folder: Path) -> bool:
    return (folder / "latest").is_file() or any(folder.glob("*/*model_states.pt"))


def is_fsdp_checkpoint(folder: Path) -> bool:
    return (folder / ".metadata").is_file()


def consolidated_state_dict(folder: Path, tag: str | None = None) -> dict:
    """DeepSpeed's own zero_to_fp32 merge of every rank's shards: {parameter name: fp32 tensor}. ZeRO stage 0
    shards nothing: its engine saved the whole module in mp_rank_00_model_states.pt, which zero_to_fp32 refuses."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    allow_deepspeed_globals()
    client = deepspeed_client_state(folder)
    if ((client.get("ds_config") or {}).get("zero_optimization") or {}).get("stage", 0) == 0 and client.get("module"):
        return {k: v.float() for k, v in client["module"].items()}
    with weights_only_loads():
        return dict(get_fp32_state_dict_from_zero_checkpoint(str(folder), tag=tag))


def deepspeed_client_state(folder: Path) -> dict:
    for f in sorted(folder.glob("*/*mp_rank_00_model_states.pt")):
        allow_deepspeed_globals()
        blob = load(f, mmap=True)  # weights stay on disk
        if isinstance(blob, dict):
            return blob
    return {}


def fsdp_state_dict(folder: Path) -> dict:
    """The model entry of a torch.distributed.checkpoint directory, read whole (no optimizer states): "model" as
    Lightning's FSDPStrategy writes it, "state_dict" as its ModelParallelStrategy (parallelism=tp) does."""
    with warnings.catch_warnings(), weights_only_loads():
        warnings.simplefilter("ignore")  # "torch.distributed is disabled ... assuming a single process": intended
        try:
            from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

            key = _dcp_model_key(folder)
            return dict(_load_state_dict_from_keys(keys={key}, checkpoint_id=str(folder))[key])
        except ImportError:  # older torch: convert the whole checkpoint (optimizer states too) through a file
            import tempfile

            from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

            with tempfile.TemporaryDirectory() as tmp:
                dcp_to_torch_save(str(folder), f"{tmp}/full.pt")
                full = load(f"{tmp}/full.pt")
                return dict(full.get("model") or full["state_dict"])


def _dcp_model_key(folder: Path) -> str:
    from torch.distributed.checkpoint import FileSystemReader

    names = FileSystemReader(str(folder)).read_metadata().state_dict_metadata
    return "model" if any(n.startswith("model.") for n in names) else "state_dict"


def fsdp_client_state(folder: Path) -> dict:
    meta = folder / FSDP_META
    return load(meta) if meta.is_file() else {}
