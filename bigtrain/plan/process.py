"""What one training process holds besides its model's device terms: the peak memory a run measures, and the host
memory of a node.

The device terms (bigtrain/plan/memory.py: model states, activations, buffers) are what the engine allocates for
the model. What a run measures is more, and differs by accelerator:

- CPU (`hardware.accelerator=cpu`): summary.json measures the process's peak resident set size (ru_maxrss). That
  also holds the process baseline (interpreter, torch's and Lightning's libraries and objects, bigtrain, DeepSpeed
  when used): measured once per install by a fresh interpreter that imports what a run imports
  (bigtrain/training/baseline_probe.py) and cached under ~/.cache/bigtrain, keyed by host and versions; and the
  pages of the memory-mapped token shards the run has read (file-backed pages count in RSS).
- GPU: summary.json measures torch.cuda.max_memory_allocated, which holds the caching allocator's blocks only (no
  CUDA context, no host memory): the device terms plus cuBLAS's workspace, which torch allocates through the
  caching allocator. The process baseline then sits on the host, in the host memory per node.

Both measures also hold, while a layer's backward runs, the gradients of its activations (memory.backward_transient:
one layer's saved activations, Korthikanti's per-layer count), which the activations row (what is saved) leaves out.

Host memory per node, for every layout: the processes' baselines, their data loader workers, the states offloaded to
the host (as the engine holds them, or DeepSpeed's estimator CPU column), the fp32 model each process builds on the
host while loading (DeepSpeed's estimator's load-time term; under zero.Init only one layer), and DeepSpeed's pinned
NVMe swap buffers.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# CPU process baseline when the probe cannot run (no torch here: a planner-only install) or it fails: what the
# probe measured on the reference 2-core VM (torch 2.13 CPU, Lightning 2.x, Python 3.12): 467 MB, +22 MB with
# DeepSpeed imported. A measured constant, used only as a fallback; the table names which one was used.
CPU_BASELINE_BYTES = 467e6
DEEPSPEED_IMPORT_BYTES = 22e6
# GPU process on the host: the CPU baseline plus the CUDA driver's and libraries' host-side state. An assumption
# (not measured here: this project's test machine has no GPU), from torch's lazy CUDA module loading (CUDA >= 11.7).
CUDA_HOST_BYTES = 1.0 * 1024**3
# torch's default cuBLAS workspace per handle (CUBLAS_WORKSPACE_CONFIG ":4096:8" on Hopper, ":4096:2:16:8" = 8.1 MiB
# before), allocated through the caching allocator, so inside max_memory_allocated: the Hopper figure, an upper bound.
CUBLAS_WORKSPACE_BYTES = 4096 * 1024 * 8
# Linux maps up to fault_around_bytes (mm/memory.c, default 64 KiB) of a file's cached pages around every page fault
# on a memory-mapped file, so each random token window makes ~64 KiB of the shard resident.
FAULT_AROUND_BYTES = 64 * 1024
# Private memory of one data loader worker (forked: it shares the parent's pages until it writes them), when the
# probe did not measure it. A measured constant (the probe on the reference VM).
WORKER_BYTES = 8e6

FORMULAS = {
    "process_baseline": "CPU: peak RSS of a fresh interpreter importing torch, Lightning, bigtrain's training stack "
    "[+ DeepSpeed] after one AdamW step (measured once per install by bigtrain/training/baseline_probe.py, cached in "
    "~/.cache/bigtrain/process-baseline.json by host and versions; or plan.process_baseline_gib); GPU: 0 on the "
    "device (max_memory_allocated holds no CUDA context), on the host that + CUDA_HOST 1 GiB (assumed, unmeasured)",
    "data_pages": "CPU: memory-mapped token shards' resident pages, size x (1 - exp(-windows x 64 KiB / size)) per "
    "split (Linux fault-around 64 KiB per random window; windows = this rank's train + validation windows)",
    "workspace": "GPU: torch's cuBLAS workspace, 4096 KiB x 8 (CUBLAS_WORKSPACE_CONFIG default on Hopper; "
    "8.1 MiB before), in max_memory_allocated; CPU: 0",
    "backward_transient": "the gradients of one layer's activations while its backward runs: one layer's "
    "activations (Korthikanti per layer, no recompute, /tp); an upper bound from the autograd graph, not fitted",
    "peak": "planned peak per process = total + process_baseline + data_pages + workspace + backward_transient; "
    "compares with summary.json's "
    "measure (CPU: peak RSS; GPU: torch.cuda.max_memory_allocated)",
    "host_per_node": "ranks/node x (process baseline on the host + loader workers x private bytes each) + host model "
    "states (offloaded states | DeepSpeed's estimator CPU column) + pinned NVMe swap buffers; offloaded states "
    "as max(steady, load-time fp32 model x ranks/node [one layer under zero.Init])",
}


@dataclass(frozen=True)
class Process:
    """The per-process facts a peak-memory plan needs, read from the config (and the prepared data if there is
    one) by `process_from`."""

    accelerator: str = "cpu"  # cpu | gpu (hardware.accelerator; anything not cpu counts as gpu)
    baseline_bytes: float = CPU_BASELINE_BYTES  # CPU process baseline (measured or given)
    baseline_source: str = "constant"
    worker_bytes: float = WORKER_BYTES  # private bytes of one data loader worker
    num_workers: int = 0  # data loader workers per process
    train_windows: int = 0  # token windows this rank reads from the train shard over the run
    val_windows: int = 0  # and from the validation shard
    train_shard_bytes: int = 0  # 0: not prepared yet (the data term is then 0)
    val_shard_bytes: int = 0


def cache_file() -> Path:
    root = os.environ.get("BIGTRAIN_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "bigtrain")
    return Path(root) / "process-baseline.json"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


# Bumped when bigtrain/training/baseline_probe.py changes what it measures: older cache entries are then re-measured.
PROBE_VERSION = 2


def install_key(deepspeed: bool) -> str:
    """What the baseline depends on: host, interpreter and the versions of the libraries a run imports."""
    parts = [
        f"probe={PROBE_VERSION}",
        socket.gethostname(),
        platform.machine(),
        platform.python_version(),
        *(f"{d}={_version(d)}" for d in ("torch", "pytorch-lightning", "lightning", "hydra-core", "numpy")),
        f"deepspeed={_version('deepspeed')}" if deepspeed else "no-deepspeed",
    ]
    return "|".join(parts)


def _probe(deepspeed: bool) -> dict:
    """Run bigtrain/training/baseline_probe.py in a fresh interpreter (the planner imports no torch)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the folder holding the bigtrain package
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    args = [sys.executable, "-m", "bigtrain.training.baseline_probe", *(["--deepspeed"] if deepspeed else [])]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


