"""`task=consolidate trainer.ckpt_path=RUN/checkpoints/last.ckpt`: a sharded (DeepSpeed / FSDP) or plain checkpoint
-> RUN_DIR/consolidated.pt, one fp32 state dict that `bigtrain.model.GPT` loads as is.

The file holds {"state_dict": ..., "model": the GPT's model config}; the model config comes from the training
run's recorded config.yaml (next to its checkpoints/ folder) when there is one, else from this command's `model=`.

    sd = torch.load("consolidated.pt"); gpt = GPT(gpt_config_from(sd["model"])); gpt.load_state_dict(sd["state_dict"])
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from bigtrain.errors import ConfigError

OUTPUT = "consolidated.pt"


def run(cfg, run_dir: Path) -> dict:
    from bigtrain.model import GPT, gpt_config_from
    from bigtrain.parallel.consolidate import consolidated_state_dict

    if not cfg.trainer.ckpt_path:
        raise ConfigError("task=consolidate needs trainer.ckpt_path=RUN/checkpoints/last.ckpt (a checkpoint to read)")
    ckpt = Path(cfg.trainer.ckpt_path)
    if not ckpt.exists():
        raise ConfigError(f"trainer.ckpt_path={ckpt} does not exist; point it at a run's checkpoints/*.ckpt")
    recorded = ckpt.resolve().parent.parent / "config.yaml"
    model_cfg = OmegaConf.load(recorded).model if recorded.is_file() else cfg.model
    state = consolidated_state_dict(ckpt)
    gpt = GPT(gpt_config_from(model_cfg))
    gpt.load_state_dict(state)  # strict: proves the plain model takes it
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / OUTPUT
    torch.save({"state_dict": state, "model": OmegaConf.to_container(model_cfg, resolve=True)}, out)
    result = {"checkpoint": str(ckpt), "consolidated": str(out), "n_params": gpt.num_params()}
    print(f"consolidated {ckpt} -> {out} ({result['n_params']:,} parameters, fp32)")
    return result
