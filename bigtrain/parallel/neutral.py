"""Any layout's checkpoint -> one layout-neutral file that every strategy loads: how a run moves between layouts.

The neutral form is what no layout owns: the full fp32 weights and the full Adam state (exp_avg, exp_avg_sq, step)
keyed by parameter name, plus Lightning's own state (global step, loops, LR schedule, callbacks) and bigtrain's
(validation history, RNG). It is read out of each format by that format's own tool, never by our resharding:
    lightning   the file itself (weights and a torch optimizer state; its parameter ids follow the decay groups of
                training/module.py, named by `param_groups_by_name`)
    deepspeed   ZeRO 1-3: DeepSpeed's universal checkpoint conversion (deepspeed.checkpoint.ds_to_universal) gives
                every parameter's fp32 weight, exp_avg, exp_avg_sq and step, whole; ZeRO-0: the engine's own
                module and torch optimizer state in mp_rank_00_model_states.pt
    dcp         FSDP sharded folders and tensor-parallel (+ FSDP2) DTensor folders:
                torch.distributed.checkpoint.format_utils.dcp_to_torch_save (the whole model and the name-keyed
                optimizer state, gathered from every rank's shards); tensor parallel's split q/k/v joined back
                (param_names.py)
    pipeline    one Lightning file per stage (rank-N.ckpt of the first data-parallel replica): each stage's weights
                and torch optimizer state, named by the stage's groups (param_names.stage_groups) and merged; a tied
                model's head copy on the last stage dropped (it equals the token table, and so do its Adam states)
    neutral     already is
It is written as a Lightning checkpoint of the single-process layout (state_dict + optimizer_states), with the
parameter names of each optimizer group beside it; single and DDP load it as Lightning does, and the sharded
strategies through neutral_load.py with their engine's own API (torch.distributed.checkpoint.state_dict's
set_model_state_dict / set_optimizer_state_dict, DeepSpeed's safe_set_full_fp32_param / _optimizer_state).

What cannot carry across a change of layout: the per-rank RNG streams of ranks other than zero (dropout masks of
rank r > 0 under the old data-parallel size have no counterpart under another); the restored RNG is rank zero's.
The data position is layout-free (data/datamodule.py: windows are a function of (seed, sample index)). Lightning
counts optimizer steps in the automatic loop's progress, a pipeline's manual optimization in its own: both are set.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch

from bigtrain.errors import BigtrainError
from bigtrain.parallel.checkpoint_format import NEUTRAL_KEY, RUN_CONFIG_KEY, CheckpointFormat
from bigtrain.parallel.param_names import TIED_HEAD, fuse_qkv, stage_copies_head, stage_groups
from bigtrain.safe_load import load, weights_only_loads

ADAM_STATES = ("exp_avg", "exp_avg_sq")
# What DeepSpeed adds to the client state in mp_rank_00_model_states.pt (not Lightning's, not ours).
_DEEPSPEED_KEYS = {
    "module", "buffer_names", "optimizer", "param_shapes", "frozen_param_shapes", "shared_params",
    "frozen_param_fragments", "lr_scheduler", "data_sampler", "random_ltd", "sparse_tensor_module_names",
    "skipped_steps", "global_steps", "global_samples", "dp_world_size", "mp_world_size", "ds_config", "ds_version",
    "checkpoint_parallel_dimensions",
}  # fmt: skip
CONVERTIBLE = ("lightning", "neutral", "deepspeed", "dcp", "pipeline")


def gpt_name(key: str) -> str:
    """A parameter's name in the plain GPT: wrappers' prefixes (Lightning's `model.`, DeepSpeed's `module.`,
    `_forward_module.`, FSDP's `_fsdp_wrapped_module.`) removed."""
    key = key.replace("_fsdp_wrapped_module.", "")
    while not key.startswith(("transformer.", "lm_head.")) and "." in key:
        head, rest = key.split(".", 1)
        if head not in ("model", "module", "_forward_module", "_orig_mod"):
            break
        key = rest
    return key


def param_groups_by_name(gpt_config) -> list[list[str]]:
    """The AdamW groups of training/module.py by parameter name, in optimizer order: matrices (decayed), then the
    rest. Ids of a torch optimizer's state are positions in this order (tied weights appear once)."""
    from bigtrain.model import GPT
    from bigtrain.model.param_groups import decay_split

    with torch.device("meta"):
        named = [(n, p.dim()) for n, p in GPT(gpt_config).named_parameters()]
    return [list(g) for g in decay_split(named)]


def _gpt_config(fmt: CheckpointFormat):
    from bigtrain.model import gpt_config_from

    return gpt_config_from(fmt.model)


# --- read: each format by its own tool -------------------------------------------------------------------------------
def read_neutral(fmt: CheckpointFormat) -> dict:
    """{"weights": {name: fp32}, "optim": {name: {exp_avg, exp_avg_sq, step}}, "groups": [hyperparameters of each
    group], "extras": Lightning's and bigtrain's state} of a checkpoint in any convertible format."""
    if fmt.format not in CONVERTIBLE:
        raise BigtrainError(
            f"{fmt.path} is a {fmt.format} checkpoint ({fmt.layout_text()}), which cannot be converted to another "
            f"layout yet (convertible: {', '.join(CONVERTIBLE)}); resume it under its own layout"
        )
    reader = {
        "lightning": _read_lightning,
        "neutral": _read_lightning,
        "deepspeed": _read_deepspeed,
        "dcp": _read_dcp,
        "pipeline": _read_pipeline,
    }
    out = reader[fmt.format](fmt)
    for name, state in out["optim"].items():
        missing = [k for k in (*ADAM_STATES, "step") if k not in state]
        if missing:
            raise BigtrainError(f"{fmt.path}: the optimizer state of {name} lacks {', '.join(missing)}")
    return out


def _from_torch_optimizer(osd: dict, names: list[list[str]]) -> tuple[dict, list[dict]]:
    """A torch optimizer state dict (integer ids) -> states by name and each group's hyperparameters."""
    flat = [n for group in names for n in group]
    by_id = {}
    for group, group_names in zip(osd["param_groups"], names, strict=True):
        if len(group["params"]) != len(group_names):
            raise BigtrainError(
                f"optimizer group of {len(group['params'])} parameters where the model has {len(group_names)}"
            )
        by_id.update(zip(group["params"], group_names, strict=True))
    optim = {by_id[i]: dict(state) for i, state in osd["state"].items()}
    groups = [{k: v for k, v in g.items() if k != "params"} for g in osd["param_groups"]]
    assert len(by_id) == len(flat)
    return optim, groups


def _read_lightning(fmt: CheckpointFormat) -> dict:
    blob = load(fmt.path)
    weights = {gpt_name(k): v.float() for k, v in blob["state_dict"].items()}
    names = (blob.get(NEUTRAL_KEY) or {}).get("param_names") or param_groups_by_name(_gpt_config(fmt))
    osds = blob.get("optimizer_states") or []
    optim, groups = _from_torch_optimizer(osds[0], names) if osds else ({}, [])
    extras = {k: v for k, v in blob.items() if k not in ("state_dict", "optimizer_states", NEUTRAL_KEY)}
    return {"weights": weights, "optim": optim, "groups": groups, "extras": extras}


def _read_deepspeed(fmt: CheckpointFormat) -> dict:
    from bigtrain.parallel.safe_globals import allow_deepspeed_globals

    allow_deepspeed_globals()
    tag = (fmt.path / "latest").read_text().strip() if (fmt.path / "latest").is_file() else None
    folder = fmt.path / tag if tag else next(f.parent for f in fmt.path.glob("*/*model_states.pt"))
    client = load(next(iter(sorted(folder.glob("*mp_rank_00_model_states.pt")))))
    extras = {k: v for k, v in client.items() if k not in _DEEPSPEED_KEYS}
    if not fmt.zero:  # ZeRO-0: the engine saved the whole module and the torch optimizer's own state dict
        weights = {gpt_name(k): v.float() for k, v in client["module"].items()}
        names = param_groups_by_name(_gpt_config(fmt))
        optim, groups = _from_torch_optimizer(client["optimizer"], names) if client.get("optimizer") else ({}, [])
        return {"weights": weights, "optim": optim, "groups": groups, "extras": extras}
    weights, optim = {}, {}
    with tempfile.TemporaryDirectory(prefix="bigtrain-universal-") as tmp, weights_only_loads():
        universal = Path(tmp) / "universal"  # it also writes `latest_universal` beside its output folder
        _ds_to_universal(folder, universal)
        for param_dir in sorted(d for d in (universal / "zero").iterdir() if d.is_dir()):
            name = gpt_name(param_dir.name)
            part = {f.stem: load(f) for f in param_dir.glob("*.pt")}
            weights[name] = _param(part["fp32"]).float()
            if all(k in part for k in ADAM_STATES):  # a tied alias (lm_head = wte) has its weight only
                optim[name] = {k: _param(part[k]).float() for k in ADAM_STATES}
                # ZeRO-3's conversion writes no step.pt: Adam has stepped once per optimizer step DeepSpeed took.
                step = (
                    _param(part["step"])
                    if "step" in part
                    else client.get("global_steps", 0) - client.get("skipped_steps", 0)
                )
                optim[name]["step"] = torch.as_tensor(step, dtype=torch.float32)
    # ZeRO-3's universal files hold each parameter flat: give it back its shape (the numbers must match).
    shapes = _shapes(fmt)
    weights = {n: w.reshape(shapes[n]) if n in shapes else w for n, w in weights.items()}
    optim = {n: {k: v.reshape(shapes[n]) if k in ADAM_STATES else v for k, v in st.items()} for n, st in optim.items()}
    groups = _deepspeed_groups(folder)
    return {"weights": weights, "optim": optim, "groups": groups, "extras": extras}


def _shapes(fmt: CheckpointFormat) -> dict[str, torch.Size]:
    from bigtrain.model import GPT

    with torch.device("meta"):
        return {n: p.shape for n, p in GPT(_gpt_config(fmt)).named_parameters()}


def _param(blob):
    return blob["param"] if isinstance(blob, dict) and "param" in blob else blob


def _ds_to_universal(folder: Path, out: Path) -> None:
    """DeepSpeed's own ZeRO -> universal conversion, in this process's pools (one worker each: small on CPU)."""
    import argparse
    import contextlib
    import io

    from deepspeed.checkpoint import ds_to_universal

    args = argparse.Namespace(
        input_folder=str(folder),
        output_folder=str(out),
        num_extract_workers=1,
        num_merge_workers=1,
        keep_temp_folder=False,
        strict=True,
        inject_missing_state=True,  # Lightning's saves lack Megatron's universal-checkpoint info; it has defaults
    )
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its progress bars
        ds_to_universal.main(args)


def _deepspeed_groups(folder: Path) -> list[dict]:
    files = sorted(folder.glob("*optim_states.pt"))
    if not files:
        return []
    osd = load(files[0]).get("optimizer_state_dict") or {}
    base = osd.get("base_optimizer_state") or osd.get("optimizer_state_dict") or {}
    groups = base.get("param_groups") if isinstance(base, dict) else None
    return [{k: v for k, v in g.items() if k != "params"} for g in groups or []]


def _read_dcp(fmt: CheckpointFormat) -> dict:
    import warnings

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory(prefix="bigtrain-dcp-") as tmp, weights_only_loads(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is disabled ... assuming a single process": intended
        dcp_to_torch_save(str(fmt.path), f"{tmp}/full.pt")
        full = load(f"{tmp}/full.pt")
    meta = fmt.path / "meta.pt"
    extras = load(meta) if meta.is_file() else {}
    model = full.get("model") or full.get("state_dict") or {}
    weights = fuse_qkv({gpt_name(k): v.float() for k, v in model.items()})
    osd = next((v for k, v in full.items() if k.startswith("optimizer")), None)
    optim, groups = {}, []
    if osd:
        optim = {
            gpt_name(k): {s: (v.float() if torch.is_tensor(v) else v) for s, v in st.items()}
            for k, st in osd["state"].items()
        }
        for st in optim.values():
            st["step"] = torch.as_tensor(st["step"], dtype=torch.float32)
        optim = fuse_qkv(optim)
        groups = [{k: v for k, v in g.items() if k != "params"} for g in osd.get("param_groups", [])]
    return {"weights": weights, "optim": optim, "groups": groups, "extras": extras}


def _stage_files(fmt: CheckpointFormat) -> list[Path]:
    """rank-0 .. rank-(pp-1).ckpt: the stages of the first data-parallel replica (rank = dp_rank * pp + stage)."""
    files = {int(f.stem.split("-")[1]): f for f in fmt.path.glob("rank-*.ckpt")}
    missing = [r for r in range(fmt.pp) if r not in files]
    if missing:
        raise BigtrainError(f"{fmt.path}: pipeline checkpoint of pp={fmt.pp} stages lacks rank-{missing[0]}.ckpt")
    return [files[r] for r in range(fmt.pp)]


def _read_pipeline(fmt: CheckpointFormat) -> dict:
    gpt_config = _gpt_config(fmt)
    weights, optim, groups, extras = {}, {}, [], {}
    for stage, f in enumerate(_stage_files(fmt)):
        blob = load(f)
        names = stage_groups(gpt_config, stage, fmt.pp)
        stage_weights = {gpt_name(k): v.float() for k, v in blob["state_dict"].items()}
        osds = blob.get("optimizer_states") or []
        stage_optim, stage_hyper = _from_torch_optimizer(osds[0], names) if osds else ({}, [])
        if stage_copies_head(gpt_config, stage, fmt.pp):  # the head copy: the token table (first stage) is kept
            stage_weights.pop(TIED_HEAD, None)
            stage_optim.pop(TIED_HEAD, None)
        weights.update(stage_weights)
        optim.update(stage_optim)
        if stage == 0:
            groups = stage_hyper  # every stage steps the same schedule: the same hyperparameters
            extras = {k: v for k, v in blob.items() if k not in ("state_dict", "optimizer_states")}
    return {"weights": weights, "optim": optim, "groups": groups, "extras": extras}


def read_weights(fmt: CheckpointFormat) -> dict:
    """The whole model's fp32 weights by GPT name (no optimizer states read where the format allows it): what
    task=consolidate / export / generate take from a tensor-parallel, FSDP or pipeline folder."""
    if fmt.format == "pipeline":
        return _read_pipeline(fmt)["weights"]
    if fmt.format == "dcp":
        from bigtrain.parallel.consolidate import fsdp_state_dict

        return fuse_qkv({gpt_name(k): v.float() for k, v in fsdp_state_dict(fmt.path).items()})
    return read_neutral(fmt)["weights"]


# --- write: a Lightning checkpoint of the single-process layout ----------------------------------------------------
def write_neutral(fmt: CheckpointFormat, target_accumulate: int, out: Path) -> Path:
    """Convert the checkpoint `fmt` describes into the neutral file `out`, its loop counters set for a target that
    accumulates `target_accumulate` micro-batches per step."""
    from bigtrain.atomic import atomic_write
    from bigtrain.config.layout import layout_of
    from bigtrain.model import GPT

    state = read_neutral(fmt)
    gpt_config = _gpt_config(fmt)
    with torch.device("meta"):
        expected = GPT(gpt_config).state_dict()
    weights = state["weights"]
    if "lm_head.weight" in expected and "lm_head.weight" not in weights and gpt_config.tie_embeddings:
        weights["lm_head.weight"] = weights["transformer.wte.weight"]  # tied: stored once by the sharded writers
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise BigtrainError(f"{fmt.path}: {len(missing)} weights missing after conversion (e.g. {missing[0]})")
    names = param_groups_by_name(gpt_config)
    extras = copy.deepcopy(state["extras"])
    step = int(extras.get("global_step") or 0)
    lr_now = (extras.get("lr_schedulers") or [{}])[0].get("_last_lr")
    groups = []
    for i in range(len(names)):
        hyper = dict(state["groups"][i]) if i < len(state["groups"]) else {}
        if lr_now:
            hyper["lr"] = lr_now[i]  # the schedule's value at this step (the next step uses it)
        groups.append({**hyper, "params": list(range(sum(map(len, names[:i])), sum(map(len, names[: i + 1]))))})
    flat = [n for g in names for n in g]
    optimizer = {
        "state": {i: state["optim"][n] for i, n in enumerate(flat) if n in state["optim"]},
        "param_groups": groups,
    }
    if state["optim"] and len(optimizer["state"]) != len(flat):
        raise BigtrainError(f"{fmt.path}: optimizer states for {len(optimizer['state'])} of {len(flat)} parameters")
    if fmt.run_config:
        from omegaconf import OmegaConf

        source_accumulate = layout_of(OmegaConf.create(fmt.run_config)).trainer_accumulation
        _shift_batch_counters(extras.get("loops") or {}, step * source_accumulate, step * target_accumulate)
    _set_optimizer_steps(extras.get("loops") or {}, step)
    blob = {
        **extras,
        "state_dict": {f"model.{k}": weights[k].contiguous() for k in expected},
        "optimizer_states": [optimizer] if state["optim"] else [],
        NEUTRAL_KEY: {"source": {**fmt.as_dict(), "path": str(fmt.path)}, "param_names": names},
    }
    blob.setdefault(RUN_CONFIG_KEY, fmt.run_config)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda f: torch.save(blob, f))
    return out


def _shift_batch_counters(loops: dict, source_batches: int, target_batches: int) -> None:
    """Lightning counts micro-batches (its accumulation boundary is batch_idx % accumulate): a step boundary under
    the source's accumulation becomes one under the target's."""
    fit = loops.get("fit_loop") or {}
    progress = fit.get("epoch_loop.batch_progress") or {}
    for part in ("total", "current"):
        counts = progress.get(part) or {}
        for k, v in counts.items():
            if isinstance(v, int):
                counts[k] = v - source_batches + target_batches


def _set_optimizer_steps(loops: dict, step: int) -> None:
    """Lightning's global step is the automatic loop's optimizer-step count, or under manual optimization (the
    pipeline's) the manual loop's; a checkpoint of one kind has 0 in the other's: copy the one that counted."""
    fit = loops.get("fit_loop") or {}
    if not fit or not step:
        return
    auto = (fit.get("epoch_loop.automatic_optimization.optim_progress") or {}).get("optimizer")
    manual = fit.get("epoch_loop.manual_optimization.optim_step_progress")
    if auto is None or manual is None:  # not Lightning's loop state as bigtrain's Lightning writes it
        return
    counted = next(
        (c for c in (auto.get("step"), manual) if ((c or {}).get("total") or {}).get("completed") == step), None
    )
    if counted is None:  # neither counted this checkpoint's steps: leave Lightning's own state as it is
        return
    steps = {part: {"ready": counted[part]["ready"], "completed": counted[part]["completed"]} for part in counted}
    auto["step"] = steps
    auto["zero_grad"] = {part: {**c, "started": c["ready"]} for part, c in steps.items()}
    fit["epoch_loop.manual_optimization.optim_step_progress"] = {part: dict(c) for part, c in steps.items()}
    fit["epoch_loop.scheduler_progress"] = {part: dict(c) for part, c in steps.items()}