_MEMO: dict[str, dict] = {}


def measured_baseline(deepspeed: bool) -> dict:
    """{"peak_rss_bytes", "worker_bytes", "source"}: the cached measurement for this install, measured now (a few
    seconds, once) when there is none; the documented constants when the probe cannot run."""
    key = install_key(deepspeed)
    if key in _MEMO:
        return _MEMO[key]
    path = cache_file()
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if not isinstance(cached, dict):
        cached = {}
    entry = cached.get(key)
    if not isinstance(entry, dict) or not isinstance(entry.get("peak_rss_bytes"), int | float):
        try:
            probed = _probe(deepspeed)
            entry = {
                "peak_rss_bytes": float(probed["peak_rss_bytes"]),
                "worker_bytes": float(probed.get("worker_bytes") or WORKER_BYTES),
                "source": f"measured ({path})",
            }
            cached[key] = entry
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cached, indent=2))
            tmp.replace(path)
        except (OSError, ValueError, KeyError, RuntimeError, subprocess.TimeoutExpired) as err:
            base = CPU_BASELINE_BYTES + (DEEPSPEED_IMPORT_BYTES if deepspeed else 0)
            entry = {"peak_rss_bytes": base, "worker_bytes": WORKER_BYTES, "source": f"constant (probe failed: {err})"}
    _MEMO[key] = entry
    return entry


