"""plan.json in the run directory, and the summary's planned-beside-measured numbers.

What is compared, per rank (the max over ranks):
- model states: planned params + grads + optimizer bytes vs the bytes of the real tensors after the first optimizer
  step (parameters, their gradients, the optimizer's state; see bigtrain/training/model_states.py). Like for like.
- peak memory: the planned peak per process (the device total plus the process terms of bigtrain/plan/process.py)
  vs the measured peak. On GPU the measured value is torch's peak allocated bytes (the device terms and cuBLAS's
  workspace; no CUDA context). On CPU it is the process's peak resident set size, which also holds the process
  baseline (interpreter, torch, Lightning: measured once per install) and the memory-mapped data pages read, both
  planned. tests/test_plan_peak.py holds the ratio within 15% for the default run and 2-process DDP / ZeRO-2 / -3.
- tokens/s: planned at plan.mfu of hardware.peak_tflops_* vs measured (Throughput callback).
"""

from __future__ import annotations

import json
from pathlib import Path

PLAN_FILE = "plan.json"


def write_plan(run_dir: Path, planned: dict) -> Path:
    path = Path(run_dir) / PLAN_FILE
    path.write_text(json.dumps(planned, indent=2))
    return path


def read_plan(run_dir: Path) -> dict | None:
    path = Path(run_dir) / PLAN_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _ratio(measured: float, planned: float) -> float | None:
    return measured / planned if planned else None


def planned_vs_measured(
    planned: dict | None, peak_bytes: int, state_bytes: int, tokens_per_s: float, device_type: str
) -> dict:
    """Summary entries: planned and measured side by side, with measured/planned ratios."""
    if not planned:
        return {}
    mem = planned["memory_per_device_bytes"]
    planned_states = mem["params"] + mem["grads"] + mem["optimizer"]
    planned_peak = planned.get("peak_memory_per_process_bytes", mem["total"])  # older plan.json: device total
    return {
        "planned_model_state_bytes": planned_states,
        "measured_model_state_bytes": state_bytes,
        "model_state_ratio": _ratio(state_bytes, planned_states),
        "planned_peak_memory_bytes": planned_peak,
        "measured_peak_memory_bytes": peak_bytes,
        "peak_memory_measure": "cuda max_memory_allocated" if device_type == "cuda" else "process peak RSS (cpu)",
        "peak_memory_ratio": _ratio(peak_bytes, planned_peak),
        "planned_tokens_per_s": planned["tokens_per_s"],
        "tokens_per_s_ratio": _ratio(tokens_per_s, planned["tokens_per_s"]),
    }
