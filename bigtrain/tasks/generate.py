"""`task=generate`: continue a prompt with a trained model, streaming the text to the terminal.

    python -m bigtrain task=generate ckpt=runs/.../checkpoints/last.ckpt prompt="def " generate.max_new_tokens=200

The model and its tokenizer come from the checkpoint (see bigtrain.checkpoint_io); sampling settings from the
`generate` node (temperature 0 is greedy). Writes RUN_DIR/generated.json with the prompt, completions and settings. Hydra trims unquoted values, so
a prompt ending in a space needs quotes inside the override: 'prompt="def "'.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from bigtrain.checkpoint_io import load_model, locate, tokenizer_of
from bigtrain.config import validate
from bigtrain.errors import BigtrainError, ConfigError


def read_prompt(cfg) -> str:
    if cfg.prompt_file is not None:
        path = Path(cfg.prompt_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"prompt_file={cfg.prompt_file} does not exist; pass a UTF-8 text file or prompt=TEXT")
        return path.read_text(encoding="utf-8")
    return cfg.prompt


def encode_prompt(tokenizer, text: str, block_size: int) -> torch.Tensor:
    """(1, T) prompt ids, refusing an empty prompt or one longer than the model's context."""
    ids = [int(i) for i in tokenizer.encode(text)]
    if not ids:
        raise ConfigError("the prompt is empty (0 tokens); pass prompt=TEXT with at least one character")
    if len(ids) > block_size:
        raise ConfigError(
            f"the prompt is {len(ids)} tokens but the model's context (block_size) is {block_size}; "
            f"shorten it to at most {block_size} tokens"
        )
    return torch.tensor(ids, dtype=torch.long)[None]


class StreamPrinter:
    """Prints decoded text as tokens arrive. A byte tokenizer can split one character over several tokens, so
    the text is decoded whole each time and a trailing incomplete character waits for its next byte."""

    def __init__(self, tokenizer, out=sys.stdout):
        self.tokenizer, self.out = tokenizer, out
        self.ids: list[int] = []
        self.printed = 0

    def add(self, token: int) -> None:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):
            return
        self.out.write(text[self.printed :])
        self.out.flush()
        self.printed = len(text)

    def finish(self) -> str:
        """Print what is still held back (a character the sample ended inside) and return the whole text."""
        text = self.tokenizer.decode(self.ids)
        self.out.write(text[self.printed :])
        self.out.flush()
        self.printed = len(text)
        return text


def run(cfg, run_dir: Path) -> dict:
    validate(cfg)
    g = cfg.generate
    prompt = read_prompt(cfg)
    ckpt = locate(cfg.ckpt)
    tokenizer = tokenizer_of(ckpt, cfg.data.prepared_dir)
    idx = encode_prompt(tokenizer, prompt, ckpt.gpt_config.block_size)
    model = load_model(ckpt)
    if ckpt.gpt_config.vocab_size < getattr(tokenizer, "vocab_size", 0):
        raise BigtrainError(f"{ckpt.path} has vocab_size={ckpt.gpt_config.vocab_size}, smaller than its tokenizer's")
    device = torch.device("cuda" if cfg.hardware.accelerator == "gpu" and torch.cuda.is_available() else "cpu")
    model.to(device)
    idx = idx.to(device)

    samples, started, n_tokens = [], time.perf_counter(), 0
    for i in range(g.num_samples):
        # One generator seeded once: sample i is a pure function of (checkpoint, prompt, settings, seed, i).
        generator = torch.Generator(device=device).manual_seed(g.seed + i)
        printer = StreamPrinter(tokenizer, sys.stdout if g.stream else _Discard())
        if g.stream:
            sys.stdout.write(("\n---\n" if i else "") + prompt)
        for token in model.generate_tokens(
            idx, g.max_new_tokens, g.temperature, g.top_k, g.top_p, generator, kv_cache=g.kv_cache
        ):
            printer.add(int(token[0, 0]))
            n_tokens += 1
        samples.append(printer.finish())
    wall = time.perf_counter() - started
    if g.stream:
        sys.stdout.write("\n")
    result = {
        "ckpt": str(ckpt.path),
        "prompt": prompt,
        "completions": samples,  # the text after the prompt, one per sample
        "settings": {k: g[k] for k in g},
        "new_tokens": n_tokens,
        "tokens_per_s": n_tokens / wall if wall > 0 else None,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "generated.json").write_text(json.dumps(result, indent=2))
    if not g.stream:
        print("\n---\n".join(prompt + s for s in samples))
    return result


class _Discard:
    def write(self, _: str) -> None:
        pass

    def flush(self) -> None:
        pass
