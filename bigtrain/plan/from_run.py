"""`plan.from_run=RUN_DIR`: re-plan a finished run's setup at another scale with the efficiency it measured.

The run's measured tokens/s (summary.json, every optimizer step timed) times the hardware FLOPs per token of its
own config (RUN_DIR/config.yaml, planned exactly as `task=plan` would) over its devices' datasheet peak is the
end-to-end hardware FLOPs utilisation it reached: pipeline bubble, tensor- and data-parallel communication, data
loading and the optimizer step are all inside it. The new plan runs its hardware FLOPs at that fraction of the new
peak (`Setup.achieved_flops`), which is a measurement carried over, not a model of the new scale: communication
that grows with scale is still bounded by the bandwidth terms of compute.timing.
"""

from __future__ import annotations

import json
from pathlib import Path

from bigtrain.errors import ConfigError

FORMULA = "from_run: efficiency = measured tokens/s x hardware flops/token / (world x peak), both of the run's config"


def measured(run_dir: str | Path) -> dict:
    """What the run measured and the efficiency it implies: {run_dir, tokens_per_s, world, hardware, peak_flops,
    hardware_flops_per_token, n_params, efficiency}."""
    from bigtrain.config.run_config import CONFIG_FILE, load_run_config
    from bigtrain.plan.compute import hardware_flops_per_token
    from bigtrain.plan.params import n_params
    from bigtrain.plan.setup import setup_from

    run = Path(run_dir).expanduser()
    summary_file, config_file = run / "summary.json", run / CONFIG_FILE
    for f in (summary_file, config_file):
        if not f.is_file():
            raise ConfigError(
                f"plan.from_run={run_dir}: {f.name} is missing there; give the directory of a finished training run "
                f"(it holds summary.json and {CONFIG_FILE})"
            )
    try:  # files a user points at: damaged ones end in one line
        summary = json.loads(summary_file.read_text())
        cfg = load_run_config(run)
    except Exception as e:
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise ConfigError(
            f"plan.from_run={run_dir}: its run files cannot be read ({type(e).__name__}: {reason})"
        ) from None
    tokens_per_s = summary.get("tokens_per_s") if isinstance(summary, dict) else None
    if not isinstance(tokens_per_s, int | float) or tokens_per_s <= 0:
        raise ConfigError(f"plan.from_run={run_dir}: summary.json has no measured tokens_per_s ({tokens_per_s})")
    cfg.plan.from_run = None  # the run's own rate assumption is not the measurement
    cfg.plan.achieved_tflops = None
    s = setup_from(cfg)
    if s.peak_flops <= 0:
        raise ConfigError(f"plan.from_run={run_dir}: hardware={cfg.hardware.name} has no peak FLOP/s to relate to")
    n = n_params(s)
    hw_flops = hardware_flops_per_token(s, n)
    return {
        "run_dir": str(run),
        "tokens_per_s": float(tokens_per_s),
        "world": s.world,
        "hardware": str(cfg.hardware.name),
        "model": str(cfg.model.name),
        "peak_flops": s.peak_flops,
        "hardware_flops_per_token": hw_flops,
        "n_params": n,
        "peak_memory_bytes": summary.get("peak_memory_bytes"),
        "efficiency": tokens_per_s * hw_flops / (s.world * s.peak_flops),
    }
