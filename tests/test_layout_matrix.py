"""The layout-equivalence matrix, generated from the config groups: every `parallelism` option with every `zero` and
`offload` option that validation accepts and 2 CPU processes can run (offload=nvme left out: it needs an NVMe
folder and DeepSpeed's async_io op; FSDP with offload=cpu-params: its pinned host memory needs an accelerator).
A new option in conf/parallelism, conf/zero or conf/offload is covered without editing this file.

(a) Same seed, same tokens, 8 fp32 steps of 8 sequences (micro-batches of 4): every layout's loss at every step
    within 1e-5 of the single process's.
(b) Each layout A saves at step 4 (the checkpoint of run (a)); each of at least three Bs resumes it and trains on to
    step 8: every step within 1e-5 of the uninterrupted single run. The Bs, chosen here by rule: the single process,
    one data-parallel layout, one sharded layout (rotating over the ZeRO/FSDP ones) and one model-parallel layout
    (rotating over tensor parallel, TP + FSDP2 and pipeline: every option that is neither data-parallel nor
    sharded), each other than A. The checkpoint goes through task=train's own decision (training/cross_layout.py:
    loaded as is on its own layout, else converted to the layout-neutral form by the format's own tool).

Measured (2 CPU processes, machine loaded, load average 1-3): full matrix 16 layouts, 64 pairs (every layout a
source; every sharded and model-parallel one a target) plus task=consolidate of each, 4.5 min; every curve within
4.8e-7 of single.

Default (slow tier): a representative slice (LAYOUT_SLICE: single, DDP, ZeRO-2 with CPU offload, FSDP full shard,
tensor parallel, pipeline: 6 layouts, one of each kind, and the 23 pairs among them that the rule picks, >= 3 Bs
per A). DeepSpeed ZeRO-3 is left to the full matrix: its loss curve and its own resume are tests/test_zero.py's,
its shards' consolidation and generation tests/test_use_checkpoints.py's. Full matrix:
`pytest -m matrix tests/test_layout_matrix.py`.
Processes: one 1-process and one 2-process launch for (a), side by side, the same for (b); each worker trains its
configs in turn.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import pytest

from bigtrain.config.cli import CONF_DIR
from bigtrain.config.layout import SHARDED_PARALLELISMS
from bigtrain.config.validate import validate
from bigtrain.errors import BigtrainError
from bigtrain.training.cross_layout import LOADS_NEUTRAL
from tests.conftest import REPO, SMALL_DATA, compose
from tests.launch import start, wait

STEPS, SAVE_AT, TOL = 8, 4, 1e-5
BASE = [
    "model=nano",
    f"trainer.max_steps={STEPS}",
    f"trainer.checkpoint_every_n_steps={SAVE_AT}",
    "trainer.keep_last=4",
    "trainer.val_check_interval=100",
    "trainer.val_batches=0",
    "trainer.global_batch_size=8",
    "trainer.micro_batch_size=4",
    "trainer.log_every_n_steps=1",
    "trainer.progress=false",
    "trainer.sample_tokens=0",
    "optim.warmup_steps=2",
    "logger=csv",
    *SMALL_DATA,
]
EXCLUDED_OFFLOAD = {"nvme": "needs offload.nvme_path and DeepSpeed's async_io op"}
# FSDP's CPU offload pins host memory at its first forward, which needs an accelerator (torch: "Cannot access
# accelerator device when none is available"): it does not run on CPU processes.
EXCLUDED_PAIRS = {("fsdp", "cpu-params"): "pins host memory: needs an accelerator"}
LAYOUT_SLICE = ("single", "ddp", "deepspeed-z2-cpu", "fsdp-z3", "tp", "pipeline")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@functools.cache
def enumerate_layouts() -> dict[str, list[str]]:
    """name -> overrides of every parallelism x zero x offload combination that validates on <= 2 CPU processes.
    zero and offload vary for the strategies the Layout calls sharded (validation refuses them elsewhere)."""
    out: dict[str, list[str]] = {}
    for par in _options("parallelism"):
        varies = compose(*BASE, f"parallelism={par}").parallelism.name in SHARDED_PARALLELISMS
        for zero in _options("zero") if varies else ["0"]:
            for off in _options("offload") if varies else ["none"]:
                if off in EXCLUDED_OFFLOAD or (par, off) in EXCLUDED_PAIRS:
                    continue
                overrides = [f"parallelism={par}", f"zero={zero}", f"offload={off}"]
                overrides += [] if par == "single" else ["hardware.devices=2"]
                try:
                    validate(compose(*BASE, *overrides), launching=True)
                except BigtrainError:
                    continue
                name = par if (zero, off) == ("0", "none") and par not in ("deepspeed", "fsdp") else f"{par}-z{zero}"
                name += "" if off == "none" else f"-{off}"
                out[name] = overrides
    return out


def convertible() -> list[str]:
    return [n for n in enumerate_layouts() if n.split("-")[0] in LOADS_NEUTRAL]


def sharded() -> list[str]:
    return [n for n in convertible() if n.split("-")[0] in SHARDED_PARALLELISMS and "-z0" not in n]


def model_parallel() -> list[str]:
    """Layouts that split the model itself (tensor parallel, pipeline, ...): neither data-parallel nor sharded."""
    return [n for n in convertible() if n.split("-")[0] not in ("single", "ddp", *SHARDED_PARALLELISMS)]


def _rotate(a: str, candidates: list[str], pool: list[str]) -> str | None:
    """One of `candidates` (in pool, other than a), a different one for successive As of the pool."""
    others = [s for s in candidates if s in pool and s != a]
    return others[pool.index(a) % len(others)] if others else None


def targets_of(a: str, pool: list[str]) -> list[str]:
    """The Bs for source A: the single process, one data-parallel layout (DDP; ZeRO-0 DeepSpeed when A is DDP), one
    sharded layout and one model-parallel layout other than A, each rotating so every one is a B for some A."""
    dp = "ddp" if a != "ddp" else "deepspeed-z0"
    picks = ["single", dp, _rotate(a, sharded(), pool), _rotate(a, model_parallel(), pool)]
    return [b for b in dict.fromkeys(picks) if b and b in pool]


def pairs_of(names: list[str]) -> list[tuple[str, str]]:
    pool = [n for n in names if n in convertible()]
    return [(a, b) for a in pool for b in targets_of(a, pool)]


def _world(name: str) -> int:
    return 1 if name == "single" else 2


def _run(root: Path, names: list[str]) -> None:
    """The 1-process configs in one launch and the 2-process ones in another, side by side (one thread per rank)."""
    jobs = []
    for world in (1, 2):
        dirs = [str(root / n) for n in names if _world(n.split("@")[-1]) == world]
        if dirs:
            command = [sys.executable, str(REPO / "tests" / "matrix_worker.py"), *dirs]
            jobs.append((start(command, world=world, cwd=root), command))
    for procs, command in reversed(jobs):  # the longer 2-process job first: its pipes are drained while it runs
        wait(procs, command)


def _losses(run_dir: Path) -> dict[int, float]:
    return {int(k): v for k, v in json.loads((run_dir / "losses.json").read_text()).items()}


def run_matrix(root: Path, names: list[str], pairs: list | None = None) -> tuple[dict, dict]:
    """(a) every layout's curve; (b) every pair's resumed curve: ({layout: losses}, {(a, b): losses})."""
    from bigtrain.config import layout_of
    from bigtrain.tasks.train import prepared_data, save_run_config
    from bigtrain.training.cross_layout import checkpoint_for_layout

    data = None
    for name in names:
        cfg = compose(*BASE, *enumerate_layouts()[name])
        validate(cfg, launching=True)
        data = data or str(prepared_data(cfg, progress=False))
        cfg.data.prepared_dir = data
        save_run_config(cfg, root / name)
    _run(root, names)
    curves = {n: _losses(root / n) for n in names}

    pairs = pairs_of(names) if pairs is None else pairs
    for a, b in pairs:
        cfg = compose(*BASE, *enumerate_layouts()[b])
        cfg.data.prepared_dir = data
        run_dir = root / f"{a}@{b}"
        saved = root / a / "checkpoints" / f"step-{SAVE_AT:07d}.ckpt"
        cfg.resume = str(checkpoint_for_layout(cfg, layout_of(cfg), saved, run_dir, log=lambda line: None))
        save_run_config(cfg, run_dir)
    _run(root, [f"{a}@{b}" for a, b in pairs])
    return curves, {(a, b): _losses(root / f"{a}@{b}") for a, b in pairs}


def _check(curves: dict, resumed: dict) -> list[str]:
    ref = curves["single"]
    assert sorted(ref) == list(range(1, STEPS + 1)) and ref[STEPS] < ref[1] - 0.1, ref  # it learns
    bad = []
    for name, got in curves.items():
        worst = max(abs(got.get(s, float("inf")) - ref[s]) for s in ref)
        print(f"(a) {name:24s} max |loss - single| = {worst:.1e}")
        if not worst < TOL:
            bad.append(f"(a) {name}: {worst:.2e} {got}")
    for (a, b), got in resumed.items():
        steps = list(range(SAVE_AT + 1, STEPS + 1))
        worst = max(abs(got.get(s, float("inf")) - ref[s]) for s in steps)
        print(f"(b) {a:20s} -> {b:20s} max |loss - single| = {worst:.1e}")
        if sorted(got) != steps or not worst < TOL:
            bad.append(f"(b) {a} -> {b}: {worst:.2e} {got}")
    return bad


@pytest.mark.slow  # composes ~40 configs
def test_matrix_is_generated_from_the_config_groups():
    """The enumeration covers every option of the groups and the pair rule gives >= 3 Bs per source."""
    layouts = enumerate_layouts()
    assert all(any(n == p or n.startswith(f"{p}-") for n in layouts) for p in _options("parallelism")), layouts
    assert {"deepspeed-z0", "deepspeed-z1", "deepspeed-z2", "deepspeed-z3", "deepspeed-z3-cpu-params"} <= set(layouts)
    assert {"fsdp-z0", "fsdp-z2", "fsdp-z3"} <= set(layouts) and "fsdp-z3-cpu-params" not in layouts
    assert all(len(targets_of(a, convertible())) >= 3 for a in convertible())
    assert {"tp", "tp-fsdp", "pipeline"} <= set(model_parallel()) and set(convertible()) == set(layouts)
    assert {b for _, b in pairs_of(list(layouts))} >= {*sharded(), *model_parallel()}  # every one a B somewhere
    # The default slice: one layout of each kind (single, data-parallel, ZeRO sharded with CPU offload, FSDP, tensor
    # parallel, pipeline), each a source with >= 3 Bs, and each of them a B somewhere.
    assert set(LAYOUT_SLICE) <= set(layouts) and {"single", "ddp", "tp", "pipeline"} <= set(LAYOUT_SLICE)
    assert any(n.startswith("deepspeed-z") and n.endswith("-cpu") for n in LAYOUT_SLICE)
    assert any(n.startswith("fsdp-z") for n in LAYOUT_SLICE)
    assert all(len(targets_of(a, list(LAYOUT_SLICE))) >= 3 for a in LAYOUT_SLICE)
    assert {b for _, b in pairs_of(list(LAYOUT_SLICE))} == set(LAYOUT_SLICE)


def _consolidates(root: Path, names: list[str]) -> list[str]:
    """task=consolidate on every layout's step-4 checkpoint: the plain GPT's weights, those the layout-neutral
    reader gives (the same tensors), and within 1e-4 of the single run's (reduction order differs by layout)."""
    import torch

    from bigtrain.parallel.checkpoint_format import describe
    from bigtrain.parallel.neutral import read_neutral
    from bigtrain.tasks import consolidate

    bad, ref = [], None
    for name in ["single", *(n for n in names if n != "single")]:
        ckpt = root / name / "checkpoints" / f"step-{SAVE_AT:07d}.ckpt"
        out = consolidate.run(compose("task=consolidate", f"ckpt={ckpt}"), root / f"{name}-consolidated")
        got = torch.load(out["consolidated"], weights_only=True)["state_dict"]
        ref = ref or got
        neutral = read_neutral(describe(ckpt))["weights"]
        worst = max((got[k] - ref[k]).abs().max().item() for k in ref)
        print(f"consolidate {name:20s} max |w - single| = {worst:.1e}")
        if got.keys() != ref.keys() or not all(torch.equal(got[k], neutral.get(k, got[k])) for k in got):
            bad.append(f"consolidate {name}: keys or weights differ from the neutral reader's")
        elif not worst < 1e-4:
            bad.append(f"consolidate {name}: {worst:.2e} from the single run's weights")
    return bad


@pytest.mark.slow
def test_layout_slice_trains_and_resumes_the_same(tmp_path):
    names = [n for n in LAYOUT_SLICE if n in enumerate_layouts()]
    bad = _check(*run_matrix(tmp_path, names)) + _consolidates(tmp_path, names)
    assert not bad, "\n".join(bad)


@pytest.mark.matrix
@pytest.mark.slow
@pytest.mark.timeout(1800)  # 16 layouts, 64 pairs: one launch per world size and phase
def test_full_layout_matrix(tmp_path, request):
    if "matrix" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the full layout matrix runs when asked for: pytest -m matrix tests/test_layout_matrix.py")
    names = list(enumerate_layouts())
    bad = _check(*run_matrix(tmp_path, names)) + _consolidates(tmp_path, names)
    assert not bad, "\n".join(bad)
