"""ZeRO stages 0-3, offload and FSDP: real 2-process CPU runs (gloo) of the nano GPT, plus the validation rules.

One module-scoped 2-process job (tests/zero_worker.py) trains every configuration below in sequence, sharing the
processes' start-up; each test then reads what its runs recorded (probe.pt, summary.json, checkpoints). One more
run goes through the real CLI (`parallelism=deepspeed zero=3 offload=cpu hardware.devices=2`), started beside that
job (one torch thread per rank in both).
"""

from __future__ import annotations

import os
import shutil
import sys

import pytest
import torch

from bigtrain.config.validate import problems_of, validate
from bigtrain.errors import ConfigError
from tests.conftest import NANO, REPO, assert_ok, compose, finish, read_summary, run_bigtrain, start_bigtrain
from tests.launch import launch

STEPS = 6
# 6 optimizer steps of 2 ranks x 4 sequences, a checkpoint every 3 steps; a constant LR after warmup so a run of
# 3 steps and its resumed continuation see the same schedule as one run of 6.
COMMON = [
    *NANO,
    f"trainer.max_steps={STEPS}",
    "trainer.val_check_interval=3",
    "trainer.checkpoint_every_n_steps=3",
    "optim.decay=constant",
    "trainer.sample_tokens=0",
    "hardware.devices=2",
    # Partition every tensor (DeepSpeed keeps tensors under 1e5 elements whole, which is all of nano), so the
    # per-rank halves are visible.
    "zero.stage3_param_persistence_threshold=0",
]
N_PARAMS = 34_688  # nano: tied weights counted once
TRAJECTORY_TOL = 1e-5  # fp32: ZeRO only moves where states live, not the arithmetic
NVME_TOL = 1e-4  # DeepSpeedCPUAdam's vectorised step vs torch's AdamW: same maths, different rounding order


def _has_libaio() -> bool:
    """ZeRO-Infinity's async_io op links libaio (Debian: libaio-dev, which .ci/run installs)."""
    return any(os.path.exists(p) for p in ("/usr/include/libaio.h", "/usr/local/include/libaio.h"))


def _runs(root) -> dict[str, list[str]]:
    runs = {
        "z0": ["parallelism=deepspeed", "zero=0"],
        "z1": ["parallelism=deepspeed", "zero=1"],
        "z2": ["parallelism=deepspeed", "zero=2"],
        "z3a": ["parallelism=deepspeed", "zero=3", "trainer.max_steps=3"],  # steps 1-3, checkpoint at 3
        # steps 4-6, resumed from z3a's sharded checkpoint; samples text from the gathered ZeRO-3 weights
        "z3b": [
            "parallelism=deepspeed",
            "zero=3",
            f"resume={root / 'z3a' / 'checkpoints' / 'last.ckpt'}",
            "trainer.sample_tokens=8",
        ],
        "fsdp3": ["parallelism=fsdp", "zero=3", "trainer.sample_tokens=8"],
        "fsdp2": ["parallelism=fsdp", "zero=2"],
    }
    if _has_libaio():
        # DeepSpeed never swaps a tensor under 1 MiB (swap_tensor/utils.py MIN_AIO_BYTES), and nano's largest is
        # 32 KiB: a wider model (4 x 384 x 384 MLP weights, 1.2 MiB per rank) makes both swappers really write.
        wide = ["parallelism=deepspeed", "zero=3", "model.n_embd=384"]
        runs["wide"] = wide
        runs["nvme"] = [*wide, "offload=nvme", f"offload.nvme_path={root / 'nvme-swap'}"]
    return runs


ONE_THREAD = {"OMP_NUM_THREADS": "1"}
CLI_OFFLOAD = [*NANO, "parallelism=deepspeed", "zero=3", "offload=cpu", "hardware.devices=2"]


@pytest.fixture(scope="module")
def cli_offload_started(tmp_path_factory):
    """The CLI run of CLI_OFFLOAD, started (zero_runs asks for it first, so it trains beside zero_runs' job)."""
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    proc = start_bigtrain(*CLI_OFFLOAD, run_dir=run_dir, env=ONE_THREAD)
    yield run_dir, proc
    if proc.returncode is None:  # a selection that never read it (-k): wait for it, leave nothing running
        finish(proc)


@pytest.fixture(scope="module")
def zero_runs(cli_offload_started, tmp_path_factory):
    from bigtrain.tasks.train import prepared_data, save_run_config

    root = tmp_path_factory.mktemp("zero")
    (root / "nvme-swap").mkdir()
    runs = _runs(root)
    data = None  # every run trains on the same prepared corpus: prepare (or find) it once
    for name, overrides in runs.items():
        cfg = compose(*COMMON, *overrides)
        validate(cfg, launching=True)
        data = data or str(prepared_data(cfg, progress=False))
        cfg.data.prepared_dir = data
        save_run_config(cfg, root / name)
    launch(
        [sys.executable, str(REPO / "tests" / "zero_worker.py"), *(str(root / n) for n in runs)], 2, root, ONE_THREAD
    )
    return root


