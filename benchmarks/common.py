"""What every bench shares: result rows, subprocess runs of bigtrain and of the plain loop, medians, data."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLAIN_LOOP = REPO / "benchmarks" / "plain_loop.py"
# Overrides that make a bigtrain run measure training only: no validation passes, no sampled text, one checkpoint
# at the end (as a plain loop would save once). Progress bar, logging and grad-norm stay at their defaults.
TRAIN_ONLY = ["trainer.val_batches=0", "trainer.sample_tokens=0", "trainer.checkpoint_every_n_steps=0"]


@dataclass
class Row:
    """One line of the table: bigtrain's figure, the baseline's, their ratio and the target it is held to."""

    bench: str
    metric: str
    value: float | None = None
    baseline: float | None = None
    unit: str = ""
    ratio: float | None = None
    target: str = ""  # ">= 0.95", "<= 2", or "" for information only
    note: str = ""
    samples: dict = field(default_factory=dict)  # the raw measurements behind value and baseline
    passed: bool | None = None  # for checks that are not ratios (e.g. "no deepspeed import")

    @property
    def met(self) -> bool | None:
        if self.passed is not None:
            return self.passed
        if self.ratio is None or not self.target:
            return None
        op, bound = self.target.split()
        return self.ratio >= float(bound) if op == ">=" else self.ratio <= float(bound)

    def as_dict(self) -> dict:
        return {**asdict(self), "met": self.met}


@dataclass
class Context:
    quick: bool  # smoke mode: tiny models, a handful of steps; numbers mean nothing, structure is exercised
    repeats: int  # alternating A/B pairs per comparison
    workdir: Path  # run directories and scratch data
    threads: int  # torch threads for every training process (same for bigtrain and the baseline)
    # The interpreter of every timed process, bigtrain's and the baseline's alike: by default this one; a venv
    # made by README's first command measures what a user's install pays (no dev extra, see benchmarks/README.md).
    python: str = sys.executable
    results: list[Row] = field(default_factory=list)  # rows of benches that ran earlier in this invocation

    def env(self) -> dict:
        """Environment for child processes: this checkout first on sys.path, equal thread counts, no wandb."""
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        return {
            **os.environ,
            "PYTHONPATH": path,
            "OMP_NUM_THREADS": str(self.threads),
            "MKL_NUM_THREADS": str(self.threads),
            "WANDB_MODE": "offline",
            "PYTHONUNBUFFERED": "1",
        }

    def find(self, bench: str, metric: str) -> Row | None:
        return next((r for r in self.results if r.bench == bench and r.metric == metric), None)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def run_command(args: list[str], ctx: Context, timeout: float = 900, cwd: Path | None = None) -> tuple[float, str]:
    """Run a command; return (wall seconds from spawn to exit, stdout). Raise with its stderr tail on failure."""
    started = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd or REPO, env=ctx.env(), capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:6])} ... exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def run_bigtrain(overrides: list[str], ctx: Context, name: str, timeout: float = 900) -> tuple[float, dict]:
    """`python -m bigtrain OVERRIDES` in a fresh run directory; return (wall seconds, summary.json)."""
    run_dir = ctx.workdir / "runs" / f"{name}-{time.time_ns()}"
    wall, _ = run_command([ctx.python, "-m", "bigtrain", *overrides, f"hydra.run.dir={run_dir}"], ctx, timeout)
    return wall, json.loads((run_dir / "summary.json").read_text())


def run_plain(args: list[str], ctx: Context, timeout: float = 900) -> tuple[float, dict]:
    """The plain loop script; return (wall seconds, its JSON result)."""
    wall, out = run_command([ctx.python, str(PLAIN_LOOP), *args], ctx, timeout)
    return wall, json.loads(out.strip().splitlines()[-1])


def compose(*overrides: str):
    """The config `python -m bigtrain OVERRIDES` would see (no run directory)."""
    from bigtrain.config.compose import compose_config

    return compose_config(list(overrides))


def model_overrides(ctx: Context) -> list[str]:
    """The model the CPU benches train: the default (tiny), or nano in --quick mode."""
    return ["model=nano"] if ctx.quick else []


def data_overrides(ctx: Context) -> list[str]:
    """--quick trains on a 2 MB slice of the built-in corpus (prepared in about a second), as the tests do."""
    return ["data.max_bytes=2000000"] if ctx.quick else []


def prepared_dir(ctx: Context) -> Path:
    """The prepared dataset of the default data config (prepared now if missing, outside any timing)."""
    from bigtrain.tasks.train import prepared_data

    cfg = compose(*model_overrides(ctx), *data_overrides(ctx))
    return prepared_data(cfg, progress=False)


def plain_args(cfg, data: Path, steps: int) -> list[str]:
    """plain_loop.py arguments that mirror a composed bigtrain config (model, batch, optimizer, precision)."""
    m, tr, o = cfg.model, cfg.trainer, cfg.optim
    return [
        f"--data={data}",
        f"--n-layer={m.n_layer}",
        f"--n-head={m.n_head}",
        f"--n-embd={m.n_embd}",
        f"--block-size={m.block_size}",
        f"--vocab-size={m.vocab_size}",
        f"--batch={tr.micro_batch_size}",
        f"--steps={steps}",
        f"--lr={o.lr}",
        f"--min-lr={o.min_lr}",
        f"--warmup={o.warmup_steps}",
        f"--weight-decay={o.weight_decay}",
        f"--grad-clip={o.grad_clip}",
        f"--precision={tr.precision}",
    ]
