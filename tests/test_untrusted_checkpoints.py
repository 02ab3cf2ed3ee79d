"""A checkpoint that would run code when unpickled is refused on every path that reads one, and never runs.

The payload: a pickled object whose `__reduce__` calls `os.system("touch MARKER")`. Each route must end in one
`bigtrain: error:` line naming the file and saying it holds objects that are not plain tensors, with MARKER never
created. Fixtures, all built in-process in well under a second:
- file / run dir: a real nano GPT state dict and the real composed run config, saved with torch.save, plus the payload;
- DCP (FSDP-style and TP-style, both torch.distributed.checkpoint folders as Lightning writes them): a real
  `torch.distributed.checkpoint.save` (one process, no process group) of the model, with the payload put in the
  three places such a folder holds pickles: a non-tensor entry of the .distcp data, Lightning's meta.pt, and the
  .metadata file itself (hand-written there: DCP writes only its own Metadata into it);
- DeepSpeed-style and pipeline folders: hand-made with the real file names (`latest`, `checkpoint/
  mp_rank_00_model_states.pt`, `checkpoint/zero_pp_rank_0_mp_rank_00_optim_states.pt`, `rank-N.ckpt`, `COMPLETE`),
  because a real DeepSpeed save needs a DeepSpeed engine (a multi-process run); the real folders load through the
  same code in tests/test_zero.py, test_resume.py and test_model_parallel.py.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from conftest import compose, run_bigtrain
from omegaconf import OmegaConf

from bigtrain.safe_load import UnsafeCheckpointError, load, verify_folder, weights_only_loads

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASKS = ("generate", "eval", "export", "consolidate")
NOT_TENSORS = "holds objects that are not plain tensors"


class Payload:
    """Unpickling this runs `touch MARKER` (what an attacker would replace with anything)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def parts():
    """A real nano model's weights and the real run config (as bigtrain stores them in a checkpoint)."""
    from bigtrain.model import GPT, gpt_config_from

    cfg = compose("model=nano")
    state = GPT(gpt_config_from(cfg.model)).state_dict()
    return state, OmegaConf.to_container(cfg, resolve=True)


def _lightning_file(path: Path, parts, payload) -> Path:
    state, run_config = parts
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"state_dict": {f"model.{k}": v for k, v in state.items()}, "global_step": 4, "bigtrain_config": run_config}
    blob["loops"] = {"fit_loop": payload}
    torch.save(blob, path)
    return path


def _run_dir(root: Path, parts, payload) -> Path:
    _lightning_file(root / "checkpoints" / "last.ckpt", parts, payload)
    (root / "config.yaml").write_text(OmegaConf.to_yaml(parts[1]))
    return root


