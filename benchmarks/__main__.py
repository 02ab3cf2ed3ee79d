"""`python -m benchmarks [BENCH ...] [--quick] [--repeats N] [--out FILE]`: run the chosen benches (all by default),
print one table of ratios against baselines measured in the same run, and write it as JSON.

Benches: overhead (framework tokens/s vs a plain loop), ttfs (time to first step), data (prepare and loader
throughput), zero (DeepSpeed ZeRO 0-3 on CPU beside the planner, once both exist), gpu (tokens/s and MFU, CUDA only),
plan (benchmarks/bench_plan.py, the planner's timing, when present), moe (tiny-moe vs dense tiny at equal active
parameters: val loss and tokens/s).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks.common import REPO, Context, Row

BENCHES = {
    "overhead": "benchmarks.bench_overhead",
    "ttfs": "benchmarks.bench_ttfs",
    "data": "benchmarks.bench_data",
    "zero": "benchmarks.bench_zero",
    "gpu": "benchmarks.bench_gpu",
    "plan": "benchmarks.bench_plan_rows",
    "moe": "benchmarks.bench_moe",
    "peers": "benchmarks.bench_peers",
    "threads": "benchmarks.bench_threads",
}
DEFAULT_OUT = REPO / "benchmarks" / "results" / "latest.json"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("benches", nargs="*", metavar="BENCH", help=f"any of: {', '.join(BENCHES)} (default: all)")
    p.add_argument("--quick", action="store_true", help="smoke mode: nano model, a few steps (numbers mean nothing)")
    p.add_argument("--repeats", type=int, default=None, help="alternating pairs per comparison (default 3, quick 1)")
    # One thread by default: on a shared machine a multi-threaded OpenMP step waits for whichever of its threads
    # was descheduled, so 2-thread step times swing 10x with other processes' load while 1-thread ones stay put.
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads for every trainer, bigtrain and baseline alike"
    )
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT.relative_to(REPO)})"
    )
    p.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter of the timed processes (bigtrain and baseline alike), e.g. a venv made by README's first "
        "command, which has none of the dev extra (default: this one)",
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch run directories")
    p.add_argument("--markdown", action="store_true", help="also print the table as Markdown (for README)")
    a = p.parse_args(argv)
    unknown = [b for b in a.benches if b not in BENCHES]
    if unknown:
        p.error(f"unknown bench {', '.join(unknown)}; valid: {', '.join(BENCHES)}")
    return a


def machine() -> dict:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
    }


def print_table(rows: list[Row]) -> None:
    from rich.console import Console
    from rich.table import Table

    def fmt(v: float | None) -> str:
        if v is None:
            return "-"
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"

    table = Table(title="bigtrain benchmarks (ratio = bigtrain / baseline, measured in the same run)")
    for col, justify in (("bench", "left"), ("metric", "left"), ("bigtrain", "right"), ("baseline", "right")):
        table.add_column(col, justify=justify)
    for col in ("unit", "ratio", "target", "met", "note"):
        table.add_column(col, justify="right" if col == "ratio" else "left")
    for r in rows:
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: ""}[r.met]
        table.add_row(r.bench, r.metric, fmt(r.value), fmt(r.baseline), r.unit, fmt(r.ratio), r.target, met, r.note)
    Console(width=200).print(table)


def markdown(rows: list[Row]) -> str:
    def fmt(v: float | None) -> str:
        return "-" if v is None else (f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}")

    lines = [
        "| bench | metric | bigtrain | baseline | unit | ratio | target | met |",
        "|---|---|---:|---:|---|---:|---|---|",
    ]
    for r in rows:
        met = {True: "yes", False: "no", None: ""}[r.met]
        cells = [r.bench, r.metric, fmt(r.value), fmt(r.baseline), r.unit, fmt(r.ratio), r.target, met, r.note[:90]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    benches = a.benches or list(BENCHES)
    workdir = Path(tempfile.mkdtemp(prefix="bigtrain-bench-"))
    repeats = a.repeats or (1 if a.quick else 3)
    ctx = Context(quick=a.quick, repeats=repeats, workdir=workdir, threads=a.threads, python=a.python)
    started = time.time()
    meta = {"command": " ".join(["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]), **machine()}
    meta["timed_python"] = a.python
    failed = []
    try:
        for name in benches:
            t0 = time.perf_counter()
            print(f"[benchmarks] {name} ...", file=sys.stderr, flush=True)
            try:
                rows = importlib.import_module(BENCHES[name]).run(ctx)
            except Exception as e:  # one broken bench must not hide the others' numbers
                traceback.print_exc()
                rows = [Row(name, "error", note=f"{type(e).__name__}: {str(e).splitlines()[0][:160]}")]
                failed.append(name)
            ctx.results.extend(rows)
            print(f"[benchmarks] {name} done in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    finally:
        if not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    meta.update(quick=a.quick, repeats=repeats, threads=a.threads, wall_s=round(time.time() - started, 1))
    meta["load_average_end"] = os.getloadavg()
    print_table(ctx.results)
    if a.markdown:
        print(markdown(ctx.results))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"meta": meta, "results": [r.as_dict() for r in ctx.results]}, indent=2))
    print(f"wrote {a.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
