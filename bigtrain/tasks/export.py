"""`task=export`: a checkpoint -> a Hugging Face directory that transformers loads offline: GPT2LMHeadModel for a
GPT-2-shaped model, LlamaForCausalLM for a Llama-shaped one (bigtrain.hf picks the module).

    python -m bigtrain task=export ckpt=runs/.../checkpoints/last.ckpt export.out_dir=my-gpt
    python -c "from transformers import AutoModelForCausalLM; AutoModelForCausalLM.from_pretrained('my-gpt')"

Writes config.json, model.safetensors and the tokenizer (see bigtrain.hf). Any checkpoint kind works,
including a Hugging Face directory (import + export again), so ckpt=<hf dir> round-trips.
"""

from __future__ import annotations

from pathlib import Path

from bigtrain.checkpoint_io import load_model, locate, require_float, tokenizer_of
from bigtrain.config import validate
from bigtrain.hf import check_exportable, write_hf_dir


def run(cfg, run_dir: Path) -> dict:
    validate(cfg)
    ckpt = require_float(locate(cfg.ckpt), "ckpt")
    check_exportable(ckpt.gpt_config)  # before reading any weights
    out = Path(cfg.export.out_dir).expanduser() if cfg.export.out_dir else run_dir / "hf"
    tokenizer, meta = _tokenizer_and_meta(cfg, ckpt)
    model = load_model(ckpt)
    files = write_hf_dir(model, out, tokenizer, meta)
    info = {"ckpt": str(ckpt.path), "out_dir": str(out), "files": files, "n_params": model.num_params()}
    if meta.get("tokenizer") is None:
        info["note"] = "no tokenizer exported: the checkpoint's prepared data (its tokenizer) was not found"
    print(f"exported {ckpt.path} -> {out} ({', '.join(files)})")
    return info


def _tokenizer_and_meta(cfg, ckpt) -> tuple[object | None, dict]:
    """The checkpoint's tokenizer and its prepared data's meta.json; (None, {}) when that data is gone."""
    from bigtrain.errors import DataError

    if ckpt.kind == "hf":
        import json

        name = (json.loads((ckpt.path / "config.json").read_text()).get("bigtrain") or {}).get("tokenizer")
        tokenizer = tokenizer_of(ckpt) if (ckpt.path / "tokenizer.json").is_file() else None
        return tokenizer, {"tokenizer": name if tokenizer is not None else None}
    try:
        tokenizer = tokenizer_of(ckpt, cfg.data.prepared_dir)
    except DataError:
        return None, {}
    from bigtrain.data import read_meta

    folder = cfg.data.prepared_dir or ckpt.run_config["data"]["prepared_dir"]
    return tokenizer, read_meta(Path(folder))
