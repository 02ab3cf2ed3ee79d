"""The benchmark runner in smoke mode (`--quick`: nano model, a few steps), so it cannot rot unnoticed.

No timing is asserted: the machine is shared and noisy. The test checks that every selected bench produced its
rows, that measured figures and ratios are positive numbers, and that benches whose prerequisites are missing
(GPU, ZeRO, planner script) say so instead of failing.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_quick_run_writes_positive_ratios(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "overhead", "data", "zero", "gpu", "plan", "--quick", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "ratio" in proc.stdout  # the table was printed
    report = json.loads(out.read_text())
    assert report["meta"]["quick"] is True and report["meta"]["threads"] >= 1
    rows = report["results"]
    benches = {r["bench"] for r in rows}
    assert benches == {"overhead", "data", "zero", "gpu", "plan"}, benches
    assert not [r for r in rows if r["metric"] == "error"]

    measured = [r for r in rows if r["bench"] in ("overhead", "data")]
    assert len(measured) >= 5
    for r in measured:
        for key in ("value", "baseline", "ratio"):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (r["metric"], key, r[key])
        assert r["ratio"] == pytest.approx(r["value"] / r["baseline"], rel=1e-6)
    targets = {r["metric"]: r["target"] for r in measured if r["target"]}
    assert any(t == ">= 0.95" for t in targets.values()) and any(t == ">= 50" for t in targets.values())
    for r in measured:
        if r["target"]:
            assert r["met"] in (True, False)

    gpu = [r for r in rows if r["bench"] == "gpu"]
    if "cuda" not in report["meta"] or report["meta"]["cuda"] is None:
        assert len(gpu) == 1 and gpu[0]["note"].startswith("skipped: no CUDA")


def test_importtime_parser_names_the_importer():
    """bench_ttfs reads `python -X importtime` output (children print before their parent)."""
    from benchmarks.bench_ttfs import imported_by

    log = "\n".join(
        [
            "import time: self [us] | cumulative | imported package",
            "import time:       100 |        100 |       matplotlib.pyplot",
            "import time:       200 |        300 |     matplotlib",
            "import time:        50 |        350 |   torchmetrics.utilities.plot",
            "import time:        10 |        360 | pytorch_lightning",
            "import time:        10 |         10 | bigtrain.config",
        ]
    )
    found = imported_by(log)
    assert set(found) == {"matplotlib"}
    assert found["matplotlib"].startswith("torchmetrics.utilities.plot") and "pytorch_lightning" in found["matplotlib"]


def test_stdlib_listing_matches_the_filtered_glob():
    """The pruned walk lists exactly the files the original rglob-then-filter listed, in the same order."""
    from bigtrain.data.corpus import _stdlib_files, stdlib_root

    root = stdlib_root()
    slow = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts and "dist-packages" not in p.parts)
    assert _stdlib_files(root) == slow


def test_config_import_does_not_pull_lightning():
    """Validation (and so task=plan / task=prepare) must not pay for importing Lightning or torch."""
    code = "import sys, bigtrain.config; print(sorted(m for m in ('pytorch_lightning', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_compile_option_compiles_in_place(monkeypatch):
    """trainer.compile=true compiles the GPT in place (no forward runs here, so nothing is actually compiled):
    checkpoint keys stay those of the plain model."""
    from bigtrain.training.module import GPTLightningModule
    from tests.conftest import compose

    cfg = compose("model=nano")
    assert cfg.trainer.compile is False
    plain = GPTLightningModule(cfg.model, cfg.optim, 10, 256)
    compiled = GPTLightningModule(cfg.model, cfg.optim, 10, 256, compile_model=True)
    plain.configure_model()
    compiled.configure_model()
    assert compiled.model._compiled_call_impl is not None and plain.model._compiled_call_impl is None
    assert list(compiled.state_dict()) == list(plain.state_dict())


@pytest.mark.slow
def test_python_option_times_both_sides_under_the_named_interpreter(tmp_path):
    """--python PATH (a user's venv, say) runs bigtrain and the plain loop alike under PATH: here a wrapper that
    logs each command line, then runs this interpreter."""
    calls = tmp_path / "calls.txt"
    wrapper = tmp_path / "python-wrapper"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "ttfs", "--quick", "--python", str(wrapper), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["meta"]["timed_python"] == str(wrapper)
    lines = calls.read_text().splitlines()
    assert any(line.startswith("-m bigtrain ") for line in lines), lines
    assert any("plain_loop.py" in line for line in lines), lines
    ttfs = next(r for r in report["results"] if r["metric"].startswith("time to first step"))
    assert ttfs["value"] > 0 and ttfs["baseline"] > 0
