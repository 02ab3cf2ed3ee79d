"""Threads on a shared machine: bigtrain's tokens/s with each thread policy, with and without a competing load.

Policies (single process, the default model): `default` is what torch gives with no setting (a thread per core,
OpenMP's default wait policy: finished threads spin for a while), `auto` is bigtrain's default (trainer.threads=auto:
OMP_WAIT_POLICY=PASSIVE, torch's thread count), `1 thread` is trainer.threads=1. The competing load is N busy
Python processes (BIGTRAIN_BENCH_THREADS_LOAD, default 3 on any machine: more runnable processes than 2 cores)
started by the bench and ended by it. Each figure is the median-step tokens/s (the robust one under load); the
ratio is against `default` in the same round, median over rounds. Bounded: 3 policies x 2 conditions x repeats runs
of BIGTRAIN_BENCH_THREADS_STEPS steps (default 30).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from benchmarks.common import (
    TRAIN_ONLY,
    Context,
    Row,
    median,
    model_overrides,
    prepared_dir,
)

POLICIES = {
    "default": [f"trainer.threads={os.cpu_count() or 1}"],  # a count: the wait policy left as OpenMP's own
    "auto": ["trainer.threads=auto"],
    "1 thread": ["trainer.threads=1"],
}


def _env(ctx: Context) -> dict:
    env = ctx.env()
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY"):  # each policy sets its own
        env.pop(key, None)
    return env


def _run(policy: str, steps: int, ctx: Context) -> float:
    run_dir = ctx.workdir / "runs" / f"threads-{policy.replace(' ', '')}-{time.time_ns()}"
    args = [
        ctx.python,
        "-m",
        "bigtrain",
        *model_overrides(ctx),
        *POLICIES[policy],
        f"trainer.max_steps={steps}",
        f"data.prepared_dir={prepared_dir(ctx)}",
        "trainer.progress=false",
        *TRAIN_ONLY,
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.run(args, env=_env(ctx), capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"threads bench ({policy}) exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads((run_dir / "summary.json").read_text())["tokens_per_s_median"]


class CompetingLoad:
    """N busy processes for the duration of a `with` block (ended by their own pids)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> CompetingLoad:
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        return self

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


def run(ctx: Context) -> list[Row]:
    steps = 4 if ctx.quick else int(os.environ.get("BIGTRAIN_BENCH_THREADS_STEPS", "30"))
    load = int(os.environ.get("BIGTRAIN_BENCH_THREADS_LOAD", "3"))
    rows = []
    for competing in (0, load):
        got: dict[str, list[float]] = {p: [] for p in POLICIES}
        loads = []
        with CompetingLoad(competing):
            for i in range(ctx.repeats):
                order = list(POLICIES) if i % 2 == 0 else list(reversed(POLICIES))
                for policy in order:
                    got[policy].append(_run(policy, steps, ctx))
                loads.append(os.getloadavg()[0])
        for policy in POLICIES:
            ratios = [a / b for a, b in zip(got[policy], got["default"], strict=True) if b]
            rows.append(
                Row(
                    "threads",
                    f"{policy}: median-step tokens/s, {competing} competing busy processes",
                    median(got[policy]),
                    median(got["default"]),
                    "tok/s",
                    median(ratios),
                    "",
                    f"vs default (torch's threads, OpenMP's own wait policy); {ctx.repeats} alternating rounds x "
                    f"{steps} steps; load {median(loads):.1f}",
                    {"tokens_per_s_median": got[policy], "default": got["default"], "load_1min": loads},
                )
            )
    return rows
