"""Load a trained GPT from whatever a user points at, for generate, eval, export and init_from.

Accepted, in the order they are recognised:
    a file                   a Lightning checkpoint (.ckpt; `last.ckpt` may be a symlink) or a bare state dict,
                             or task=quantize's int8 file (bigtrain.quantization; eval and generate only)
    a Hugging Face directory config.json + model.safetensors of a GPT-2 or Llama (see bigtrain.hf)
    a DeepSpeed directory    a sharded ZeRO checkpoint, merged on the fly (bigtrain.parallel.consolidate)
    an FSDP directory        a sharded torch.distributed.checkpoint (FSDP, or tensor parallel's DTensors), merged
                             on the fly (bigtrain.parallel.neutral.read_weights: q/k/v joined back)
    a pipeline directory     one rank-N.ckpt per stage, merged (the same function)
    a run directory          its checkpoints/last.ckpt
The architecture comes from the checkpoint itself (the run config bigtrain stores in every checkpoint), else from
the config.yaml of the run directory it sits in. Every failure is one BigtrainError line naming the path.
Every file is read weights-only (bigtrain.safe_load): a checkpoint that would run code is refused, not loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from bigtrain.errors import BigtrainError, DataError
from bigtrain.model import GPT, GPTConfig, gpt_config_from
from bigtrain.safe_load import UnsafeCheckpointError, load, verify_folder

RUN_CONFIG_KEY = "bigtrain_config"  # where GPTLightningModule.on_save_checkpoint puts the resolved run config
KINDS = (
    "a .ckpt file, a run directory, a DeepSpeed/FSDP/tensor-parallel/pipeline checkpoint directory or a Hugging Face "
    "GPT-2 or Llama directory"
)


@dataclass
class Checkpoint:
    """A located checkpoint: its kind, the model it describes and, for bigtrain runs, the run's config."""

    path: Path
    kind: str  # lightning | deepspeed | fsdp | pipeline | hf | int8
    gpt_config: GPTConfig
    run_config: dict = field(default_factory=dict)  # the training run's resolved config ({} for HF directories)
    state_dict: dict | None = None  # read while locating when it came for free (single files; int8: the whole file)


def require_float(ckpt: Checkpoint, what: str) -> Checkpoint:
    """Training and export need float weights: refuse an int8 checkpoint (task=quantize's output) by name."""
    if ckpt.kind == "int8":
        raise BigtrainError(
            f"{what}={ckpt.path} is an int8 quantized checkpoint, for eval and generate only; "
            f"pass the float checkpoint it was quantized from"
        )
    return ckpt


def locate(path: str | Path | None, what: str = "ckpt") -> Checkpoint:
    """Find the checkpoint at `path` and read its architecture (weights only where that costs nothing extra)."""
    if not path:
        raise BigtrainError(f"{what} is not set; pass {what}=<{KINDS}>")
    p = Path(path).expanduser()
    if not p.exists():
        raise BigtrainError(f"{what}={path} does not exist; pass {what}=<{KINDS}>")
    if p.is_file():
        return _locate_file(p, what)
    from bigtrain.hf import is_hf_dir, read_hf_config
    from bigtrain.parallel import consolidate

    if is_hf_dir(p):
        return Checkpoint(p, "hf", read_hf_config(p))
    for kind, is_kind, client_state in (
        ("deepspeed", consolidate.is_deepspeed_checkpoint, consolidate.deepspeed_client_state),
        ("fsdp", consolidate.is_fsdp_checkpoint, consolidate.fsdp_client_state),
    ):
        if is_kind(p):
            if kind == "deepspeed":
                consolidate.allow_deepspeed_globals()  # its loss scaler, stage enum and fragment records
            verify_folder(p)  # every pickle in it, weights-only, before anything reads one for real
            run_config = client_state(p).get(RUN_CONFIG_KEY) or _run_config_near(p)
            return Checkpoint(p, kind, _gpt_config_of(run_config, p, what), run_config)
    if any(p.glob("rank-*.ckpt")):  # a pipeline's stages (parallel/pipeline.py)
        from bigtrain.parallel.checkpoint_format import describe

        verify_folder(p)
        fmt = describe(p)
        return Checkpoint(p, "pipeline", _gpt_config_of(fmt.run_config, p, what), fmt.run_config)
    if (p / "checkpoints" / "last.ckpt").exists():
        return locate(p / "checkpoints" / "last.ckpt", what)
    raise BigtrainError(f"{what}={path} is a directory but holds no checkpoint; pass {what}=<{KINDS}>")


