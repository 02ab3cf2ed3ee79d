"""The peers bench: its rows (medians of per-round ratios, targets on the single and DDP rows) and its baseline,
nanoGPT's DDP loop over 2 gloo processes. No timing is asserted (the machine is shared)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks.bench_peers import rows_from
from benchmarks.common import PLAIN_LOOP, Context
from tests.conftest import REPO


def test_rows_are_medians_of_per_round_ratios_with_targets_on_single_and_ddp(tmp_path):
    def side(tps, ttfs, per_cpu, rss):
        return {"tokens_per_s": tps, "ttfs_s": ttfs, "tokens_per_cpu_s": per_cpu, "peak_rss_bytes": rss}

    got = {
        "ddp": {
            "bigtrain": [side(90, 6, 50, 2**30), side(40, 9, 30, 2**30), side(95, 6, 50, 2**30)],
            "plain": [side(100, 4, 60, 2**29), side(100, 4, 60, 2**29), side(100, 4, 60, 2**29)],
            "load": [1.0, 3.0, 2.0],
        },
        "zero1": {"bigtrain": [side(80, 8, 40, 2**30)], "plain": [side(100, 4, 60, 2**29)], "load": [1.0]},
    }
    ctx = Context(quick=False, repeats=3, workdir=tmp_path, threads=1)
    rows = {r.metric: r for r in rows_from(got, 40, 3, ctx)}
    tps = rows["ddp: steady tokens/s"]
    assert tps.ratio == pytest.approx(0.9) and tps.target == ">= 0.95" and tps.met is False
    assert rows["ddp: time to first step (spawn to end of step 1)"].ratio == pytest.approx(1.5)
    assert rows["ddp: time to first step (spawn to end of step 1)"].met is True
    rss = rows["ddp: peak RSS per rank"]
    assert rss.value == 1024 and rss.baseline == 512 and rss.ratio == 2 and rss.met is False
    assert rows["zero1: steady tokens/s"].target == ""  # ZeRO rows are information
    assert "load 2.0" in tps.note


@pytest.mark.slow
def test_plain_ddp_loop_reports_every_ranks_peak_and_global_tokens(tmp_path):
    from benchmarks.common import prepared_dir

    data = prepared_dir(Context(quick=True, repeats=1, workdir=tmp_path, threads=1))
    args = [f"--data={data}", "--n-layer=1", "--n-embd=32", "--n-head=2", "--block-size=32", "--batch=2"]
    proc = subprocess.run(
        [sys.executable, str(PLAIN_LOOP), *args, "--steps=3", "--nproc=2", "--threads=1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["world_size"] == 2 and out["rank"] == 0 and len(out["step_times_s"]) == 3
    assert out["tokens_per_s"] > 0 and out["peak_rss_bytes"] > 50 * 2**20 and out["first_step_unix"] > 0
