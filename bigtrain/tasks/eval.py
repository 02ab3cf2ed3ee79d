"""`task=eval`: a checkpoint's loss and perplexity on its run's validation split, or on given text files.

    python -m bigtrain task=eval ckpt=runs/.../checkpoints/last.ckpt                       # the prepared val split
    python -m bigtrain task=eval ckpt=... 'eval.files=[notes.txt,more.txt]'                # your own text

The tokens are cut into consecutive windows of block_size + 1 (each window's first token has no context, as in
training) plus a shorter last window, and every predicted token counts once: loss is the mean next-token
cross-entropy in nats, perplexity = exp(loss). Writes RUN_DIR/eval.json and prints the same JSON.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bigtrain.checkpoint_io import load_model, locate, tokenizer_of
from bigtrain.config import validate
from bigtrain.errors import DataError


def eval_tokens(cfg, ckpt) -> tuple[np.ndarray, str]:
    """The token stream to score and a description of where it came from."""
    if cfg.eval.files:
        tokenizer = tokenizer_of(ckpt, cfg.data.prepared_dir)
        parts = []
        for name in cfg.eval.files:
            path = Path(name).expanduser()
            if not path.is_file():
                raise DataError(f"eval.files entry {name} does not exist; pass UTF-8 text files")
            parts.append(np.asarray(tokenizer.encode(path.read_text(encoding="utf-8")), dtype=np.int64))
        return np.concatenate(parts), f"files {', '.join(cfg.eval.files)}"
    from bigtrain.data import read_meta

    folder = cfg.data.prepared_dir or (ckpt.run_config.get("data") or {}).get("prepared_dir")
    if not folder or not (Path(folder) / "meta.json").is_file():
        raise DataError(
            f"{ckpt.path} has no prepared validation split to score ({folder}); "
            f"pass eval.files=[...] or data.prepared_dir=<a prepared dataset>"
        )
    meta = read_meta(Path(folder))
    return np.memmap(Path(folder) / "val.bin", dtype=meta["dtype"], mode="r"), f"val split of {folder}"


def windows(n_tokens: int, block_size: int) -> list[tuple[int, int]]:
    """(start, length) of consecutive input windows covering tokens [0, n_tokens - 1) (the last has no target)."""
    return [(s, min(block_size, n_tokens - 1 - s)) for s in range(0, n_tokens - 1, block_size)]


@torch.no_grad()
def score(model, tokens: np.ndarray, batch_size: int, progress: bool = True) -> tuple[float, int]:
    """(summed cross-entropy in nats, number of predicted tokens) over `tokens`."""
    from rich.progress import Progress

    block, device = model.config.block_size, next(model.parameters()).device
    spans = windows(len(tokens), block)
    full = [s for s, n in spans if n == block]
    tail = [(s, n) for s, n in spans if n < block]
    total, count = 0.0, 0
    batches = [full[i : i + batch_size] for i in range(0, len(full), batch_size)]
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task("scoring", total=len(batches) + len(tail))
        for starts in batches:
            chunk = torch.from_numpy(np.stack([tokens[s : s + block + 1] for s in starts]).astype(np.int64)).to(device)
            logits, _ = model(chunk[:, :-1])
            total += float(F.cross_entropy(logits.flatten(0, 1).float(), chunk[:, 1:].flatten(), reduction="sum"))
            count += chunk[:, 1:].numel()
            bar.advance(task)
        for s, n in tail:
            chunk = torch.from_numpy(np.asarray(tokens[s : s + n + 1], dtype=np.int64))[None].to(device)
            logits, _ = model(chunk[:, :-1])
            total += float(F.cross_entropy(logits[0].float(), chunk[0, 1:], reduction="sum"))
            count += n
            bar.advance(task)
    return total, count


def run(cfg, run_dir: Path) -> dict:
    validate(cfg)
    started = time.perf_counter()
    ckpt = locate(cfg.ckpt)
    tokens, source = eval_tokens(cfg, ckpt)
    available = len(tokens) - 1  # predicted tokens: every token but the first has a target
    if cfg.eval.max_tokens is not None and available > cfg.eval.max_tokens:
        tokens = tokens[: cfg.eval.max_tokens + 1]
        print(f"eval: scoring the first {cfg.eval.max_tokens:,} of {available:,} tokens (eval.max_tokens=null: all)")
    if len(tokens) < 2:
        raise DataError(f"{source} holds {len(tokens)} tokens; scoring needs at least 2")
    if int(tokens.max()) >= ckpt.gpt_config.vocab_size:
        raise DataError(
            f"{source} has token id {int(tokens.max())} >= the model's vocab_size={ckpt.gpt_config.vocab_size}"
        )
    model = load_model(ckpt)
    model.to("cuda" if cfg.hardware.accelerator == "gpu" and torch.cuda.is_available() else "cpu")
    total, count = score(model, tokens, cfg.eval.batch_size, progress=cfg.trainer.progress)
    loss = total / count
    wall = time.perf_counter() - started
    result = {
        "ckpt": str(ckpt.path),
        "source": source,
        "tokens": count,
        "loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_token": loss / math.log(2),
        "wall_s": wall,
        "tokens_per_s": count / wall,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result
