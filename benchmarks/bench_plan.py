"""Planner speed: one plan of GPT-3 175B on 1024 A100s, and a search over >= 1,000 layouts.

    python benchmarks/bench_plan.py [--out benchmarks/results/bench_plan.json] [--repeat 20]

Prints a table and writes JSON. Targets (issue 4): a 175B plan in under 50 ms, a search over at least 1,000
candidates in under 2 s, on a 2-core machine. Times are the median of --repeat runs, after composing the config
once (composition is Hydra's cost, paid once per command, not the planner's).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGETS = {"plan_175b": 0.050, "search": 2.0}


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    from bigtrain.config import register_configs
    from bigtrain.config.cli import CONF_DIR

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _median_s(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "bench_plan.json"))
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args(argv)

    from bigtrain.config.validate import validate
    from bigtrain.plan import plan, search, setup_from

    gpt3 = _compose("recipe=gpt3-175b-a100")
    validate(gpt3, planning=True)
    plan_s = _median_s(lambda: plan(gpt3), args.repeat)

    base = setup_from(gpt3)
    found, tried = search(base, max_nodes=128)
    search_s = _median_s(lambda: search(base, max_nodes=128), max(3, args.repeat // 5))

    rows = {
        "plan_175b": {"seconds": plan_s, "target_s": TARGETS["plan_175b"], "what": "plan(cfg) GPT-3 175B, 1024 A100"},
        "search": {
            "seconds": search_s,
            "target_s": TARGETS["search"],
            "what": f"search over {tried} layouts ({len(found)} fit), nodes 1..128",
            "candidates": tried,
            "per_candidate_us": search_s / tried * 1e6,
        },
    }
    for row in rows.values():
        row["ok"] = row["seconds"] < row["target_s"]
    print(f"{'benchmark':<12} {'seconds':>10} {'target':>8} {'ok':>4}  what")
    for name, row in rows.items():
        print(f"{name:<12} {row['seconds']:>10.4f} {row['target_s']:>8.3f} {str(row['ok']):>4}  {row['what']}")
    Path(args.out).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
