"""Refusals come before the heavy imports: a cross-group error or the pre-flight plan's "does not fit" ends the run
while torch, Lightning and DeepSpeed are still unimported (their import alone takes most of a minute on a loaded
2-core machine). The CLI runs in a subprocess whose sys.modules is read at the moment it exits."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "pytorch_lightning", "lightning", "lightning_fabric", "deepspeed")
# `python -m bigtrain ARGS`, then report the exit status and which heavy modules were imported by then.
PROBE = f"""
import json, runpy, sys
sys.argv = ["bigtrain", *sys.argv[1:]]
try:
    runpy.run_module("bigtrain", run_name="__main__", alter_sys=True)
except SystemExit as e:
    print(json.dumps({{"code": e.code, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["parallelism=ddp", "hardware.devices=2", "trainer.global_batch_size=20", "trainer.micro_batch_size=4"],
            "trainer.global_batch_size=20 is not divisible by trainer.micro_batch_size=4 x data-parallel size 2",
        ),
        (["model=gpt3-175b"], "plan: does NOT fit"),
    ],
    ids=["cross-group", "plan"],
)
def test_refusal_before_heavy_imports(tmp_path, overrides, message):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *overrides, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert f"bigtrain: error: {message}" in proc.stderr, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"code": 2, "heavy": []}, result
    assert not run_dir.exists()  # and nothing written