def load_model(ckpt: Checkpoint) -> GPT:
    """The GPT of a located checkpoint, fp32 on CPU in eval mode, its weights checked key by key and shape by shape."""
    if ckpt.kind == "int8":  # torchao int8 linears (inference only)
        from bigtrain.quantization import load_quantized

        return load_quantized(ckpt.state_dict, ckpt.gpt_config, ckpt.path, load_weights)
    state = ckpt.state_dict if ckpt.state_dict is not None else _read_weights(ckpt)
    model = GPT(ckpt.gpt_config)
    load_weights(model, state, ckpt.path)
    return model.float().eval()


def load_weights(model: GPT, state: dict, source: Path | str) -> None:
    """Copy `state` into `model` after checking it is this architecture's (one error line listing what differs)."""
    state = _bigtrain_names(state)
    expected = model.state_dict()
    if "lm_head.weight" not in state and "transformer.wte.weight" in state:
        state["lm_head.weight"] = state["transformer.wte.weight"]  # tied: some writers store it once
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        c = model.config
        parts = [f"{len(missing)} missing (e.g. {missing[0]})"] if missing else []
        parts += [f"{len(unexpected)} unexpected (e.g. {unexpected[0]})"] if unexpected else []
        parts += [f"{len(wrong)} of another shape (checkpoint vs model: {wrong[0]})"] if wrong else []
        raise BigtrainError(
            f"checkpoint {source} does not fit the model n_layer={c.n_layer} n_head={c.n_head} n_embd={c.n_embd} "
            f"block_size={c.block_size} vocab_size={c.vocab_size} bias={c.bias}: tensors {', '.join(parts)}; "
            f"it is another architecture (or its config.yaml does not belong to it)"
        )
    model.load_state_dict({k: state[k] for k in expected})


def _locate_file(p: Path, what: str) -> Checkpoint:
    try:
        blob = load(p, mmap=True)  # weights-only; mmap keeps a large file out of memory until read
    except UnsafeCheckpointError:
        raise
    except Exception as e:
        raise BigtrainError(f"{what}={p} cannot be read as a PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(blob, dict) and "quantization" in blob:  # task=quantize's int8 file (bigtrain.quantization)
        run_config = blob.get(RUN_CONFIG_KEY) or _run_config_near(p)
        return Checkpoint(p, "int8", _gpt_config_of(run_config, p, what), run_config, blob)
    if isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict):
        state, run_config = blob["state_dict"], blob.get(RUN_CONFIG_KEY) or _run_config_near(p)
    elif isinstance(blob, dict) and blob and all(isinstance(v, torch.Tensor) for v in blob.values()):
        state, run_config = blob, _run_config_near(p)  # a bare state dict, e.g. torch.save(model.state_dict())
    else:
        raise BigtrainError(f"{what}={p} is neither a Lightning checkpoint nor a state dict; pass {what}=<{KINDS}>")
    return Checkpoint(p, "lightning", _gpt_config_of(run_config, p, what), run_config, state)


def _gpt_config_of(run_config: dict, p: Path, what: str) -> GPTConfig:
    model = run_config.get("model") if run_config else None
    if not model:
        raise BigtrainError(
            f"{what}={p} does not say which model it holds (no run config inside, no config.yaml in its run "
            f"directory); use a checkpoint written by bigtrain, or put its run's config.yaml beside it"
        )
    return gpt_config_from(model)


def _run_config_near(p: Path) -> dict:
    """The config.yaml of the run a checkpoint belongs to: RUN_DIR/checkpoints/last.ckpt -> RUN_DIR/config.yaml."""
    from omegaconf import OmegaConf

    for folder in (p.parent, p.parent.parent):
        if (folder / "config.yaml").is_file():
            return OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"), resolve=True)
    return {}


