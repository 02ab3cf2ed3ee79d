"""`task=consolidate ckpt=RUN/checkpoints/last.ckpt`: a sharded DeepSpeed (ZeRO 1-3), FSDP, tensor-parallel or
pipeline checkpoint, or a plain one, -> RUN_DIR/consolidated.pt: one fp32 state dict that the plain `bigtrain.model.GPT` loads as is.

The merge is bigtrain.checkpoint_io's (DeepSpeed's zero_to_fp32 / torch.distributed.checkpoint, tensor parallel's
q/k/v and a pipeline's stages joined by bigtrain/parallel/neutral.py; no process group);
the file holds {"state_dict": ..., "model": the GPTConfig fields}:

    sd = torch.load("consolidated.pt"); gpt = GPT(GPTConfig(**sd["model"])); gpt.load_state_dict(sd["state_dict"])
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

OUTPUT = "consolidated.pt"


def run(cfg, run_dir: Path) -> dict:
    from bigtrain.checkpoint_io import load_model, locate

    ckpt = locate(cfg.ckpt)
    gpt = load_model(ckpt)  # fp32, every key and shape checked against the architecture
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / OUTPUT
    torch.save({"state_dict": gpt.state_dict(), "model": asdict(gpt.config)}, out)
    result = {"checkpoint": str(ckpt.path), "kind": ckpt.kind, "consolidated": str(out), "n_params": gpt.num_params()}
    print(f"consolidated {ckpt.kind} checkpoint {ckpt.path} -> {out} ({result['n_params']:,} parameters, fp32)")
    return result