def _deepspeed_folder(root: Path, parts, payload, where: str) -> Path:
    """Hand-made with DeepSpeed's file names; the payload in the model states (client state) or optimizer states."""
    state, run_config = parts
    tag = root / "checkpoint"
    tag.mkdir(parents=True)
    (root / "latest").write_text("checkpoint")
    (root / "COMPLETE").write_text("all 1 ranks saved their part\n")
    model_states = {"module": {f"module.{k}": v for k, v in state.items()}, "bigtrain_config": run_config}
    optim_states = {"optimizer_state_dict": {"zero_stage": 2, "partition_count": 1}}
    (model_states if where == "model" else optim_states)["evil"] = payload
    torch.save(model_states, tag / "mp_rank_00_model_states.pt")
    torch.save(optim_states, tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    return root


def _dcp_folder(root: Path, parts, payload, where: str) -> Path:
    """A real torch.distributed.checkpoint save (FSDP-style and TP-style folders are both this), payload added."""
    import pickle

    import torch.distributed.checkpoint as dcp

    state, run_config = parts
    to_save = {"model": dict(state)}
    if where == "distcp":
        to_save["extra"] = payload  # DCP torch.saves non-tensor values into the .distcp file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is disabled ... assuming a single process"
        dcp.save(to_save, checkpoint_id=str(root))
    meta = {"bigtrain_config": run_config, "global_step": 4}
    if where == "meta.pt":
        meta["evil"] = payload
    torch.save(meta, root / "meta.pt")
    (root / "COMPLETE").write_text("all 1 ranks saved their part\n")
    if where == ".metadata":
        (root / ".metadata").write_bytes(pickle.dumps(payload))
    return root


def _pipeline_folder(root: Path, parts, payload) -> Path:
    root.mkdir(parents=True)
    _lightning_file(root / "rank-0.ckpt", parts, None)
    _lightning_file(root / "rank-1.ckpt", parts, payload)
    (root / "COMPLETE").write_text("all 2 ranks saved their part\n")
    return root


def _build(kind: str, tmp_path: Path, parts, payload) -> Path:
    if kind == "file":
        return _lightning_file(tmp_path / "evil.ckpt", parts, payload)
    if kind == "run-dir":
        return _run_dir(tmp_path / "run", parts, payload)
    if kind.startswith("deepspeed-"):
        return _deepspeed_folder(tmp_path / "ds.ckpt", parts, payload, kind.split("-", 1)[1])
    if kind.startswith("dcp-"):
        return _dcp_folder(tmp_path / "dcp.ckpt", parts, payload, kind.split("-", 1)[1])
    if kind == "pipeline":
        return _pipeline_folder(tmp_path / "pp.ckpt", parts, payload)
    raise ValueError(kind)


CKPT_KINDS = ("file", "run-dir", "deepspeed-model", "deepspeed-optim", "dcp-distcp", "dcp-meta.pt", "dcp-.metadata")


def _assert_refused(message: str, path: Path, marker: Path) -> None:
    assert NOT_TENSORS in message and "weights_only=True" in message, message
    assert str(path) in message, message
    assert "\n" not in message.strip(), message
    assert not marker.exists(), "the payload ran"


def test_the_payload_is_real(tmp_path, parts):
    """The fixtures would run their payload under torch.load(weights_only=False): the tests below test something."""
    marker = tmp_path / "ran"
    path = _lightning_file(tmp_path / "evil.ckpt", parts, Payload(marker))
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.fixture(scope="module")
def task_configs():
    """One composition per task (composing is most of a case's time); each case sets its own ckpt."""
    return {t: compose(f"task={t}", "ckpt=set-per-test", *(["prompt=x"] if t == "generate" else [])) for t in TASKS}


@pytest.mark.parametrize("kind", CKPT_KINDS)
@pytest.mark.parametrize("task", TASKS)
def test_every_task_refuses(task, kind, tmp_path, parts, task_configs):
    import copy

    from bigtrain.tasks import run_task

    marker = tmp_path / "ran"
    path = _build(kind, tmp_path, parts, Payload(marker))
    cfg = copy.deepcopy(task_configs[task])
    cfg.ckpt = str(path)
    with pytest.raises(UnsafeCheckpointError) as e:
        run_task(cfg, tmp_path / "out")
    _assert_refused(str(e.value), path, marker)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", [*CKPT_KINDS, "pipeline"])
def test_resume_refuses(kind, tmp_path, parts):
    """resume=PATH (a file, a run dir, a sharded folder) and resume=auto over a run dir holding one."""
    from bigtrain.training.checkpointing import find_resume_checkpoint

    marker = tmp_path / "ran"
    path = _build(kind, tmp_path, parts, Payload(marker))
    with pytest.raises(UnsafeCheckpointError) as e:
        find_resume_checkpoint(str(path), tmp_path / "new-run")
    _assert_refused(str(e.value), path, marker)
    if kind != "run-dir":  # the same checkpoint found by resume=auto as this run's newest
        run = tmp_path / "auto"
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "step-0000004.ckpt").symlink_to(path, target_is_directory=path.is_dir())
        with pytest.raises(UnsafeCheckpointError):
            find_resume_checkpoint("auto", run)
    assert not marker.exists()


@pytest.mark.parametrize("kind", CKPT_KINDS)
def test_init_from_refuses(kind, tmp_path, parts):
    from bigtrain.checkpoint_io import check_init_from

    marker = tmp_path / "ran"
    path = _build(kind, tmp_path, parts, Payload(marker))
    with pytest.raises(UnsafeCheckpointError) as e:
        check_init_from(compose("model=nano", f"init_from={path}"))
    _assert_refused(str(e.value), path, marker)


def test_the_clean_fixtures_load(tmp_path, parts):
    """Without the payload the same folders pass the check and load: the refusals above are about the payload."""
    from bigtrain.checkpoint_io import load_model, locate

    for kind in ("file", "run-dir", "dcp-distcp"):
        path = _build(kind, tmp_path / kind, parts, None)
        model = load_model(locate(path))
        assert torch.equal(model.transformer.wte.weight, parts[0]["transformer.wte.weight"])
    verify_folder(_deepspeed_folder(tmp_path / "ds", parts, None, "model"))
    verify_folder(_pipeline_folder(tmp_path / "pp", parts, None))


