"""A standard wandb workspace for bigtrain runs, as code (`wandb-workspaces`): the panels name the metrics the
trainer logs, so a renamed metric shows up as a test failure rather than an empty panel.

Sections: loss, optimization (learning rate, gradient norm), throughput (tokens/s, TFLOP/s per device, MFU / HFU),
step time (data / forward / backward / optimizer / other, collective wait), memory (planned vs measured), MoE load
(any `moe/*` metric, when a run logged one), and for a sweep a comparison section keyed by the swept overrides
(parallel coordinates over the swept config keys and the runs' results, final validation loss per run, a run
comparer), with the runset filtered to the sweep's wandb group.
"""

from __future__ import annotations

import csv
from pathlib import Path

X_AXIS = "trainer/global_step"  # Lightning's WandbLogger steps every metric by it
# (section, [(panel title, [metric keys])]): what the trainer logs (module.py, callbacks.py, step_time.py).
SECTIONS: list[tuple[str, list[tuple[str, list[str]]]]] = [
    ("Loss", [("train and validation loss", ["train/loss", "val/loss"]), ("validation perplexity", ["val/ppl"])]),
    ("Optimization", [("learning rate", ["train/lr"]), ("gradient norm, before clipping", ["train/grad_norm"])]),
    (
        "Throughput",
        [
            ("tokens/s", ["perf/tokens_per_s"]),
            ("model TFLOP/s per device", ["perf/tflops_per_device"]),
            ("MFU and HFU", ["perf/mfu", "perf/hfu"]),
        ],
    ),
    (
        "Step time",
        [
            (
                "where a step's time goes (ms)",
                ["time/data_ms", "time/forward_ms", "time/backward_ms", "time/optimizer_ms", "time/other_ms"],
            ),
            ("step time (ms)", ["time/step_ms"]),
            ("gradient all-reduce wait, not overlapped (ms)", ["time/collectives_wait_ms"]),
        ],
    ),
    (
        "Memory",
        [
            (
                "memory per device: planned vs measured (MiB)",
                ["memory/planned_mib", "memory/peak_mib", "memory/allocated_mib", "memory/reserved_mib"],
            ),
            ("host memory (MiB)", ["memory/rss_mib"]),
        ],
    ),
]
MOE_PREFIX = "moe/"
# Results every run's wandb summary holds (bigtrain's summary.json scalars, see loggers.summary_to_loggers).
SWEEP_RESULTS = ("final_val_loss", "tokens_per_s", "mfu", "peak_memory_bytes")
SPEC_FILE = "wandb_workspace.json"


def logged_keys(run_dirs: list[Path]) -> set[str]:
    """Every metric name the runs logged (metrics.csv's header: bigtrain logs the same keys to every logger)."""
    keys: set[str] = set()
    for run_dir in run_dirs:
        try:
            with (Path(run_dir) / "metrics.csv").open(newline="") as f:
                keys.update(next(csv.reader(f), []))
        except OSError:
            continue
    return keys - {"step", "epoch"}


def swept_keys(varying: list[list[str]]) -> list[str]:
    """The config keys a sweep varied, in order of first appearance ("optim.lr=0.004" -> "optim.lr")."""
    keys: list[str] = []
    for overrides in varying:
        for o in overrides:
            key = o.split("=", 1)[0].lstrip("+~")
            if key not in keys:
                keys.append(key)
    return keys


def panel_plan(keys: set[str] | None) -> list[tuple[str, list[tuple[str, list[str]]]]]:
    """The sections and their panels' metric keys; with `keys` (what runs logged), only the keys present, panels
    and sections left empty dropped, and a MoE section for the `moe/*` keys. None: every standard panel."""
    out = []
    for section, panels in SECTIONS:
        kept = [(title, [k for k in ys if keys is None or k in keys]) for title, ys in panels]
        kept = [(title, ys) for title, ys in kept if ys]
        if kept:
            out.append((section, kept))
    moe = sorted(k for k in (keys or ()) if k.startswith(MOE_PREFIX))
    if moe:
        out.append(("MoE load", [(k.removeprefix(MOE_PREFIX), [k]) for k in moe]))
    return out


def build_workspace(
    entity: str,
    project: str,
    keys: set[str] | None,
    swept: list[str] | None = None,
    group: str | None = None,
    name: str = "bigtrain",
):
    """The wandb_workspaces Workspace: standard sections, plus a sweep section when `swept` keys are given."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    sections = [
        ws.Section(
            name=section,
            panels=[wr.LinePlot(title=title, x=X_AXIS, y=ys) for title, ys in panels],
            is_open=True,
        )
        for section, panels in panel_plan(keys)
    ]
    if swept:
        columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(k), display_name=k) for k in swept]
        columns += [wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(k), display_name=k) for k in SWEEP_RESULTS]
        sweep = ws.Section(
            name="Sweep: " + ", ".join(swept),
            panels=[
                wr.ParallelCoordinatesPlot(title="swept overrides -> results", columns=columns),
                wr.BarPlot(title="final validation loss per run", metrics=[wr.SummaryMetric("final_val_loss")]),
                wr.LinePlot(title="validation loss", x=X_AXIS, y=["val/loss"]),
                wr.RunComparer(diff_only="split"),
            ],
            is_open=True,
            pinned=True,
        )
        sections.insert(0, sweep)
    runset = ws.RunsetSettings(filters=[expr.Metric("Group") == group]) if group else ws.RunsetSettings()
    return ws.Workspace(entity=entity, project=project, name=name, sections=sections, runset_settings=runset)


def spec_panels(spec: dict) -> dict[str, list[dict]]:
    """{section name: [panel config]} of a saved workspace spec (the JSON the offline path writes)."""
    sections = spec["spec"]["section"]["panelBankConfig"]["sections"]
    return {s["name"]: [p["config"] for p in s["panels"]] for s in sections}
