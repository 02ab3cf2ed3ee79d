"""Peers: bigtrain against nanoGPT's training loop on the same model, one process and two (gloo DDP), and ZeRO-1/2.

The peer is `plain_loop.py` (same GPT module, AdamW groups, schedule, clipping, precision, threads, micro-batch);
with `--nproc 2` it is nanoGPT's DDP loop: plain `DistributedDataParallel` with default settings, gloo. Per round
every configuration runs once on each side, the order reversed every other round; each figure is the median of
the per-round ratios (a ratio from one round shares that round's load). Rows:

- steady tokens/s: bigtrain's Throughput callback and the plain loop time steps the same way (first step out);
- time to first step: from the bench spawning the process to the end of the first optimizer step (wall clock
  stamps `first_step_unix` in summary.json and in the loop's JSON), interpreter and imports included;
- tokens per CPU-second: tokens trained / CPU seconds of the whole process tree, spawn to exit (start-up included;
  the bench makes itself the sub-reaper so a rank that outlives its launcher is still counted);
- peak RSS per rank: the largest rank's `ru_maxrss`, measured alike on both sides.

ZeRO rows run `parallelism=deepspeed zero=N` against the same plain DDP loop (ZeRO-1/2 on 2 CPU ranks do the work of
DDP plus sharded optimizer bookkeeping, so the plain DDP loop is the floor to compare with).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import subprocess
import time

from benchmarks.common import (
    PLAIN_LOOP,
    TRAIN_ONLY,
    Context,
    Row,
    compose,
    median,
    model_overrides,
    plain_args,
    prepared_dir,
)

DDP = ["parallelism=ddp", "hardware.devices=2", "trainer.micro_batch_size=8"]  # global batch 16, as single
CONFIGS = {  # name -> (bigtrain overrides, plain loop processes)
    "single": ([], 1),
    "ddp": (DDP, 2),
    "zero1": (["parallelism=deepspeed", "zero=1", *DDP[1:]], 2),
    "zero2": (["parallelism=deepspeed", "zero=2", *DDP[1:]], 2),
}
TARGETS = {  # metric -> (target for single and ddp, higher is better)
    "tokens_per_s": (">= 0.97", ">= 0.95"),
    "ttfs_s": ("<= 1.5", "<= 1.5"),
    "tokens_per_cpu_s": ("", ""),
    "peak_rss_bytes": ("<= 1.2", "<= 1.2"),
}
LABELS = {
    "tokens_per_s": ("steady tokens/s", "tok/s"),
    "ttfs_s": ("time to first step (spawn to end of step 1)", "s"),
    "tokens_per_cpu_s": ("tokens per CPU-second (spawn to exit)", "tok/cpu-s"),
    "peak_rss_bytes": ("peak RSS per rank", "MiB"),
}


def _become_subreaper() -> None:
    """Orphaned grandchildren (a rank whose launcher exited first) are re-parented to this process, so their CPU
    time lands in RUSAGE_CHILDREN when reaped (Linux only; elsewhere such a rank's CPU time goes uncounted)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _reap_orphans(deadline_s: float = 60) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        except OSError as e:
            if e.errno == errno.ECHILD:
                return
            raise
        if pid == 0:
            time.sleep(0.05)


def timed(args: list[str], ctx: Context, timeout: float = 900) -> tuple[float, float, str]:
    """Run a process tree to its end: (spawn wall-clock stamp, CPU seconds of the whole tree, stdout)."""
    _become_subreaper()
    _reap_orphans(0)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    spawned = time.time()
    proc = subprocess.run(args, env=ctx.env(), capture_output=True, text=True, timeout=timeout)
    _reap_orphans()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:6])} ... exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return spawned, cpu, proc.stdout


