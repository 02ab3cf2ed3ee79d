"""task=plan end to end (JSON keys, table, search, plot, recipes), bad input, and the pre-flight check of
task=train. Most run in-process on the composed config; a few go through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, compose, run_bigtrain
from plan_helpers import setup

from bigtrain.config.validate import validate
from bigtrain.errors import ConfigError
from bigtrain.plan import plan, preflight, search
from bigtrain.tasks.plan import run as run_plan

GPT3 = [
    "model=gpt3-175b",
    "hardware=a100-80g-x8",
    "hardware.nodes=128",
    "parallelism=ddp",
    "trainer.global_batch_size=1024",
    "trainer.micro_batch_size=1",
]
REQUIRED_KEYS = (
    "n_params memory_per_device_bytes host_memory_bytes nvme_bytes device_memory_bytes fits flops_per_token "
    "step_time_s tokens_per_s train_tokens train_flops train_time_s device_hours cost_usd"
).split()


def test_planner_imports_no_torch():
    code = "import sys, bigtrain.plan, bigtrain.tasks.plan; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_json_output_has_the_issue_keys(tmp_path):
    proc = run_bigtrain("task=plan", "plan.format=json", *GPT3, "zero.stage=3", run_dir=tmp_path / "r")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)  # stdout is exactly one JSON object
    for key in REQUIRED_KEYS:
        assert key in out, key
    assert set(out["memory_per_device_bytes"]) == {"params", "grads", "optimizer", "activations", "buffers", "total"}
    mem = out["memory_per_device_bytes"]
    assert mem["total"] == pytest.approx(sum(v for k, v in mem.items() if k != "total"), abs=5)  # int rounding
    assert set(out["formulas"]) >= {"params", "grads", "optimizer", "activations", "buffers", "flops_per_token"}
    assert json.loads((tmp_path / "r" / "plan.json").read_text())["n_params"] == out["n_params"]


def test_table_names_every_term_and_its_formula(tmp_path, capsys):
    cfg = compose("task=plan", *GPT3, "zero.stage=3")
    run_plan(cfg, tmp_path)
    text = capsys.readouterr().out
    for needle in ("params", "grads", "optimizer", "activations", "buffers", "total", "Korthikanti", "ZeRO", "PaLM"):
        assert needle in text
    assert "DOES NOT FIT" in text  # 175B at ZeRO-3 with no model parallelism: activations alone exceed 80 GB


def test_zero_stages_shrink_device_memory_and_offload_moves_it_to_the_host():
    totals = []
    for stage in range(4):
        p = plan(
            compose("task=plan", "model=gpt2-1.5b", "hardware=a100-80g-x8", "parallelism=ddp", f"zero.stage={stage}")
        )
        totals.append(
            p["memory_per_device_bytes"]["params"]
            + p["memory_per_device_bytes"]["grads"]
            + p["memory_per_device_bytes"]["optimizer"]
        )
    assert totals == sorted(totals, reverse=True) and totals[3] < totals[0] / 6
    on = plan(
        compose(
            "task=plan",
            "model=gpt2-1.5b",
            "hardware=a100-80g-x8",
            "parallelism=ddp",
            "zero.stage=3",
            "offload=cpu-params",
        )
    )
    assert on["memory_per_device_bytes"]["optimizer"] == 0
    # Only ZeRO-3's persistent small tensors (biases, LayerNorms) stay on the GPU: 2 bytes x ~1M of 1.56B.
    assert 0 < on["memory_per_device_bytes"]["params"] < 2 * 0.001 * on["n_params"]
    assert on["host_memory_bytes"] == pytest.approx(18 * on["n_params"], rel=1e-6)  # per node: 8 ranks x 18/8


def test_recompute_and_tensor_parallel_shrink_activations():
    acts = {}
    for r in ("none", "selective", "full"):
        acts[r] = plan(compose("task=plan", "model=gpt2-1.5b", f"plan.activation_recompute={r}"))[
            "memory_per_device_bytes"
        ]["activations"]
    assert acts["none"] > acts["selective"] > acts["full"]
    base = setup("model=gpt3-175b", "hardware=a100-80g-x8", "parallelism=ddp")
    from bigtrain.plan import memory

    a1 = memory.activations(base)
    a8 = memory.activations(base.vary(tp=8))
    a8sp = memory.activations(base.vary(tp=8, sequence_parallel=True))
    assert a1 > a8 > a8sp


def _composable(overrides: str) -> list[str]:
    """The search prints the overrides that launch a layout once the DeepSpeed strategy exists (parallelism=
    deepspeed, zero=N). Until that branch is merged this one has neither, so plan the same layout through
    parallelism=ddp (the planner treats zero >= 1 as a ZeRO engine either way) and zero.stage=N."""
    from bigtrain.config.validate import PARALLELISMS

    out = []
    for part in overrides.split():
        if part == "parallelism=deepspeed" and "deepspeed" not in PARALLELISMS:
            part = "parallelism=ddp"
        if part.startswith("zero="):
            part = "zero.stage=" + part.split("=")[1]
        out.append(part)
    return out


def test_search_tries_over_a_thousand_layouts_and_its_overrides_plan_back():
    base_overrides = [
        "model=gpt3-13b",
        "hardware=a100-80g-x8",
        "parallelism=ddp",
        "trainer.global_batch_size=512",
        "trainer.micro_batch_size=1",
        "plan.train_tokens=300000000000",
    ]
    found, tried = search(setup(*base_overrides), max_nodes=16, rank_by="time")
    assert tried >= 1000 and 0 < len(found) < tried
    times = [float(f"{c.timing['train_time_s']:.3g}") for c in found]  # ranked to 3 digits, then simplest first
    assert times == sorted(times)
    for cand in found[:3]:
        again = plan(compose("task=plan", *base_overrides, *_composable(cand.overrides)))
        assert again["fits"]
        assert again["memory_per_device_bytes"]["total"] == pytest.approx(cand.memory["total"], abs=2)
        assert again["train_time_s"] == pytest.approx(cand.timing["train_time_s"])
    by_cost, _ = search(setup(*base_overrides), max_nodes=16, rank_by="cost")
    costs = [float(f"{c.timing['cost_usd']:.3g}") for c in by_cost]
    assert costs == sorted(costs)


def test_search_and_plot_from_the_task(tmp_path, capsys):
    cfg = compose("task=plan", "recipe=zero-7.5b-64gpu", "plan.search=true", "plan.top=5")
    result = run_plan(cfg, tmp_path)
    text = capsys.readouterr().out
    assert "search:" in text and "overrides" in text and "parallelism=" in text
    assert len(result["search"]["top"]) == 5
    png = tmp_path / "plan.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.parametrize(
    "recipe", ["gpt3-175b-a100", "dgx2-largest-zero3-cpu", "dgx2-largest-zero3-nvme", "zero-7.5b-64gpu"]
)
def test_recipes_plan_as_their_headers_say(recipe):
    cfg = compose(f"recipe={recipe}")
    assert cfg.task == "plan"
    validate(cfg, planning=True)
    p = plan(cfg)
    assert p["fits"] == cfg.notes.expected_fits
    if "expected_max_n_layer" in cfg.notes:  # "largest": one layer more must not fit
        assert p["max_n_layer_that_fits"] == cfg.notes.expected_max_n_layer == cfg.model.n_layer
        deeper = compose(f"recipe={recipe}", f"model.n_layer={cfg.model.n_layer + 1}")
        assert not plan(deeper)["fits"]
    if "expected_model_states_gb_paper" in cfg.notes:  # per zero stage, under DeepSpeed
        from bigtrain.plan import memory, setup_from
        from bigtrain.plan.params import n_params

        base = setup_from(cfg)
        for stage in range(4):
            s = base.vary(zero=stage, parallelism="deepspeed")
            for accounting in ("paper", "deepspeed"):
                got = sum(
                    memory.model_states(s, n_params(s), "engine" if accounting == "deepspeed" else "paper").values()
                )
                assert got / 1e9 == pytest.approx(cfg.notes[f"expected_model_states_gb_{accounting}"][stage], abs=0.05)
    if recipe == "gpt3-175b-a100":
        assert p["n_params"] == pytest.approx(cfg.notes.expected_n_params, rel=0.001)
        assert p["train_days"] == pytest.approx(cfg.notes["expected_train_days_at_mfu_0.4"], abs=0.5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["parallelism.tp=3"], "parallelism.tp=3 does not divide model.n_head=4"),
        (["parallelism=ddp", "hardware.devices=6", "parallelism.tp=4"], "dp(1) x tp(4) x pp(1) = 4 != device count 6"),
        (["zero.stage=5"], "zero.stage=5 is unknown; valid: 0, 1, 2, 3"),
        (["trainer.micro_batch_size=-4"], "trainer.micro_batch_size=-4 must be a positive number"),
        (["trainer.global_batch_size=-16"], "trainer.global_batch_size=-16 must be a positive number"),
        (["parallelism.pp=5"], "parallelism.pp=5 exceeds model.n_layer=4"),
        (["plan.format=xml"], "plan.format=xml is unknown; valid: table, json"),
        (["plan.mfu=1.5"], "plan.mfu=1.5 must be in (0, 1]"),
        (["plan.activation_recompute=some"], "plan.activation_recompute=some is unknown"),
        (["parallelism=ddp", "zero.stage=2", "offload=cpu-params"], "needs zero.stage=3 but zero.stage=2"),
    ],
)
def test_bad_input_is_one_clear_error(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        validate(compose("task=plan", *overrides), planning=True)


def test_bad_input_from_the_cli_exits_2(tmp_path):
    proc = run_bigtrain(
        "task=plan", "parallelism=ddp", "hardware.devices=6", "parallelism.tp=3", run_dir=tmp_path / "r"
    )
    assert proc.returncode == 2
    assert "bigtrain: error: parallelism.tp=3 does not divide model.n_head=4" in proc.stderr
    assert "valid tp: 1, 2, 4" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_preflight_suggests_a_layout_that_fits():
    cfg = compose(
        "model=gpt2-1.5b",
        "hardware=a100-40g-x8",
        "parallelism=ddp",
        "trainer.global_batch_size=64",
        "trainer.micro_batch_size=8",
    )
    with pytest.raises(ConfigError) as err:
        preflight(cfg, echo=lambda line: None)
    text = str(err.value)
    assert "does NOT fit" in text and "largest:" in text and "a layout that fits: parallelism=" in text
    assert "plan.enforce=false" in text
    cfg.plan.enforce = False
    lines = []
    assert not preflight(cfg, echo=lines.append)["fits"]
    assert "launching anyway" in lines[0]


def test_preflight_refuses_gpt3_on_cpu_and_leaves_no_run_dir(tmp_path):
    """task=train refuses before data preparation or any write: exit 2, the reason on stderr, no run dir."""
    run_dir = tmp_path / "run"
    proc = run_bigtrain("model=gpt3-175b", "trainer.progress=false", run_dir=run_dir, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "bigtrain: error: plan: does NOT fit" in proc.stderr
    assert "(largest: activations" in proc.stderr and "hardware=a100-80g-x8" in proc.stderr
    assert not run_dir.exists()
