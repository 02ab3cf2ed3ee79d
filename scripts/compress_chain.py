"""Smaller models from a big one, measured: train tiny, distill nano from it, quantize both, one table.

    python scripts/compress_chain.py                              # everything on the CPU default (~10 min, 2 cores)
    python scripts/compress_chain.py --teacher runs/tiny          # reuse a trained tiny (or any bigtrain run)
    python scripts/compress_chain.py --steps 200 --out /tmp/chain # a shorter distillation

Every row is a real `python -m bigtrain` run into its own folder under --out: the teacher (recipe=cpu-tiny), nano
trained alone and nano distilled (recipe=distill-nano) with the same steps, data and seed, and task=quantize of each
(int8 weight-only, torchao). Size on disk is the weights alone (fp32 state dict vs the int8 file); validation loss
and perplexity are scored on the same first --eval-tokens tokens of the validation split for every row; generation
speed is task=generate with the KV cache, greedy, --gen-tokens new tokens after "def " (one process, so on a shared
machine the speeds are noisy; compare rows of one run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def bigtrain(run_dir: Path, *overrides: str) -> dict:
    """Run `python -m bigtrain OVERRIDES` into run_dir (kept when it already holds a summary) and read the JSON the
    task writes there."""
    result = run_dir / ("generated.json" if "task=generate" in overrides else "summary.json")
    if not result.is_file():
        cmd = [sys.executable, "-m", "bigtrain", *overrides, f"hydra.run.dir={run_dir}"]
        print("$ " + " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL if "task=generate" in overrides else None)
    return json.loads(result.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "compress-chain")
    ap.add_argument("--teacher", type=Path, default=None, help="a trained bigtrain run to distill from")
    ap.add_argument("--steps", type=int, default=500, help="steps of nano alone and of the distillation")
    ap.add_argument("--eval-tokens", type=int, default=131072)
    ap.add_argument("--gen-tokens", type=int, default=256)
    args = ap.parse_args()
    out = args.out.resolve()
    os.environ.setdefault("WANDB_MODE", "offline")
    quiet = ["trainer.progress=false"]

    teacher = args.teacher.resolve() if args.teacher else out / "tiny"
    if args.teacher is None:
        bigtrain(teacher, "recipe=cpu-tiny", *quiet)
    nano = [f"trainer.max_steps={args.steps}", *quiet]
    runs = {
        "tiny (teacher)": teacher,
        "nano alone": out / "nano-alone",
        "nano distilled": out / "nano-distilled",
    }
    trained = {"tiny (teacher)": None}
    trained["nano alone"] = bigtrain(runs["nano alone"], "model=nano", *nano)
    trained["nano distilled"] = bigtrain(runs["nano distilled"], "recipe=distill-nano", f"teacher={teacher}", *nano)

    rows = []
    gen = ['prompt="def "', f"generate.max_new_tokens={args.gen_tokens}", "generate.temperature=0"]
    gen += ["generate.stream=false"]
    for name, run_dir in runs.items():
        q = bigtrain(
            out / f"{run_dir.name}-int8",
            "task=quantize",
            f"ckpt={run_dir}",
            f"quantize.eval_tokens={args.eval_tokens}",
            *quiet,
        )
        fp32_gen = bigtrain(out / f"{run_dir.name}-gen-fp32", "task=generate", f"ckpt={run_dir}", *gen)
        int8_gen = bigtrain(out / f"{run_dir.name}-gen-int8", "task=generate", f"ckpt={q['out']}", *gen)
        steps = (trained[name] or {}).get("steps")
        rows.append(
            (f"{name} fp32", q["n_params"], q["fp32_bytes"], q["fp32_val_loss"], fp32_gen["tokens_per_s"], steps)
        )
        rows.append(
            (f"{name} int8", q["n_params"], q["int8_bytes"], q["int8_val_loss"], int8_gen["tokens_per_s"], steps)
        )
    print_table(rows, args.eval_tokens)
    (out / "table.json").write_text(json.dumps(rows, indent=2))
    return 0


def print_table(rows: list[tuple], eval_tokens: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"compress chain (val loss on the first {eval_tokens:,} validation tokens)")
    for col in ("model", "parameters", "size on disk", "val loss", "perplexity", "gen tokens/s"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for name, n, size, loss, speed, _ in rows:
        table.add_row(name, f"{n:,}", f"{size / 1e6:.2f} MB", f"{loss:.4f}", f"{math.exp(loss):.2f}", f"{speed:,.0f}")
    Console(width=110).print(table)  # the whole table, also when the output is not a terminal


if __name__ == "__main__":
    sys.exit(main())
