"""`task=plan`: memory, FLOPs, time and cost of the composed config before launch; optionally a plot and a search.

python -m bigtrain task=plan model=gpt3-175b hardware=a100-80g-x8 hardware.nodes=128 parallelism=ddp zero=3
python -m bigtrain task=plan plan.format=json ...        # one JSON object on stdout
python -m bigtrain task=plan plan.search=true ...        # ranked layouts that fit, with their overrides
"""

from __future__ import annotations

import json
from pathlib import Path

from bigtrain.config.validate import validate
from bigtrain.plan import plan, search, setup_from
from bigtrain.plan.report import search_rows, search_table, table


def run(cfg, run_dir: Path) -> dict:
    validate(cfg, planning=True)
    result = plan(cfg)
    s = setup_from(cfg)
    if cfg.plan.search:
        found, tried = search(s, max_nodes=cfg.plan.max_nodes, rank_by=cfg.plan.rank_by)
        result["search"] = search_rows(found, tried, cfg.plan.top, cfg.plan.rank_by)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.plan.plot:
        from bigtrain.plan.plot import plot_memory

        title = f"{cfg.model.name} on {s.world} x {cfg.hardware.name}: memory per device by zero stage and offload"
        result["plot"] = str(plot_memory(s, run_dir / "plan.png", title))
    (run_dir / "plan.json").write_text(json.dumps(result, indent=2))
    if cfg.plan.format == "json":
        print(json.dumps(result))
    else:
        print(table(result, f"{cfg.model.name} on {cfg.hardware.name}"))
        if "search" in result:
            print(search_table(result["search"]))
        if "plot" in result:
            print(f"plot: {result['plot']}")
    return result
