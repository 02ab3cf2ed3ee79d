"""The one way bigtrain reads a checkpoint: `torch.load(weights_only=True)`, which runs no code from the file.

A checkpoint is a pickle, and unpickling an arbitrary pickle runs whatever it names (`__reduce__` -> os.system).
torch's weights-only unpickler rebuilds only tensors, plain containers and numbers, plus the few globals allowed
here (what Lightning, DeepSpeed and torch.distributed.checkpoint put into their files; `bigtrain.parallel` adds
DeepSpeed's own). Anything else ends in one `UnsafeCheckpointError` line naming the file and the global it names,
and nothing in the file is run.

Three entry points, used everywhere a checkpoint is read:
    load(path)                     a checkpoint file (Lightning .ckpt, state dict, a shard of a sharded folder)
    verify_folder(path)            every pickle of a sharded checkpoint folder, before anything else reads it
    weights_only_loads()           for code we do not own that calls torch.load(weights_only=False) or
                                   pickle.load itself (DeepSpeed's engine and zero_to_fp32, torch DCP): inside it,
                                   those calls are routed through `load` / the weights-only unpickler
"""

from __future__ import annotations

import contextlib
import io
import pickle
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from bigtrain.errors import BigtrainError

_extra_globals: list[Any] = []  # registered by bigtrain.parallel (DeepSpeed's classes), never by a config
_lock = threading.RLock()
_real_torch_load = torch.load


class UnsafeCheckpointError(BigtrainError):
    """A checkpoint that would run code (or build objects other than tensors and plain data) when unpickled."""


class UnreadableCheckpointError(BigtrainError):
    """A damaged checkpoint or checkpoint part (truncated, not a torch file): not a threat, just unusable."""


def register_safe_globals(objs: list[Any]) -> None:
    """Allow these classes/functions in checkpoints (data-only types of libraries whose checkpoints we read)."""
    for obj in objs:
        if obj not in _extra_globals:
            _extra_globals.append(obj)


def safe_globals() -> list[Any]:
    """What a checkpoint may name besides tensors and plain containers: data-only types, none that runs code."""
    import argparse
    import collections
    import datetime
    import pathlib

    allowed: list[Any] = [
        collections.OrderedDict,
        collections.defaultdict,
        argparse.Namespace,  # Lightning's hparams from argparse
        pathlib.PosixPath,  # Lightning's callback states hold checkpoint paths
        pathlib.PurePosixPath,
        datetime.timedelta,  # Lightning's ModelCheckpoint train_time_interval
        torch.Size,
    ]
    try:  # Lightning's AttributeDict (hparams) and the loop states' dataclass-free containers
        from lightning_fabric.utilities.data import AttributeDict

        allowed.append(AttributeDict)
    except ImportError:  # pragma: no cover - Lightning is a dependency
        pass
    allowed += _dcp_metadata_types()
    return allowed + _extra_globals


def _dcp_metadata_types() -> list[Any]:
    """The dataclasses a torch.distributed.checkpoint `.metadata` file is made of (FSDP and TP checkpoints)."""
    try:
        from torch.distributed.checkpoint import filesystem, metadata
    except ImportError:  # pragma: no cover - torch built without distributed
        return []
    names = (
        "Metadata",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "TensorProperties",
        "MetadataIndex",
        "StorageMeta",
        "_MEM_FORMAT_ENCODING",
    )
    types = [getattr(metadata, n) for n in names if hasattr(metadata, n)]
    types += [getattr(filesystem, n) for n in ("_StorageInfo", "_StoragePrefix") if hasattr(filesystem, n)]
    return types


def load(path: str | Path | io.BytesIO, *, map_location: Any = "cpu", mmap: bool = False, source: Any = None) -> Any:
    """torch.load(weights_only=True) with bigtrain's allow-list; one UnsafeCheckpointError line for anything else.

    `source` names the file in the error when `path` is a buffer (a slice of a DCP file)."""
    kwargs = {"map_location": map_location, "weights_only": True}
    if mmap:
        kwargs["mmap"] = True
    try:
        with torch.serialization.safe_globals(safe_globals()):
            return _real_torch_load(path, **kwargs)
    except pickle.UnpicklingError as e:
        if _names_a_global(e):  # a class or function outside the allow-list: what a payload needs
            raise _unsafe(source or path, e) from None
        # Any other refusal of the weights-only unpickler (an opcode it does not read, bytes that are no pickle):
        # a damaged file, not a threat, so resume may pass over it like a truncated one. Nothing ran either way.
        detail = next((line for line in str(e).splitlines()[1:] if line.strip() and "file an issue" not in line), "")
        raise UnreadableCheckpointError(
            f"checkpoint {source or path} cannot be read ({detail.strip()[:160]})"
        ) from None
    except RuntimeError as e:
        if mmap and "mmap" in str(e):  # a file in torch's legacy (non-zip) format cannot be memory-mapped
            return load(path, map_location=map_location, source=source)
        raise


