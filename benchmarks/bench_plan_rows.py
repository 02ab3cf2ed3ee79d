"""The `plan` bench: runs benchmarks/bench_plan.py (the planner's own timing script, from the planner's branch)
when it is present, and records its exit status, wall time and any JSON it prints last; otherwise 'not available'."""

from __future__ import annotations

import json
import sys

from benchmarks.common import REPO, Context, Row, run_command

SCRIPT = REPO / "benchmarks" / "bench_plan.py"


def run(ctx: Context) -> list[Row]:
    if not SCRIPT.is_file():
        return [Row("plan", "planner timing", note="not available: benchmarks/bench_plan.py is not in this checkout")]
    # Its JSON goes to this run's work folder: benchmarks/results/ holds only what a person chose to record.
    # --quick (smoke mode, numbers mean nothing): one timed plan and the script's fewest searches, not 20 plans.
    repeat = ["--repeat", "1"] if ctx.quick else []
    args = [ctx.python, str(SCRIPT), "--out", str(ctx.workdir / "bench_plan.json"), *repeat]
    wall, out = run_command(args, ctx, timeout=600)
    lines = out.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        result = {}
    print(out, file=sys.stderr)  # the script's own table, for the reader of the log
    return [Row("plan", "benchmarks/bench_plan.py", wall, unit="s", note="script wall time", samples=result)]