def _read_weights(ckpt: Checkpoint) -> dict:
    if ckpt.kind == "hf":
        from bigtrain.hf import read_hf_weights

        return read_hf_weights(ckpt.path, ckpt.gpt_config)
    from bigtrain.parallel import consolidate

    def merge(path: Path) -> dict:
        if ckpt.kind == "deepspeed":
            return consolidate.consolidated_state_dict(path)
        from bigtrain.parallel.checkpoint_format import describe
        from bigtrain.parallel.neutral import read_weights  # tensor parallel's q/k/v and a pipeline's stages joined

        return read_weights(describe(path))

    try:
        return merge(ckpt.path)
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # both raise plain ValueError/FileNotFoundError/RuntimeError for a partial folder
        raise BigtrainError(f"cannot merge the {ckpt.kind} checkpoint {ckpt.path}: {type(e).__name__}: {e}") from None


def _bigtrain_names(state: dict) -> dict:
    """Strip the wrappers' prefixes (Lightning's `model.`, DeepSpeed's `module.`, `_forward_module.`) from keys."""
    out = {}
    for key, value in state.items():
        name = key
        while not name.startswith(("transformer.", "lm_head.")) and "." in name:
            head, rest = name.split(".", 1)
            if head not in ("model", "module", "_forward_module", "_orig_mod"):
                break
            name = rest
        out[name] = value
    return out


def tokenizer_of(ckpt: Checkpoint, prepared_dir: str | None = None):
    """The tokenizer the checkpoint's model was trained with: from a Hugging Face directory's tokenizer files, or
    from the prepared dataset its run used (prepared_dir overrides where that folder has moved)."""
    if ckpt.kind == "hf":
        from bigtrain.hf import read_hf_tokenizer

        return read_hf_tokenizer(ckpt.path)
    from bigtrain.data import load_tokenizer, read_meta

    folder = prepared_dir or (ckpt.run_config.get("data") or {}).get("prepared_dir")
    if not folder or not (Path(folder) / "meta.json").is_file():
        raise DataError(
            f"the tokenizer of {ckpt.path} lived in its run's prepared data {folder}, which is gone; "
            f"prepare the same data again and pass data.prepared_dir=<that folder>"
        )
    return load_tokenizer(read_meta(Path(folder)), Path(folder))


def check_init_from(cfg) -> Checkpoint:
    """Before a fine-tuning run starts: the init_from checkpoint exists and holds the run's architecture and
    tokenizer (token ids must mean the same thing on both sides)."""
    ckpt = require_float(locate(cfg.init_from, "init_from"), "init_from")
    want, have = gpt_config_from(cfg.model), ckpt.gpt_config
    fields = ("n_layer", "n_head", "n_embd", "attn_dim", "block_size", "vocab_size", "bias")
    fields += ("kv_heads", "ffn_dim", "norm", "mlp", "position", "tie_embeddings")
    differ = [f for f in fields if getattr(want, f) != getattr(have, f)]
    if differ:
        name = (ckpt.run_config.get("model") or {}).get("name")
        raise BigtrainError(
            f"init_from={cfg.init_from} holds {' '.join(f'{f}={getattr(have, f)}' for f in differ)} but this run's "
            f"model has {' '.join(f'{f}={getattr(want, f)}' for f in differ)}; "
            + (f"use model={name}" if name else "set the model.* fields to the checkpoint's")
        )
    tokenizer = _tokenizer_name(ckpt)
    if tokenizer and tokenizer != cfg.data.tokenizer:
        raise BigtrainError(
            f"init_from={cfg.init_from} was trained with data.tokenizer={tokenizer} but this run has "
            f"data.tokenizer={cfg.data.tokenizer}; set data.tokenizer={tokenizer} so token ids keep their meaning"
        )
    if cfg.data.tokenizer == "bpe" and not cfg.data.prepared_dir:
        raise BigtrainError(
            f"init_from={cfg.init_from} with data.tokenizer=bpe would train a new BPE vocabulary on the new data, "
            f"whose ids differ from the checkpoint's; fine-tune with data.tokenizer=byte or gpt2, or pass "
            f"data.prepared_dir=<data prepared with the checkpoint's tokenizer>"
        )
    return ckpt


def _tokenizer_name(ckpt: Checkpoint) -> str | None:
    if ckpt.kind == "hf":
        import json

        return (json.loads((ckpt.path / "config.json").read_text()).get("bigtrain") or {}).get("tokenizer")
    return (ckpt.run_config.get("data") or {}).get("tokenizer")
