"""`task=quantize`: post-training int8 quantization of a checkpoint (torchao), measured on disk and in perplexity.

    python -m bigtrain task=quantize ckpt=runs/DATE/TIME                                # int8 weights -> model-int8.pt
    python -m bigtrain task=quantize ckpt=runs/DATE/TIME quantize.scheme=int8-dynamic   # int8 activations too
    python -m bigtrain task=eval ckpt=RUN_DIR/model-int8.pt                             # eval and generate load it

The float model and the quantized one (read back from the file just written, through the loader eval and generate
use) score the same first quantize.eval_tokens tokens of the checkpoint's validation split; the summary gives the
size on disk of both (the float weights saved alone, as torch.save of the state dict, not the training checkpoint
with its optimizer) and both perplexities. Writes RUN_DIR/summary.json.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from bigtrain.checkpoint_io import load_model, locate, require_float
from bigtrain.config import validate
from bigtrain.errors import BigtrainError


def run(cfg, run_dir: Path) -> dict:
    from bigtrain.quantization import file_bytes, quantize_model, save_quantized
    from bigtrain.tasks.eval import eval_tokens, score
    from bigtrain.training.summary import print_summary, write_summary

    validate(cfg)
    started = time.perf_counter()
    q = cfg.quantize
    ckpt = require_float(locate(cfg.ckpt), "ckpt")
    if ckpt.kind == "hf" or not ckpt.run_config:
        raise BigtrainError(
            f"ckpt={cfg.ckpt} carries no bigtrain run config (its tokenizer and data); quantize a checkpoint bigtrain "
            f"trained (for a Hugging Face folder: fine-tune it with init_from=... first)"
        )
    tokens = None
    if q.eval_tokens:
        tokens, source = eval_tokens(cfg, ckpt)
        tokens = tokens[: q.eval_tokens + 1]
    model = load_model(ckpt)  # fp32, CPU, eval mode
    run_dir.mkdir(parents=True, exist_ok=True)
    fp32_path = run_dir / ".model-fp32.pt"  # measured, then removed: the float weights as a plain state dict
    torch.save(model.state_dict(), fp32_path)
    fp32_bytes = file_bytes(fp32_path)
    fp32_path.unlink()

    progress = cfg.trainer.progress
    fp32_loss = _mean_loss(score, model, tokens, cfg.eval.batch_size, progress)
    quantize_model(model, q.scheme)
    out = Path(q.out).expanduser() if q.out else run_dir / "model-int8.pt"
    save_quantized(model, out, q.scheme, ckpt.run_config)
    reloaded = load_model(locate(out))  # the loader task=eval and task=generate use
    int8_loss = _mean_loss(score, reloaded, tokens, cfg.eval.batch_size, progress)
    int8_bytes = file_bytes(out)

    n_int8 = sum(1 for _ in _int8_tensors(reloaded))
    summary = {
        "ckpt": str(ckpt.path),
        "out": str(out),
        "scheme": q.scheme,
        "library": "torchao",
        "n_params": model.num_params(),
        "int8_matrices": n_int8,
        "fp32_bytes": fp32_bytes,
        "int8_bytes": int8_bytes,
        "size_ratio": fp32_bytes / int8_bytes,
        "eval_source": source if tokens is not None else None,
        "eval_tokens": len(tokens) - 1 if tokens is not None else 0,
        "fp32_val_loss": fp32_loss,
        "int8_val_loss": int8_loss,
        "fp32_perplexity": math.exp(fp32_loss) if fp32_loss is not None else None,
        "int8_perplexity": math.exp(int8_loss) if int8_loss is not None else None,
        "perplexity_change": math.exp(int8_loss - fp32_loss) - 1 if fp32_loss is not None else None,
        "wall_s": time.perf_counter() - started,
    }
    write_summary(run_dir, summary)
    print_summary(summary, title="bigtrain quantize summary")
    return summary


def _mean_loss(score, model, tokens, batch_size: int, progress: bool) -> float | None:
    if tokens is None:
        return None
    total, count = score(model, tokens, batch_size, progress=progress)
    return total / count


def _int8_tensors(model):
    from bigtrain.quantization import _is_quantized

    return (p for p in model.parameters() if _is_quantized(p))