def probe(root, name) -> dict:
    return torch.load(root / name / "probe.pt", weights_only=False)


def losses(root, *names) -> list[tuple[int, float]]:
    return [pair for name in names for pair in probe(root, name)["losses"]]


@pytest.mark.slow
def test_zero_stages_0_to_3_give_the_same_fp32_loss_trajectory(zero_runs):
    reference = losses(zero_runs, "z0")
    assert [step for step, _ in reference] == list(range(1, STEPS + 1))
    for stage in (["z1"], ["z2"], ["z3a", "z3b"]):
        got = losses(zero_runs, *stage)
        assert [s for s, _ in got] == [s for s, _ in reference], stage
        diffs = [abs(a - b) for (_, a), (_, b) in zip(got, reference, strict=True)]
        assert max(diffs) < TRAJECTORY_TOL, (stage, got, reference)
    assert reference[-1][1] < reference[0][1]  # and it trains


def _assert_half(values: list[int], total: int, what: str) -> None:
    # DeepSpeed pads each partition to an alignment boundary, so halves may exceed total / 2 by a little.
    assert len(values) == 2, values
    for v in values:
        assert total / 2 <= v <= total / 2 + 64, f"{what}: rank holds {v} of {total} (expected about half): {values}"


@pytest.mark.slow
def test_sharding_is_real_per_the_engines_own_partitions(zero_runs):
    held = {n: read_summary(zero_runs / n)["held_numel_per_rank"] for n in ("z0", "z1", "z2", "z3b", "fsdp3", "fsdp2")}
    assert held["z0"] == {"params": [N_PARAMS] * 2, "optimizer_states": [N_PARAMS] * 2}
    for name in ("z1", "z2"):
        assert held[name]["params"] == [N_PARAMS] * 2, name  # parameters whole on every rank below stage 3
        _assert_half(held[name]["optimizer_states"], N_PARAMS, f"{name} optimizer states")
    for name in ("z3b", "fsdp3"):
        _assert_half(held[name]["params"], N_PARAMS, f"{name} parameters")
        _assert_half(held[name]["optimizer_states"], N_PARAMS, f"{name} optimizer states")
    _assert_half(held["fsdp2"]["optimizer_states"], N_PARAMS, "fsdp2 optimizer states")


@pytest.mark.slow
def test_resume_from_a_sharded_checkpoint_continues_at_the_right_step(zero_runs):
    first, resumed = probe(zero_runs, "z3a")["losses"], probe(zero_runs, "z3b")["losses"]
    assert [s for s, _ in first] == [1, 2, 3] and [s for s, _ in resumed] == [4, 5, 6]
    assert (zero_runs / "z3a" / "checkpoints" / "last.ckpt" / "checkpoint").is_dir()  # DeepSpeed's sharded folder
    shards = list((zero_runs / "z3a" / "checkpoints" / "last.ckpt").rglob("zero_pp_rank_*_optim_states.pt"))
    assert len(shards) == 2, shards  # one optimizer shard per rank
    summary = read_summary(zero_runs / "z3b")
    assert summary["steps"] == STEPS and summary["zero_stage"] == 3
    # The loss continues where it was: the resumed run's steps equal the uninterrupted stage-0 run's (test above).


@pytest.mark.slow
@pytest.mark.parametrize("name", ["z3b", "fsdp3"])
def test_consolidated_fp32_weights_give_the_sharded_models_logits(zero_runs, name, tmp_path):
    from bigtrain.model import GPT, GPTConfig
    from bigtrain.tasks import consolidate
    from tests.zero_worker import probe_input

    cfg = compose(*COMMON, "task=consolidate", f"ckpt={zero_runs / name / 'checkpoints' / 'last.ckpt'}")
    result = consolidate.run(cfg, tmp_path)
    saved = torch.load(result["consolidated"], weights_only=False)
    gpt = GPT(GPTConfig(**saved["model"]))
    gpt.load_state_dict(saved["state_dict"])
    assert all(v.dtype == torch.float32 for v in saved["state_dict"].values())
    assert gpt.lm_head.weight is gpt.transformer.wte.weight  # still tied after loading
    gpt.eval()
    with torch.no_grad():
        logits, _ = gpt(probe_input(gpt.config.vocab_size, gpt.config.block_size))
    sharded = probe(zero_runs, name)["logits"]
    torch.testing.assert_close(logits, sharded, atol=1e-5, rtol=1e-5)
    summary = read_summary(zero_runs / name)
    assert summary["n_params"] == N_PARAMS == result["n_params"]
    assert summary["sample"] and summary["sample"].startswith(
        cfg.trainer.sample_prompt
    )  # sampled from gathered weights


@pytest.mark.slow
def test_fsdp_trains_like_zero(zero_runs):
    reference = losses(zero_runs, "z0")
    for name in ("fsdp3", "fsdp2"):
        got = losses(zero_runs, name)
        assert max(abs(a - b) for (_, a), (_, b) in zip(got, reference, strict=True)) < TRAJECTORY_TOL, name
        summary = read_summary(zero_runs / name)
        assert summary["strategy"] == "CPUFSDPStrategy" and summary["parallelism"] == "fsdp"


