"""GPU check: gpt2-124m for a few dozen bf16 steps under each ZeRO stage / offload mode; tokens/s and peak memory.

    python scripts/gpu_zero_matrix.py                      # every visible GPU, 40 steps per row
    python scripts/gpu_zero_matrix.py --devices 1 --steps 30 --nvme-path /local_nvme/swap

Each row is one real `python -m bigtrain` run (Lightning + DeepSpeed / FSDP on NCCL) into its own run directory
under --out; the table is read from the runs' summary.json (tokens/s across all ranks, first step excluded; peak
torch.cuda.max_memory_allocated over ranks). Data is the built-in corpus with the byte tokenizer, so it needs no
network. Refuses to run without CUDA: the CPU paths are covered by tests/test_zero.py.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ROWS: list[tuple[str, list[str]]] = [
    ("ddp", ["parallelism=ddp"]),
    ("deepspeed zero=0", ["parallelism=deepspeed", "zero=0"]),
    ("deepspeed zero=1", ["parallelism=deepspeed", "zero=1"]),
    ("deepspeed zero=2", ["parallelism=deepspeed", "zero=2"]),
    ("deepspeed zero=3", ["parallelism=deepspeed", "zero=3"]),
    ("deepspeed zero=2 offload=cpu", ["parallelism=deepspeed", "zero=2", "offload=cpu"]),
    ("deepspeed zero=3 offload=cpu", ["parallelism=deepspeed", "zero=3", "offload=cpu"]),
    ("deepspeed zero=3 offload=cpu-params", ["parallelism=deepspeed", "zero=3", "offload=cpu-params"]),
    ("fsdp zero=2", ["parallelism=fsdp", "zero=2"]),
    ("fsdp zero=3", ["parallelism=fsdp", "zero=3"]),
]


def main() -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=None, help="GPUs to use (default: all visible)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--nvme-path", default=None, help="a folder on a local NVMe disk: adds a zero=3 offload=nvme row")
    ap.add_argument("--out", default=str(REPO / "runs" / "gpu_zero_matrix" / time.strftime("%Y-%m-%d_%H-%M-%S")))
    ap.add_argument("--only", default=None, help="run only rows whose label contains this text")
    args = ap.parse_args()

    if not torch.cuda.is_available():
        print("gpu_zero_matrix: no CUDA device here; this check needs NVIDIA GPUs (CPU runs: tests/test_zero.py)")
        return 2
    devices = args.devices or torch.cuda.device_count()
    rows = list(ROWS)
    if args.nvme_path:
        rows.append(
            (
                "deepspeed zero=3 offload=nvme",
                ["parallelism=deepspeed", "zero=3", "offload=nvme", f"offload.nvme_path={args.nvme_path}"],
            )
        )
    if args.only:
        rows = [r for r in rows if args.only in r[0]]
    common = [
        "model=gpt2-124m",
        "hardware=h100-80g-x8",
        f"hardware.devices={devices}",
        "trainer.precision=bf16-mixed",
        "data.tokenizer=byte",
        f"trainer.max_steps={args.steps}",
        f"trainer.micro_batch_size={args.micro_batch}",
        f"trainer.global_batch_size={args.micro_batch * devices}",
        f"trainer.val_check_interval={args.steps}",
        "trainer.val_batches=2",
        f"trainer.log_every_n_steps={max(args.steps // 4, 1)}",
        "trainer.checkpoint_every_n_steps=0",
        "trainer.sample_tokens=0",
        "trainer.progress=false",
        "optim.warmup_steps=5",
    ]
    out = Path(args.out)
    print(
        f"{torch.cuda.get_device_name(0)} x {devices}, gpt2-124m bf16, {args.steps} steps, micro-batch {args.micro_batch}"
    )
    results = []
    for label, overrides in rows:
        run_dir = out / label.replace(" ", "_").replace("=", "")
        cmd = [sys.executable, "-m", "bigtrain", *common, *overrides, f"hydra.run.dir={run_dir}"]
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - t
        summary_path = run_dir / "summary.json"
        if proc.returncode != 0 or not summary_path.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
            results.append((label, None, None, None, wall, f"failed (exit {proc.returncode}): {tail[0][:120]}"))
        else:
            s = json.loads(summary_path.read_text())
            results.append((label, s["tokens_per_s"], s["peak_memory_bytes"] / 2**30, s["final_val_loss"], wall, "ok"))
        print(_row(*results[-1]), flush=True)
    print()
    print(f"{'config':<38} {'tokens/s':>10} {'peak GiB':>9} {'val loss':>9} {'wall s':>7}  status")
    for r in results:
        print(_row(*r))
    return 0 if all(r[-1] == "ok" for r in results) else 1


def _row(label, tps, peak, loss, wall, status) -> str:
    f = lambda v, spec: format(v, spec) if v is not None else "-"  # noqa: E731
    return f"{label:<38} {f(tps, '10,.0f'):>10} {f(peak, '9.2f'):>9} {f(loss, '9.4f'):>9} {wall:7.0f}  {status}"


if __name__ == "__main__":
    sys.exit(main())