def load_metadata_pickle(stream, source: Any) -> Any:
    """A torch.distributed.checkpoint `.metadata` file: a plain pickle of protocol 4+, whose FRAME opcode torch's
    weights-only unpickler does not read. So it goes through pickle's own Unpickler with `find_class` restricted to
    the same allow-list (exact names), the restriction Python's pickle documentation gives for untrusted data."""
    try:
        return _AllowListUnpickler(stream).load()
    except pickle.UnpicklingError as e:
        raise _unsafe(source, e) from None
    except Exception as e:  # a damaged file: not a pickle at all
        raise UnreadableCheckpointError(f"checkpoint {source} cannot be read ({type(e).__name__}: {e})") from None


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = {f"{o.__module__}.{o.__qualname__}": o for o in [*safe_globals(), torch.serialization._get_layout]}
        obj = allowed.get(f"{module}.{name}")
        if obj is None and module == "torch":  # torch.float32, torch.strided, torch.contiguous_format: constants
            const = getattr(torch, name, None)
            obj = const if isinstance(const, torch.dtype | torch.layout | torch.memory_format) else None
        if obj is None:
            raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {module}.{name}")
        return obj


def _names_a_global(error: BaseException) -> bool:
    return bool(re.search(r"GLOBAL|global", str(error)))


def _unsafe(source: Any, error: BaseException) -> UnsafeCheckpointError:
    text = str(error)
    named = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"global '?([\w.]+)", text)
    what = f" (it names {named.group(1)})" if named else f" ({text.splitlines()[0][:160]})" if text else ""
    return UnsafeCheckpointError(
        f"checkpoint {source} holds objects that are not plain tensors{what}; bigtrain loads checkpoints with "
        f"torch.load(weights_only=True) and runs no code from them: use a checkpoint written by bigtrain or "
        f"torch.save of tensors and plain containers"
    )


def verify_folder(folder: Path) -> None:
    """Unpickle (weights-only, tensors memory-mapped, so cheap) every pickle in a sharded checkpoint folder:
    DeepSpeed's *_model_states.pt / *_optim_states.pt, Lightning's meta.pt, per-rank .ckpt files, DCP's .metadata
    and the non-tensor entries inside its .distcp files. Raises UnsafeCheckpointError at the first bad one."""
    for f in sorted(folder.rglob("*")):
        if not f.is_file():
            continue
        try:
            if f.suffix in (".pt", ".ckpt", ".pth", ".bin"):
                load(f, mmap=True)
            elif f.name.endswith(".metadata"):
                with open(f, "rb") as stream:
                    meta = load_metadata_pickle(stream, f)
                _verify_dcp_bytes(f.parent, meta)
        except UnsafeCheckpointError:
            raise
        except Exception as e:
            first = (str(e).splitlines() or [""])[0][:160]
            raise UnreadableCheckpointError(f"checkpoint {f} cannot be read ({type(e).__name__}: {first})") from None


def _verify_dcp_bytes(folder: Path, meta: Any) -> None:
    """Non-tensor values in a DCP checkpoint are torch.save'd into the .distcp files at recorded offsets; the
    tensors themselves are read by torch with weights_only=True already."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    storage = getattr(meta, "storage_data", None) or {}
    for index, info in storage.items():
        if not isinstance(meta.state_dict_metadata.get(index.fqn), BytesStorageMetadata):
            continue
        f = folder / info.relative_path
        with open(f, "rb") as stream:
            stream.seek(info.offset)
            blob = stream.read(info.length)
        load(io.BytesIO(blob), source=f"{f} (entry {index.fqn})")


def _forced_torch_load(f, map_location=None, pickle_module=None, *args, weights_only=None, mmap=None, **kwargs):
    """torch.load as called by DeepSpeed / DCP, always weights-only (their own weights_only=False is overridden)."""
    source = getattr(f, "name", None) or (f if isinstance(f, str | Path) else "a checkpoint stream")
    return load(f, map_location=map_location, mmap=bool(mmap), source=source)


def _weights_only_read_metadata(self, *args, **kwargs):
    """FileSystemReader.read_metadata without the plain pickle.load (see torch/distributed/checkpoint/filesystem)."""
    from torch.distributed.checkpoint.metadata import StorageMeta

    path = self._get_metadata_path(kwargs.get("rank"))
    with self.fs.create_stream(path, "rb") as stream:
        metadata = load_metadata_pickle(stream, path)
    if getattr(metadata, "storage_meta", None) is None:
        metadata.storage_meta = StorageMeta()
    metadata.storage_meta.load_id = self.load_id
    return metadata


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Route third-party checkpoint reads through `load` while inside: DeepSpeed's TorchCheckpointEngine.load and
    zero_to_fp32 call `torch.load(..., weights_only=False)`, DCP's planner does for its non-tensor entries and its
    FileSystemReader unpickles `.metadata` with plain pickle. Patching those two calls here, in one place, is
    smaller and safer than copying DeepSpeed's merge code; `verify_folder` checks the same files beforehand."""
    with _lock:
        from torch.distributed.checkpoint.filesystem import FileSystemReader

        saved_load, saved_meta = torch.load, FileSystemReader.read_metadata
        torch.load = _forced_torch_load
        FileSystemReader.read_metadata = _weights_only_read_metadata
        try:
            yield
        finally:
            torch.load, FileSystemReader.read_metadata = saved_load, saved_meta
