"""Post-training int8 quantization of a GPT with torchao, and its checkpoint format.

Schemes (torchao's configs, applied to every linear layer of the blocks):
    int8-weight-only  int8 weights, one fp32 scale per output row (symmetric); activations stay float, the weight is
                      dequantized in the matmul. About 4x smaller linear layers, on any device.
    int8-dynamic      also quantizes each activation row to int8 at run time (int8 x int8 matmuls; fast where the
                      backend has int8 kernels, a slow fallback on CPU with torch alone).
The token table stays float: it doubles as the output layer (tied), and an embedding lookup gains nothing from int8.

The file is plain tensors and metadata, loadable with torch.load(weights_only=True) and without torchao:
    {"format": "bigtrain-int8/1", "quantization": {"scheme", "library", "version", "granularity"},
     "state_dict": {name: float tensor}, "int8": {name: {"qdata": int8, "scale": fp32, "zero_point": int8}},
     "bigtrain_config": the source run's config}
Loading rebuilds torchao's quantized tensors from those pieces; where torchao is missing it dequantizes them to fp32
(same numbers, no memory saving) so eval and generate still work.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from bigtrain.errors import BigtrainError
from bigtrain.model import GPT, GPTConfig

FORMAT = "bigtrain-int8/1"
QUANTIZATION_KEY = "quantization"  # its presence marks a quantized checkpoint (bigtrain.checkpoint_io)
SCHEMES = ("int8-weight-only", "int8-dynamic")


def _quiet_torchao() -> None:
    """torchao logs a warning per optional CUDA/Triton kernel library a CPU build lacks, and trips a torch
    deprecation warning at import: expected here, and noise in every eval and generate of an int8 file."""
    import logging

    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _torchao_config(scheme: str):
    _quiet_torchao()
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig

    return {"int8-weight-only": Int8WeightOnlyConfig, "int8-dynamic": Int8DynamicActivationInt8WeightConfig}[scheme]()


def _quantizable(module: nn.Module, fqn: str) -> bool:
    # lm_head shares its weight with the token table (tied): quantizing it would untie them and store both.
    return isinstance(module, nn.Linear) and fqn != "lm_head"


def quantize_model(model: GPT, scheme: str) -> GPT:
    """Quantize the model's block linears in place with torchao (model in eval mode, on its device)."""
    if scheme not in SCHEMES:
        raise BigtrainError(f"quantize.scheme={scheme} is unknown; valid: {', '.join(SCHEMES)}")
    import warnings

    _quiet_torchao()
    from torchao.quantization import quantize_

    with warnings.catch_warnings():  # torchao warns about its optional CUDA extensions on a CPU-only build
        warnings.simplefilter("ignore")
        quantize_(model, _torchao_config(scheme), filter_fn=_quantizable)
    return model


def _is_quantized(t: torch.Tensor) -> bool:
    return type(t) is not torch.Tensor and type(t) is not nn.Parameter and hasattr(t, "__tensor_flatten__")


def quantized_blob(model: GPT, scheme: str, run_config: dict) -> dict:
    """The checkpoint dict of a quantized model (plain tensors + metadata, see the module docstring)."""
    import torchao

    plain, int8 = {}, {}
    for name, tensor in model.state_dict().items():
        if _is_quantized(tensor):
            inner, _ = tensor.__tensor_flatten__()
            int8[name] = {k: getattr(tensor, k).detach().cpu().contiguous() for k in inner}
        else:
            plain[name] = tensor.detach().cpu()
    if not int8:
        raise BigtrainError("quantization left every layer in float; nothing to write")
    return {
        "format": FORMAT,
        QUANTIZATION_KEY: {
            "scheme": scheme,
            "library": "torchao",
            "version": torchao.__version__,
            "granularity": "per-row",  # one scale (and zero point, 0: symmetric) per output row
        },
        "state_dict": plain,
        "int8": int8,
        "bigtrain_config": run_config,
    }


def save_quantized(model: GPT, path: Path, scheme: str, run_config: dict) -> Path:
    from bigtrain.atomic import atomic_write

    blob = quantized_blob(model, scheme, run_config)
    atomic_write(path, lambda f: torch.save(blob, f))
    return path


def load_quantized(blob: dict, config: GPTConfig, source: Path | str, load_weights) -> GPT:
    """The quantized GPT of a bigtrain-int8 checkpoint, on CPU in eval mode (see the module docstring).
    `load_weights(model, state, source)` is checkpoint_io's checked copy (passed in: checkpoint_io imports this
    module, so this one does not import it back)."""
    if blob.get("format") != FORMAT:
        raise BigtrainError(
            f"{source} is a quantized checkpoint of format {blob.get('format')}; this build reads {FORMAT}"
        )
    scheme = blob[QUANTIZATION_KEY]["scheme"]
    int8 = blob["int8"]
    model = GPT(config)
    # Float tensors first (the quantized ones dequantized: one code path checks every name and shape), then the
    # int8 pieces replace the linear weights as torchao tensors.
    load_weights(model, {**blob["state_dict"], **{k: dequantize(v) for k, v in int8.items()}}, source)
    model.eval()
    try:
        quantize_model(model, scheme)
    except ImportError:
        import warnings

        warnings.warn(f"torchao is not installed: {source} runs dequantized to fp32", stacklevel=2)
        return model
    for name, pieces in int8.items():
        module = model.get_submodule(name.rsplit(".", 1)[0])
        fresh = module.weight
        inner, meta = fresh.__tensor_flatten__()
        if set(inner) != set(pieces):
            written = blob[QUANTIZATION_KEY].get("version")
            raise BigtrainError(
                f"{source}: {name} was written by torchao {written} as {sorted(pieces)}, but this torchao's "
                f"{type(fresh).__name__} is made of {sorted(inner)}; load it with torchao {written}"
            )
        for k in inner:
            if tuple(pieces[k].shape) != tuple(getattr(fresh, k).shape):
                raise BigtrainError(
                    f"{source}: {name}.{k} has shape {tuple(pieces[k].shape)}, torchao expects "
                    f"{tuple(getattr(fresh, k).shape)} for scheme {scheme}"
                )
        weight = type(fresh).__tensor_unflatten__({k: pieces[k] for k in inner}, meta, fresh.size(), fresh.stride())
        module.weight = nn.Parameter(weight, requires_grad=False)
    return model


def dequantize(pieces: dict) -> torch.Tensor:
    """fp32 weight of one quantized matrix: (qdata - zero_point) x scale, per output row."""
    q, scale = pieces["qdata"].float(), pieces["scale"].float()
    zero = pieces.get("zero_point")
    if zero is not None:
        q = q - zero.float()
    return q * scale.reshape(q.shape[0], -1)


def file_bytes(path: Path) -> int:
    return Path(path).stat().st_size