def run_bigtrain_side(name: str, steps: int, ctx: Context) -> dict:
    overrides, _ = CONFIGS[name]
    run_dir = ctx.workdir / "runs" / f"peers-{name}-{time.time_ns()}"
    data = prepared_dir(ctx)
    args = [
        *model_overrides(ctx),
        *overrides,
        f"trainer.max_steps={steps}",
        f"data.prepared_dir={data}",
        *TRAIN_ONLY,
        f"hydra.run.dir={run_dir}",
    ]
    spawned, cpu, _ = timed([ctx.python, "-m", "bigtrain", *args], ctx)
    s = json.loads((run_dir / "summary.json").read_text())
    return {
        "tokens_per_s": s["tokens_per_s"],
        "ttfs_s": s["first_step_unix"] - spawned,
        "tokens_per_cpu_s": s["tokens"] / cpu,
        "peak_rss_bytes": s["peak_memory_bytes"],
    }


def run_plain_side(name: str, steps: int, ctx: Context) -> dict:
    overrides, nproc = CONFIGS[name]
    cfg = compose(*model_overrides(ctx), *overrides)
    args = [*plain_args(cfg, prepared_dir(ctx), steps), f"--nproc={nproc}", f"--threads={ctx.threads}"]
    spawned, cpu, out = timed([ctx.python, str(PLAIN_LOOP), *args], ctx)
    r = json.loads(out.strip().splitlines()[-1])
    tokens = steps * cfg.trainer.micro_batch_size * nproc * cfg.model.block_size
    return {
        "tokens_per_s": r["tokens_per_s"],
        "ttfs_s": r["first_step_unix"] - spawned,
        "tokens_per_cpu_s": tokens / cpu,
        "peak_rss_bytes": r["peak_rss_bytes"],
    }


def measure(names: tuple[str, ...], steps: int, rounds: int, ctx: Context) -> dict:
    """{config: {"bigtrain": [per-round dicts], "plain": [...]}}; the ZeRO configs reuse the round's plain DDP run."""
    got: dict = {n: {"bigtrain": [], "plain": [], "load": []} for n in names}
    plain_cache: dict = {}
    for i in range(rounds):
        plain_cache.clear()
        order = names if i % 2 == 0 else tuple(reversed(names))
        for name in order:
            nproc = CONFIGS[name][1]
            sides = ("bigtrain", "plain") if i % 2 == 0 else ("plain", "bigtrain")
            for side in sides:
                if side == "bigtrain":
                    got[name]["bigtrain"].append(run_bigtrain_side(name, steps, ctx))
                else:
                    if nproc not in plain_cache:
                        plain_cache[nproc] = run_plain_side(name, steps, ctx)
                    got[name]["plain"].append(plain_cache[nproc])
            got[name]["load"].append(os.getloadavg()[0])
    return got


def rows_from(got: dict, steps: int, rounds: int, ctx: Context) -> list[Row]:
    rows = []
    for name, sides in got.items():
        ddp_like = CONFIGS[name][1] > 1
        baseline = "plain DDP loop (2 procs)" if ddp_like else "plain loop (1 proc)"
        for metric, (label, unit) in LABELS.items():
            ours = [r[metric] for r in sides["bigtrain"]]
            theirs = [r[metric] for r in sides["plain"]]
            ratios = [a / b for a, b in zip(ours, theirs, strict=True) if b]
            scale = 2**20 if metric == "peak_rss_bytes" else 1
            target = TARGETS[metric][ddp_like] if name in ("single", "ddp") else ""
            rows.append(
                Row(
                    "peers",
                    f"{name}: {label}",
                    median(ours) / scale,
                    median(theirs) / scale,
                    unit,
                    median(ratios),
                    target,
                    f"vs {baseline}; ratio = median of {rounds} per-round ratios x {steps} steps; "
                    f"load {median(sides['load']):.1f}",
                    {
                        "bigtrain": ours,
                        "plain": theirs,
                        "ratios": [round(r, 4) for r in ratios],
                        "load_1min": sides["load"],
                    },
                )
            )
    return rows


def run(ctx: Context) -> list[Row]:
    steps = 4 if ctx.quick else int(os.environ.get("BIGTRAIN_BENCH_PEERS_STEPS", "50"))
    chosen = os.environ.get("BIGTRAIN_BENCH_PEERS_CONFIGS")  # e.g. "single,ddp"; default: all
    names = ("single", "ddp") if ctx.quick else tuple(chosen.split(",") if chosen else CONFIGS)
    got = measure(names, steps, ctx.repeats, ctx)
    return rows_from(got, steps, ctx.repeats, ctx)
