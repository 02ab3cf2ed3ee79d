"""task=report over a set of runs: planned vs measured model-state bytes, peak memory and tokens/s per run, with
ratios and the median error per quantity (bigtrain/sweep/calibration.py), from real short training runs."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import NANO, assert_ok, compose, read_summary, run_bigtrain

from bigtrain.errors import ConfigError
from bigtrain.sweep.calibration import CALIBRATION_FILE, QUANTITIES, medians, read_run
from bigtrain.tasks.report import run as report

SHORT = [*NANO, "trainer.max_steps=3", "trainer.val_check_interval=3", "trainer.sample_tokens=0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real nano run (3 steps, CPU): its summary.json and plan.json are what the report reads."""
    run_dir = tmp_path_factory.mktemp("calib") / "run"
    assert_ok(run_bigtrain(*SHORT, run_dir=run_dir))
    return run_dir


def _copy_with(trained, dest, **measured):
    """A copy of the real run with some measured values replaced (to give the median known inputs)."""
    shutil.copytree(trained, dest, ignore=shutil.ignore_patterns("checkpoints"))
    summary = read_summary(dest)
    summary.update(measured)
    (dest / "summary.json").write_text(json.dumps(summary))
    return dest


@pytest.mark.slow
def test_report_over_runs_gives_each_ratio_and_the_median_error(trained, tmp_path, capsys):
    s = read_summary(trained)
    planned_tps = s["planned_tokens_per_s"]
    # the same run measuring 1.0x, 1.2x and 0.5x its planned tokens/s: median ratio 1.0, median error 0.2
    runs = [
        _copy_with(trained, tmp_path / "a", tokens_per_s=planned_tps),
        _copy_with(trained, tmp_path / "b", tokens_per_s=1.2 * planned_tps),
        _copy_with(trained, tmp_path / "c", tokens_per_s=0.5 * planned_tps),
    ]
    out = tmp_path / "report"
    out.mkdir()
    result = report(compose("task=report", f"runs=[{','.join(map(str, runs))}]"), out)["calibration"]
    rows = result["runs"]
    assert [r["run_dir"] for r in rows] == [str(r) for r in runs]
    assert [r["tokens_per_s_ratio"] for r in rows] == pytest.approx([1.0, 1.2, 0.5])
    assert result["median"]["tokens_per_s"] == {
        "runs": 3,
        "median_ratio": pytest.approx(1.0),
        "median_error": pytest.approx(0.2),
    }
    # model states and peak memory: the summary's own planned and measured numbers, ratio measured / planned
    for quantity, (planned_key, measured_key, _) in QUANTITIES.items():
        if quantity == "tokens_per_s":
            continue
        assert rows[0][f"planned_{quantity}"] == s[planned_key] and rows[0][f"measured_{quantity}"] == s[measured_key]
        assert rows[0][f"{quantity}_ratio"] == pytest.approx(s[measured_key] / s[planned_key])
        assert result["median"][quantity]["median_error"] == pytest.approx(abs(s[measured_key] / s[planned_key] - 1))
    assert json.loads((out / CALIBRATION_FILE).read_text())["median"]["tokens_per_s"]["runs"] == 3
    printed = capsys.readouterr().out
    assert "planned vs measured: 3 runs" in printed and "median" in printed and "process peak RSS" in printed


@pytest.mark.slow
def test_an_older_summary_is_read_with_its_plan_json(trained, tmp_path):
    """A summary without the planned_* keys takes them from the run's plan.json."""
    run = _copy_with(trained, tmp_path / "old")
    summary = read_summary(run)
    for key in ("planned_model_state_bytes", "planned_peak_memory_bytes", "planned_tokens_per_s"):
        summary.pop(key)
    (run / "summary.json").write_text(json.dumps(summary))
    plan = json.loads((run / "plan.json").read_text())
    mem = plan["memory_per_device_bytes"]
    row = report(compose("task=report", f"runs=[{run}]"), tmp_path / "r")["calibration"]["runs"][0]
    assert row["planned_model_state_bytes"] == mem["params"] + mem["grads"] + mem["optimizer"]
    assert row["planned_peak_memory_bytes"] == mem["total"] and row["planned_tokens_per_s"] == plan["tokens_per_s"]


@pytest.mark.slow
def test_report_over_a_sweep_calibrates_its_finished_points(trained, tmp_path):
    """A sweep directory: the sweep report as before, plus calibration.json over the points with a summary (a
    failed point, status.json only, is left out)."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    _copy_with(trained, sweep / "0")
    (sweep / "1").mkdir()
    (sweep / "1" / "status.json").write_text(json.dumps({"status": "failed", "error": "ConfigError: x"}))
    result = report(compose("task=report", f"sweep_dir={sweep}"), tmp_path / "r")
    assert [r["status"] for r in result["rows"]] == ["completed", "failed"]
    assert [r["run_dir"] for r in result["calibration"]["runs"]] == [str(sweep / "0")]
    assert (sweep / CALIBRATION_FILE).is_file() and (sweep / "report.json").is_file()


def test_bad_input_is_one_error_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"task=report needs sweep_dir=DIR .* or runs=\[RUN_DIR,...\]"):
        report(compose("task=report"), tmp_path / "r")
    with pytest.raises(ConfigError, match=f"runs: {empty} has no summary.json .*; {tmp_path}/nope is not a directory"):
        report(compose("task=report", f"runs=[{empty},{tmp_path}/nope]"), tmp_path / "r")
    (empty / "summary.json").write_text("{")
    with pytest.raises(ConfigError, match="summary.json cannot be read"):
        report(compose("task=report", f"runs=[{empty}]"), tmp_path / "r")
    proc = run_bigtrain("task=report", f"runs=[{tmp_path}/nope]", run_dir=tmp_path / "cli")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"bigtrain: error: runs: {tmp_path}/nope is not a directory; give run directories of finished training runs "
        "(runs=[DIR1,DIR2])"
    ]
    assert not (tmp_path / "cli").exists()


def test_median_error_per_quantity_skips_missing_numbers(tmp_path):
    """Quick tier, hand-written summaries: ratios 1.0 / 1.5 / 0.8 give median ratio 1.0 and median error 0.2; a run
    without a measured value (None) is left out of that quantity's median, not counted as 0."""
    rows = []
    for i, (tps, peak) in enumerate([(100.0, 2e6), (150.0, None), (80.0, 4e6)]):
        run = tmp_path / str(i)
        run.mkdir()
        summary = {
            "planned_tokens_per_s": 100.0,
            "tokens_per_s": tps,
            "planned_peak_memory_bytes": 1e6,
            "measured_peak_memory_bytes": peak,
            "planned_model_state_bytes": 10,
            "measured_model_state_bytes": 10,
        }
        (run / "summary.json").write_text(json.dumps(summary))
        rows.append(read_run(run, "test"))
    m = medians(rows)
    assert m["tokens_per_s"] == {"runs": 3, "median_ratio": pytest.approx(1.0), "median_error": pytest.approx(0.2)}
    assert m["peak_memory_bytes"] == {"runs": 2, "median_ratio": pytest.approx(3.0), "median_error": pytest.approx(2.0)}
    assert m["model_state_bytes"]["median_error"] == 0
