"""The planner: memory per device, FLOPs, time and cost of a training config, and a search for one that fits.

Pure Python (no torch): it answers for a 175B model in milliseconds from the composed config alone.
`plan(cfg)` -> dict, `search(setup)` -> ranked candidates, `preflight(cfg)` -> plan or a ConfigError.
"""

from bigtrain.plan.planner import max_n_layer_that_fits, plan, plan_setup
from bigtrain.plan.preflight import preflight, verdict
from bigtrain.plan.search import search
from bigtrain.plan.setup import Setup, setup_from

__all__ = ["Setup", "max_n_layer_that_fits", "plan", "plan_setup", "preflight", "search", "setup_from", "verdict"]