def resident_pages(shard_bytes: int, windows: int) -> float:
    """Expected resident bytes of a memory-mapped shard after `windows` uniformly random reads, each making
    FAULT_AROUND_BYTES resident: a Poisson coverage of the file's 64 KiB blocks."""
    if shard_bytes <= 0 or windows <= 0:
        return 0.0
    return shard_bytes * (1 - math.exp(-windows * FAULT_AROUND_BYTES / shard_bytes))


def data_pages(p: Process) -> float:
    return resident_pages(p.train_shard_bytes, p.train_windows) + resident_pages(p.val_shard_bytes, p.val_windows)


def process_terms(p: Process | None) -> dict[str, float]:
    """The per-process terms added to the device total for the measured peak (bytes)."""
    if p is None:
        return {"process_baseline": 0.0, "data_pages": 0.0, "workspace": 0.0}
    if p.accelerator == "cpu":
        return {"process_baseline": p.baseline_bytes, "data_pages": data_pages(p), "workspace": 0.0}
    return {"process_baseline": 0.0, "data_pages": 0.0, "workspace": float(CUBLAS_WORKSPACE_BYTES)}


def host_baseline(p: Process | None) -> float:
    """One process's memory on its node's host besides offloaded states: baseline (+ CUDA's host side on GPU),
    data pages and loader workers. On CPU the whole process is host memory; its device terms are counted in the
    device total, which for hardware=cpu is the same memory."""
    if p is None:
        return 0.0
    base = p.baseline_bytes + (CUDA_HOST_BYTES if p.accelerator != "cpu" else 0.0)
    return base + data_pages(p) + p.num_workers * p.worker_bytes


def process_from(cfg, layout, measure: bool = True) -> Process:
    """The Process of a composed config: accelerator, the CPU baseline (plan.process_baseline_gib, else measured and
    cached; the documented constant when `measure` is false), loader workers, the windows this rank reads and, once
    the data is prepared (data.prepared_dir), the shards' sizes."""
    tr, data = cfg.trainer, cfg.data
    plan = cfg.plan if "plan" in cfg else None
    deepspeed = layout.parallelism == "deepspeed"
    given = plan.get("process_baseline_gib") if plan is not None else None
    if given is not None:
        baseline, worker, source = float(given) * 1024**3, WORKER_BYTES, "plan.process_baseline_gib"
    elif measure:
        m = measured_baseline(deepspeed)
        baseline, worker, source = m["peak_rss_bytes"], m["worker_bytes"], m["source"]
    else:
        baseline = CPU_BASELINE_BYTES + (DEEPSPEED_IMPORT_BYTES if deepspeed else 0)
        worker, source = WORKER_BYTES, "constant"
    per_step = layout.micro_batch_size * layout.accumulate  # windows one data-parallel rank reads per step
    validations = 1 + tr.max_steps // max(int(tr.val_check_interval), 1)  # step 0's and every interval's
    train_bytes = val_bytes = 0
    prepared = data.get("prepared_dir")
    if prepared:
        folder = Path(str(prepared)).expanduser()
        train_bytes = _size(folder / "train.bin")
        val_bytes = _size(folder / "val.bin")
    return Process(
        accelerator="cpu" if str(cfg.hardware.accelerator) == "cpu" else "gpu",
        baseline_bytes=baseline,
        baseline_source=source,
        worker_bytes=worker,
        num_workers=int(data.get("num_workers", 0) or 0),
        train_windows=int(tr.max_steps) * per_step,
        val_windows=validations * int(tr.val_batches) * layout.micro_batch_size if tr.val_batches else 0,
        train_shard_bytes=train_bytes,
        val_shard_bytes=val_bytes,
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