def test_third_party_loaders_are_rerouted(tmp_path, parts):
    """Defense in depth, past verify_folder: DeepSpeed's engine loader and zero_to_fp32 call
    torch.load(weights_only=False), DCP's reader pickle.load(.metadata); inside weights_only_loads() all refuse."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from torch.distributed.checkpoint import FileSystemReader

    marker = tmp_path / "ran"
    ds = _deepspeed_folder(tmp_path / "ds", parts, Payload(marker), "model")
    dcp = _dcp_folder(tmp_path / "dcp", parts, Payload(marker), ".metadata")
    with weights_only_loads():
        with pytest.raises(UnsafeCheckpointError, match=NOT_TENSORS):
            TorchCheckpointEngine().load(str(ds / "checkpoint" / "mp_rank_00_model_states.pt"))
        with pytest.raises(UnsafeCheckpointError, match=NOT_TENSORS):
            get_fp32_state_dict_from_zero_checkpoint(str(ds))
        with pytest.raises(UnsafeCheckpointError, match=NOT_TENSORS):
            FileSystemReader(str(dcp)).read_metadata()
    assert torch.load is not None and not marker.exists()
    assert FileSystemReader.read_metadata.__module__.startswith("torch.")  # restored on exit


def test_load_names_the_global(tmp_path, parts):
    marker = tmp_path / "ran"
    path = _lightning_file(tmp_path / "evil.ckpt", parts, Payload(marker))
    with pytest.raises(UnsafeCheckpointError, match=r"it names (posix|os)\.system"):
        load(path)
    assert not marker.exists()


@pytest.fixture(scope="module")
def train_config():
    return compose("model=nano")


@pytest.mark.parametrize(
    "route", [*(f"resume:{kind}" for kind in (*CKPT_KINDS, "pipeline")), *(f"init_from:{kind}" for kind in CKPT_KINDS)]
)
def test_training_refuses_before_writing_anything(route, tmp_path, parts, train_config):
    """task=train's own front door (run_task, as the CLI calls it) checks resume= and init_from= first: it refuses
    before the data is prepared and before its first write into the run directory (which the CLI then removes,
    empty: test_cli_one_error_line)."""
    import copy

    from bigtrain.tasks import run_task

    option, kind = route.split(":")
    marker = tmp_path / "ran"
    path = _build(kind, tmp_path, parts, Payload(marker))
    cfg = copy.deepcopy(train_config)
    cfg[option] = str(path)
    run_dir = tmp_path / "out"
    with pytest.raises(UnsafeCheckpointError) as e:
        run_task(cfg, run_dir)
    _assert_refused(str(e.value), path, marker)
    assert not run_dir.exists() or not any(run_dir.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("route", ["eval:dcp-.metadata", "resume:pipeline"])
def test_cli_one_error_line(route, tmp_path, parts):
    """The real front door: exit 2, exactly one `bigtrain: error:` line on stderr, no marker, no run directory.
    One task route and one training route end to end; every task and training route with every kind of checkpoint
    is refused in-process above by the same run_task the CLI calls (its BigtrainError handling is one path)."""
    task, kind = route.split(":")
    marker = tmp_path / "ran"
    path = _build(kind, tmp_path, parts, Payload(marker))
    if task in TASKS:
        args = [f"task={task}", f"ckpt={path}", *(["prompt=x"] if task == "generate" else [])]
    else:
        args = ["model=nano", f"{task}={path}"]
    run_dir = tmp_path / "out"
    proc = run_bigtrain(*args, run_dir=run_dir)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("bigtrain: error: "), proc.stderr
    _assert_refused(lines[0], path, marker)
    assert not run_dir.exists()
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_damaged_shard_is_skipped_not_refused(tmp_path, parts):
    """A truncated part of the newest sharded checkpoint is damage (resume=auto falls back to the previous one);
    only a payload is a refusal."""
    from bigtrain.training.checkpointing import find_resume_checkpoint

    folder = tmp_path / "run" / "checkpoints"
    older = _pipeline_folder(folder / "step-0000002.ckpt", parts, None)
    newer = _pipeline_folder(folder / "step-0000004.ckpt", parts, None)
    shard = newer / "rank-1.ckpt"
    shard.write_bytes(shard.read_bytes()[:100])
    seen = []
    assert find_resume_checkpoint("auto", tmp_path / "run", log=seen.append) == older
    assert "rank-1.ckpt cannot be read" in seen[0] and "trying the previous one" in seen[0]


def test_legacy_format_file_loads(tmp_path, parts):
    """torch's pre-zip format cannot be memory-mapped: the loader reads it whole instead (still weights-only)."""
    path = tmp_path / "legacy.pt"
    torch.save(parts[0], path, _use_new_zipfile_serialization=False)
    assert torch.equal(load(path, mmap=True)["lm_head.weight"], parts[0]["lm_head.weight"])
