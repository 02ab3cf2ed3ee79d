"""What a checkpoint is, in one place: its on-disk format, the layout that wrote it, its step and its model shape.

    bigtrain.parallel.checkpoint_format.describe(path) -> CheckpointFormat   (`task=inspect ckpt=PATH` prints it)

Formats, as bigtrain's strategies write them:
    lightning   one file: a Lightning checkpoint (single, DDP) with full weights and a torch optimizer state
    neutral     one file: the layout-neutral form of any of these (bigtrain/parallel/neutral.py), which every
                strategy can load; written when a run resumes under another layout than the one that saved
    deepspeed   a folder: DeepSpeed ZeRO 0-3 (`latest`, <tag>/mp_rank_00_model_states.pt, one optimizer file a rank)
    dcp         a folder: torch.distributed.checkpoint (.metadata + *.distcp + meta.pt): FSDP sharded, or tensor
                parallel DTensors (parallelism=tp, tp-fsdp)
    pipeline    a folder: one rank-N.ckpt per pipeline rank (each its stage's weights and optimizer)
    hf          a Hugging Face model folder (config.json + model.safetensors); weights only
    int8        task=quantize's output; weights only
The layout comes from the run config bigtrain stores in every checkpoint (the `bigtrain_config` entry); the world
size of a sharded folder is counted from its files too, so a folder copied without its run config still says it.
Only the small metadata parts are read (memory-mapped, weights-only): describing a 70B folder costs milliseconds.
Torch is imported on first use, not at import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from bigtrain.errors import BigtrainError

RUN_CONFIG_KEY = "bigtrain_config"  # the same key as bigtrain.checkpoint_io's (kept torch-free here)
NEUTRAL_KEY = "bigtrain_neutral"  # marks a layout-neutral file (bigtrain/parallel/neutral.py)
# The GPTConfig fields that decide which tensors a model has and their shapes (dropout, eps, ... do not).
SHAPE_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "head_dim", "n_kv_head", "bias", "norm")
SHAPE_FIELDS += ("mlp", "ffn_hidden_size", "ffn_multiple_of", "ffn_dim_multiplier", "position", "tie_embeddings", "moe")
_DS_OPTIM = re.compile(r"(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_\d+_optim_states\.pt$")


@dataclass
class CheckpointFormat:
    path: Path
    format: str  # lightning | neutral | deepspeed | dcp | pipeline | hf | int8
    parallelism: str | None = None  # the layout that wrote it, from its run config
    zero: int | None = None
    offload: str | None = None
    world: int | None = None  # processes that wrote it (from the files where they say it)
    tp: int = 1
    pp: int = 1
    fsdp: bool = False  # parallelism=tp with FSDP2 over its data axis (tp-fsdp)
    step: int | None = None
    model: dict = field(default_factory=dict)  # the model config group it was trained with
    run_config: dict = field(default_factory=dict)

    @property
    def shape(self) -> dict:
        """The model-shape fields that must agree for weights to load (unset ones left out)."""
        return shape_of(self.model)

    def shape_text(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.shape.items())

    def layout_text(self) -> str:
        parts = [f"parallelism={self.parallelism}"]
        if self.parallelism in ("deepspeed", "fsdp") and self.zero is not None:
            parts.append(f"zero={self.zero}")
        if self.offload and self.offload != "none":
            parts.append(f"offload={self.offload}")
        if self.tp > 1:
            parts.append(f"tp={self.tp}" + (" fsdp=true" if self.fsdp else ""))
        if self.pp > 1:
            parts.append(f"pp={self.pp}")
        parts.append(f"world={self.world}")
        return " ".join(parts)

    def as_dict(self) -> dict:
        return {
            "path": str(self.path),
            "format": self.format,
            "parallelism": self.parallelism,
            "zero": self.zero,
            "offload": self.offload,
            "world": self.world,
            "tp": self.tp,
            "pp": self.pp,
            "step": self.step,
            "model": self.shape,
        }

    def summary_line(self) -> str:
        return (
            f"{self.path}: {self.format} checkpoint, {self.layout_text()}, step {self.step}; model {self.shape_text()}"
        )


def shape_of(model: dict) -> dict:
    """The shape fields of a `model` config group (a dense model's inactive `moe` settings left out)."""
    out = {k: model[k] for k in SHAPE_FIELDS if model.get(k) is not None}
    if not (out.get("moe") or {}).get("n_experts"):
        out.pop("moe", None)
    return out


def describe(path: str | Path) -> CheckpointFormat:
    """What the checkpoint at `path` is (a file or a sharded folder; not a run directory), without its weights."""
    p = Path(path).expanduser()
    if not p.exists():
        raise BigtrainError(f"checkpoint {path} does not exist")
    if p.is_file():
        return _describe_file(p)
    if (p / "config.json").is_file() and any(p.glob("*.safetensors")):
        return CheckpointFormat(p, "hf", world=1)
    if (p / "latest").is_file() or any(p.glob("*/*model_states.pt")):
        return _describe_deepspeed(p)
    if (p / ".metadata").is_file():
        return _describe_dcp(p)
    ranks = sorted(p.glob("rank-*.ckpt"))
    if ranks:
        fmt = _from_blob(p, "pipeline", _load(ranks[0]))
        fmt.world = fmt.world or len(ranks)
        return fmt
    raise BigtrainError(
        f"{p} is a folder but no checkpoint bigtrain knows (DeepSpeed: `latest`; torch.distributed.checkpoint: "
        f".metadata; pipeline: rank-N.ckpt; Hugging Face: config.json + *.safetensors)"
    )


def _load(f: Path):
    from bigtrain.safe_load import load

    return load(f, mmap=True)  # weights-only; tensors stay on disk


def _describe_file(p: Path) -> CheckpointFormat:
    blob = _load(p)
    if not isinstance(blob, dict):
        raise BigtrainError(f"{p} is not a checkpoint (a {type(blob).__name__}, not a dict)")
    if "quantization" in blob:
        return _from_blob(p, "int8", blob)
    return _from_blob(p, "neutral" if NEUTRAL_KEY in blob else "lightning", blob)


def _from_blob(p: Path, fmt: str, blob: dict, world: int | None = None) -> CheckpointFormat:
    run = blob.get(RUN_CONFIG_KEY) or _run_config_near(p)
    out = CheckpointFormat(p, fmt, step=blob.get("global_step"), run_config=run, model=dict(run.get("model") or {}))
    if run:
        par, hw = run.get("parallelism") or {}, run.get("hardware") or {}
        out.parallelism = par.get("name")
        out.zero = (run.get("zero") or {}).get("stage")
        out.offload = (run.get("offload") or {}).get("name")
        out.tp, out.pp, out.fsdp = int(par.get("tp") or 1), int(par.get("pp") or 1), bool(par.get("fsdp"))
        out.world = 1 if out.parallelism == "single" else int(hw.get("devices", 1)) * int(hw.get("nodes", 1))
    if fmt == "neutral":  # the layout it was converted from is recorded inside
        src = blob[NEUTRAL_KEY].get("source") or {}
        out.parallelism, out.zero, out.offload, out.world = (
            src.get(k) for k in ("parallelism", "zero", "offload", "world")
        )
    if world is not None:
        out.world = world
    return out


def _describe_deepspeed(p: Path) -> CheckpointFormat:
    from bigtrain.parallel.safe_globals import allow_deepspeed_globals  # DeepSpeed's types in its files

    allow_deepspeed_globals()
    tag = (p / "latest").read_text().strip() if (p / "latest").is_file() else None
    folder = p / tag if tag else next(f.parent for f in p.glob("*/*model_states.pt"))
    states = sorted(folder.glob("*mp_rank_00_model_states.pt"))
    blob = _load(states[0]) if states else {}
    ranks = {int(m.group(1)) for f in folder.iterdir() if (m := _DS_OPTIM.search(f.name))}
    world = len(ranks) or blob.get("dp_world_size")
    out = _from_blob(p, "deepspeed", blob, world=world)
    stage = blob.get("ds_config", {}).get("zero_optimization", {}).get("stage") if isinstance(blob, dict) else None
    out.zero = stage if stage is not None else out.zero
    return out


def _describe_dcp(p: Path) -> CheckpointFormat:
    meta = p / "meta.pt"  # Lightning's: everything but the model and optimizer
    blob = _load(meta) if meta.is_file() else {}
    out = _from_blob(p, "dcp", blob, world=_world_from_marker(p) or len(list(p.glob("*.distcp"))) or None)
    return out


def _world_from_marker(p: Path) -> int | None:
    from bigtrain.parallel.sharded_checkpoints import COMPLETE_MARKER

    marker = p / COMPLETE_MARKER
    m = re.search(r"all (\d+) ranks", marker.read_text()) if marker.is_file() else None
    return int(m.group(1)) if m else None


def _run_config_near(p: Path) -> dict:
    """The config.yaml of the run a checkpoint belongs to: RUN_DIR/checkpoints/X -> RUN_DIR/config.yaml."""
    for folder in (p.parent, p.parent.parent):
        if (folder / "config.yaml").is_file():
            from omegaconf import OmegaConf

            return OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"), resolve=True)
    return {}


def check_same_shape(source: CheckpointFormat, model_cfg, what: str = "resume") -> None:
    """Refuse (one line naming both shapes) a checkpoint whose model differs from the run's, before heavy work."""
    want = shape_of(dict(model_cfg))
    have = source.shape
    differ = [k for k in want if k in have and have[k] != want[k]]
    if differ:
        raise BigtrainError(
            f"{what}={source.path} holds a model of another shape: checkpoint "
            f"{' '.join(f'{k}={have[k]}' for k in differ)} vs this run's {' '.join(f'{k}={want[k]}' for k in differ)} "
            f"(checkpoint: {source.shape_text()}; run: {' '.join(f'{k}={v}' for k, v in want.items())}); "
            f"resume with the checkpoint's model settings, or start from its weights with init_from="
        )
