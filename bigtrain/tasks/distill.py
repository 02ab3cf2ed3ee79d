"""`task=distill`: train the `model` group's GPT (the student) on a frozen teacher's soft targets.

    python -m bigtrain task=distill teacher=runs/tiny model=nano distill.alpha=0.5 distill.temperature=2

The teacher is any checkpoint bigtrain reads (see bigtrain.checkpoint_io). This task checks that teacher and student
speak the same tokens, records the teacher's architecture in the config (the planner reads it), and runs the train
task's own path, which picks the distillation module (bigtrain/training/distill.py) for task=distill.
"""

from __future__ import annotations

from pathlib import Path

from bigtrain.config import validate
from bigtrain.errors import BigtrainError


def run(cfg, run_dir: Path) -> dict:
    from bigtrain.tasks import train

    validate(cfg, launching=True)
    teacher = check_teacher(cfg)
    record_teacher_model(cfg, teacher)
    if cfg.data.tokenizer == "bpe":
        cfg.data.prepared_dir = str(train.prepared_data(cfg))  # the student's vocabulary, to compare
        check_same_bpe(cfg, teacher)
    return train.run(cfg, run_dir)


def check_teacher(cfg):
    """The teacher checkpoint, after checking its logits can be compared with the student's token for token."""
    from bigtrain.checkpoint_io import _tokenizer_name, locate, require_float
    from bigtrain.model import gpt_config_from

    ckpt = require_float(locate(cfg.teacher, "teacher"), "teacher")
    t, s = ckpt.gpt_config, gpt_config_from(cfg.model)
    if t.vocab_size != s.vocab_size:
        raise BigtrainError(
            f"teacher={cfg.teacher} has vocab_size={t.vocab_size} but the student (model={cfg.model.name}) has "
            f"model.vocab_size={s.vocab_size}; distillation compares the two distributions over one vocabulary: "
            f"set model.vocab_size={t.vocab_size} and train with the teacher's tokenizer"
        )
    tokenizer = _tokenizer_name(ckpt)
    if tokenizer and tokenizer != cfg.data.tokenizer:
        raise BigtrainError(
            f"teacher={cfg.teacher} was trained with data.tokenizer={tokenizer} but this run has "
            f"data.tokenizer={cfg.data.tokenizer}; set data.tokenizer={tokenizer} so token ids mean the same to both"
        )
    if t.block_size < s.block_size:
        raise BigtrainError(
            f"teacher={cfg.teacher} has block_size={t.block_size}, shorter than the student's "
            f"model.block_size={s.block_size}; the teacher must see the student's whole window: "
            f"set model.block_size<={t.block_size}"
        )
    return ckpt


def check_same_bpe(cfg, teacher) -> None:
    """A BPE vocabulary is learned from its corpus: the student's prepared data must carry the teacher's."""
    folder = (teacher.run_config.get("data") or {}).get("prepared_dir")
    theirs = Path(folder) / "tokenizer.json" if folder else None
    ours = Path(cfg.data.prepared_dir) / "tokenizer.json"
    if theirs is None or not theirs.is_file() or theirs.read_bytes() != ours.read_bytes():
        raise BigtrainError(
            f"teacher={cfg.teacher} has a BPE vocabulary ({theirs}) that is not the one of data.prepared_dir="
            f"{cfg.data.prepared_dir}; pass data.prepared_dir=<the teacher's prepared data> (its tokenizer.json)"
        )


def record_teacher_model(cfg, teacher) -> None:
    """Write the teacher's architecture into cfg.distill.teacher_model (what the planner and the record read)."""
    from dataclasses import asdict

    fields = asdict(teacher.gpt_config)
    name = (teacher.run_config.get("model") or {}).get("name") or Path(str(teacher.path)).name
    node = cfg.distill.teacher_model
    node.name = str(name)
    for key, value in fields.items():
        if key in node and isinstance(value, dict):  # a nested settings block (model.moe): key by key
            for sub, v in value.items():
                if sub in node[key]:
                    node[key][sub] = v
        elif key in node:
            node[key] = value