@pytest.mark.slow
@pytest.mark.skipif(not _has_libaio(), reason="libaio-dev is not installed (.ci/run installs it)")
def test_nvme_offload_swaps_to_the_path_and_trains_like_no_offload(zero_runs):
    p = probe(zero_runs, "nvme")
    swap = zero_runs / "nvme-swap"
    files = p["nvme_files"]
    assert files and all(f.startswith(str(swap)) for f in files), files
    assert any("/float32params/" in f and f.endswith("_param.tensor.swp") for f in files), files  # parameters
    assert any("/optimizer/" in f and f.endswith(".tensor.swp") for f in files), files  # optimizer states
    reference = losses(zero_runs, "wide")
    assert [s for s, _ in p["losses"]] == [s for s, _ in reference] == list(range(1, STEPS + 1))
    diffs = [abs(a - b) for (_, a), (_, b) in zip(p["losses"], reference, strict=True)]
    assert max(diffs) < NVME_TOL, (p["losses"], reference)
    summary = read_summary(zero_runs / "nvme")
    assert summary["offload"] == "nvme" and summary["optimizer"] == "DeepSpeedCPUAdam"


@pytest.mark.slow
def test_cli_deepspeed_zero3_offload_cpu_records_strategy_stage_and_offload(cli_offload_started):
    run_dir, proc = cli_offload_started
    assert_ok(finish(proc))
    s = read_summary(run_dir)
    assert (s["parallelism"], s["strategy"], s["zero_stage"], s["offload"]) == (
        "deepspeed",
        "CPUDeepSpeedStrategy",
        3,
        "cpu",
    )
    assert s["optimizer"] == "DeepSpeedCPUAdam"  # optimizer states and step on the host
    assert s["world_size"] == 2 and s["steps"] == 12 and s["n_params"] == N_PARAMS
    assert s["final_val_loss"] < s["first_val_loss"]
    _assert_half(s["held_numel_per_rank"]["optimizer_states"], N_PARAMS, "offloaded optimizer states")
    assert s["peak_memory_bytes"] > 0


# --- validation: each rule refuses before launch, naming the values and what would be valid ---------------------


def _problems(*overrides: str) -> str:
    return "; ".join(problems_of(compose(*overrides)))


def test_nvme_below_stage_3_is_refused():
    msg = _problems("parallelism=deepspeed", "zero=2", "offload=nvme", "offload.nvme_path=/tmp")
    assert "offload=nvme needs zero=3" in msg and "zero.stage=2" in msg


def test_nvme_without_a_path_is_refused():
    assert "offload=nvme needs offload.nvme_path" in _problems("parallelism=deepspeed", "zero=3", "offload=nvme")


@pytest.mark.parametrize("parallelism", ["single", "ddp"])
def test_offload_without_deepspeed_or_fsdp_is_refused(parallelism):
    msg = _problems(f"parallelism={parallelism}", "offload=cpu")
    assert f"offload=cpu needs a sharded strategy, but parallelism={parallelism}" in msg
    assert "use parallelism=deepspeed or fsdp" in msg


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_cpu_params_below_stage_3_is_refused(stage):
    msg = _problems("parallelism=deepspeed", f"zero={stage}", "offload=cpu-params")
    assert f"offload=cpu-params offloads parameters, which only ZeRO stage 3 partitions, but zero.stage={stage}" in msg


def test_fsdp_rules():
    assert "zero.stage=1 has no FSDP equivalent" in _problems("parallelism=fsdp", "zero=1")
    assert "use offload=cpu-params with zero=3" in _problems("parallelism=fsdp", "zero=3", "offload=cpu")


def test_missing_or_unwritable_nvme_path_is_refused_at_launch(tmp_path):
    base = ["parallelism=deepspeed", "zero=3", "offload=nvme"]
    missing = tmp_path / "no-such-disk"
    with pytest.raises(ConfigError, match=f"offload.nvme_path={missing} does not exist"):
        validate(compose(*base, f"offload.nvme_path={missing}"), launching=True)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):  # root ignores permission bits; a read-only bind mount would be needed
        shutil.rmtree(locked)
        locked = "/proc"
    with pytest.raises(ConfigError, match="is not writable by this user"):
        validate(compose(*base, f"offload.nvme_path={locked}"), launching=True)
    validate(compose(*base, f"offload.nvme_path={tmp_path}"), launching=True)  # a writable folder passes


def test_fp16_on_cpu_is_refused():
    msg = _problems("parallelism=deepspeed", "zero=2", "trainer.precision=16-mixed")
    assert "trainer.precision=16-mixed (fp16) is not supported on CPU; use 32-true or bf16-mixed" in msg


def test_cli_refuses_before_launch(tmp_path):
    proc = run_bigtrain("parallelism=ddp", "offload=cpu", run_dir=tmp_path / "refused")
    assert proc.returncode == 2 and proc.stderr.startswith("bigtrain: error: ")
    assert "offload=cpu needs a sharded strategy" in proc.stderr
    assert not (tmp_path / "refused").exists()
