"""Cross-group rules, checked in one step before anything heavy runs.

Each broken rule becomes one phrase naming the values involved and what would be valid; all of them are joined
into one ConfigError line. The run's Layout (world, data-parallel size, accumulation: config/layout.py) is derived
here once; its own invariants are among the rules.
"""

from __future__ import annotations

import os
import tempfile

# The Layout owns the strategy names (re-exported here, where the other valid values live).
from bigtrain.config.layout import PARALLELISMS, PIPELINE_SCHEDULES, SHARDED_PARALLELISMS, Layout, layout_of
from bigtrain.config.model_shape import model_shape_problems
from bigtrain.config.moe_rules import moe_problems
from bigtrain.data.tokenizer import TOKENIZERS
from bigtrain.errors import ConfigError

# The front doors behind `task=NAME` (bigtrain.tasks.NAME.run); tests/test_imports.py holds this list to the
# modules of bigtrain/tasks, so config never reads the tasks package.
TASKS = (
    "consolidate",
    "dashboard",
    "distill",
    "eval",
    "export",
    "generate",
    "inspect",
    "plan",
    "prepare",
    "quantize",
    "report",
    "train",
)
OFFLOADS = ("none", "cpu", "cpu-params", "nvme")
LOGGERS = ("csv", "tensorboard", "wandb")
ACTIVATION_RECOMPUTE = ("none", "selective", "full")
PRECISIONS = ("32-true", "32", "64-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true")
ACCELERATORS = ("cpu", "gpu")
PLAN_ACCOUNTINGS = ("engine", "paper", "deepspeed-estimator")  # bigtrain/plan/memory.py's ACCOUNTINGS


def _positive(problems: list[str], **values) -> None:
    for key, value in values.items():
        if value is None or value <= 0:
            problems.append(f"{key}={value} must be a positive number")


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


def _plan_problems(cfg) -> list[str]:
    """The plan node (task=plan, and the pre-flight check of task=train)."""
    pl, p = cfg.plan, []
    if pl.format not in ("table", "json"):
        p.append(f"plan.format={pl.format} is unknown; valid: table, json")
    if pl.rank_by not in ("time", "cost"):
        p.append(f"plan.rank_by={pl.rank_by} is unknown; valid: time, cost")
    if not 0 < pl.mfu <= 1:
        p.append(f"plan.mfu={pl.mfu} must be in (0, 1]")
    if not 0 <= pl.headroom < 1:
        p.append(f"plan.headroom={pl.headroom} must be in [0, 1)")
    if pl.train_tokens is not None and pl.train_tokens <= 0:
        p.append(f"plan.train_tokens={pl.train_tokens} must be positive or null")
    if pl.activation_recompute is not None and pl.activation_recompute not in ACTIVATION_RECOMPUTE:
        p.append(
            f"plan.activation_recompute={pl.activation_recompute} is unknown; valid: {', '.join(ACTIVATION_RECOMPUTE)}"
        )
    if pl.get("accounting", "engine") not in PLAN_ACCOUNTINGS:
        p.append(f"plan.accounting={pl.accounting} is unknown; valid: {', '.join(PLAN_ACCOUNTINGS)}")
    if pl.get("achieved_tflops") is not None and not pl.achieved_tflops > 0:
        p.append(f"plan.achieved_tflops={pl.achieved_tflops} must be a positive TFLOP/s per device or null")
    if pl.get("achieved_tflops") is not None and pl.get("from_run") is not None:
        p.append(
            f"plan.achieved_tflops={pl.achieved_tflops} and plan.from_run={pl.from_run} both set the rate; keep one"
        )
    if pl.get("additional_buffer_factor", 1.5) < 1:
        p.append(f"plan.additional_buffer_factor={pl.additional_buffer_factor} must be at least 1 (DeepSpeed's: 1.5)")
    _positive(p, **{"plan.max_nodes": pl.max_nodes, "plan.top": pl.top})
    return p


def _model_parallel_problems(cfg, planning: bool = False) -> list[str]:
    """Tensor- and pipeline-parallel degrees against the model and the strategy (the device count is the Layout's
    rule). A plan
    (planning=True) may combine any degrees with any strategy; a launch needs the strategy that runs them."""
    m, par, p = cfg.model, cfg.parallelism, []
    if par.tp <= 0 or par.pp <= 0:
        return p  # reported as non-positive already
    if not planning and par.tp > 1 and par.name != "tp":
        p.append(f"parallelism.tp={par.tp} needs parallelism=tp (it is {par.name}); or set parallelism.tp=1")
    if not planning and par.pp > 1 and par.name != "pipeline":
        p.append(f"parallelism.pp={par.pp} needs parallelism=pipeline (it is {par.name}); or set parallelism.pp=1")
    if not planning and par.name == "tp" and par.pp != 1:
        p.append(f"parallelism=tp runs no pipeline but parallelism.pp={par.pp}; set parallelism.pp=1")
    if not planning and par.name == "pipeline" and par.tp != 1:
        p.append(f"parallelism=pipeline runs no tensor parallelism but parallelism.tp={par.tp}; set parallelism.tp=1")
    for key in ("n_head", "n_embd"):
        if m[key] > 0 and m[key] % par.tp != 0:
            valid = [t for t in range(1, m[key] + 1) if m[key] % t == 0 and m.n_head % t == 0 and m.n_embd % t == 0]
            p.append(
                f"parallelism.tp={par.tp} does not divide model.{key}={m[key]} (n_head={m.n_head}, "
                f"n_embd={m.n_embd}); valid tp: {', '.join(map(str, valid[:8]))}"
            )
    if m.n_layer > 0 and par.pp > m.n_layer:
        p.append(
            f"parallelism.pp={par.pp} exceeds model.n_layer={m.n_layer}: a stage needs a block; use pp<={m.n_layer}"
        )
    p += _virtual_stage_problems(m, par, planning)
    if par.name == "pipeline":
        if par.schedule not in PIPELINE_SCHEDULES:
            p.append(f"parallelism.schedule={par.schedule} is unknown; valid: {', '.join(PIPELINE_SCHEDULES)}")
        if cfg.zero.stage in (2, 3):
            p.append(
                f"zero.stage={cfg.zero.stage} shards gradients across data-parallel ranks, which pipeline parallelism "
                f"cannot combine with (DeepSpeed refuses it too); use zero.stage 0 or 1 with parallelism=pipeline"
            )
    return p


def _virtual_stage_problems(m, par, planning: bool) -> list[str]:
    """Interleaved 1F1B (parallelism.virtual_stages): every model chunk gets the same whole number of layers, as
    Megatron-LM requires (num_layers_per_virtual_pipeline_stage); the Layout checks pp > 1 and the micro-batches."""
    v = par.get("virtual_stages", 1)
    p: list[str] = []
    if v is None or v <= 1 or par.pp <= 0 or m.n_layer <= 0:
        return p
    if m.n_layer % (par.pp * v) != 0:
        valid = [d for d in range(1, m.n_layer // par.pp + 1) if m.n_layer % (par.pp * d) == 0]
        p.append(
            f"parallelism.virtual_stages={v} x parallelism.pp={par.pp} = {par.pp * v} model chunks do not divide "
            f"model.n_layer={m.n_layer} into equal chunks; valid virtual_stages for pp={par.pp}: "
            f"{', '.join(map(str, valid)) or 'none (n_layer is not a multiple of pp)'}"
        )
    if par.name == "pipeline" and par.schedule != "1f1b":
        p.append(
            f"parallelism.virtual_stages={v} interleaves the 1F1B schedule, but parallelism.schedule={par.schedule}; "
            f"use parallelism.schedule=1f1b"
        )
    if not planning:
        p.append(
            f"parallelism.virtual_stages={v}: bigtrain's pipeline runs one stage per rank (the interleaved schedule "
            f"is planned, not run); use task=plan, or parallelism.virtual_stages=1"
        )
    return p


def _offload_problems(cfg) -> list[str]:
    """ZeRO stage x offload x strategy rules (DeepSpeed ignores some combinations silently, so we refuse them)."""
    from omegaconf import OmegaConf

    p: list[str] = []
    par, stage, off = cfg.parallelism.name, cfg.zero.stage, cfg.offload.name
    if par not in SHARDED_PARALLELISMS or off not in OFFLOADS:
        return p
    if off == "nvme":
        if stage != 3:
            p.append(
                f"offload=nvme needs zero=3 (DeepSpeed silently ignores NVMe offload below stage 3), "
                f"but zero.stage={stage}; use zero=3, or offload=cpu"
            )
        if OmegaConf.is_missing(cfg.offload, "nvme_path") or not cfg.offload.nvme_path:
            p.append("offload=nvme needs offload.nvme_path=/a/folder/on/a/fast/disk (it is unset)")
    if off == "cpu-params" and stage != 3:
        p.append(
            f"offload=cpu-params offloads parameters, which only ZeRO stage 3 partitions, but zero.stage={stage}; "
            f"use zero=3, or offload=cpu (optimizer states only)"
        )
    if par == "fsdp":
        if stage == 1:
            p.append("zero.stage=1 has no FSDP equivalent; with parallelism=fsdp use zero=0, 2 or 3")
        if off in ("cpu", "nvme"):
            p.append(
                f"offload={off} is DeepSpeed's; FSDP offloads parameters and optimizer together: "
                f"use offload=cpu-params with zero=3, or parallelism=deepspeed"
            )
    return p


def problems_of(cfg, planning: bool = False) -> list[str]:
    """Every broken rule of the composed config, as phrases (empty when valid).

    planning=True (task=plan) describes a run rather than launching it: rules about which strategies this build
    can launch (zero stages and offload need a sharded one) are left out; every consistency rule stays."""
    p: list[str] = []
    m, par, hw, tr = cfg.model, cfg.parallelism, cfg.hardware, cfg.trainer

    if cfg.task not in TASKS:
        p.append(f"task={cfg.task} is unknown; valid: {', '.join(TASKS)}")

    _positive(p, **{f"model.{k}": m[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")})
    if m.head_dim is None and m.n_head > 0 and m.n_embd % m.n_head != 0:
        divisors = [h for h in range(1, m.n_embd + 1) if m.n_embd % h == 0]
        nearest = sorted(sorted(divisors, key=lambda h: abs(h - m.n_head))[:6])
        p.append(
            f"model.n_embd={m.n_embd} is not divisible by model.n_head={m.n_head}; valid n_head near it: "
            f"{', '.join(map(str, nearest))} (or set model.head_dim)"
        )
    if m.head_dim is not None and m.head_dim <= 0:
        p.append(f"model.head_dim={m.head_dim} must be positive or null")
    if not 0.0 <= m.dropout < 1.0:
        p.append(f"model.dropout={m.dropout} must be in [0, 1)")
    p += model_shape_problems(m, par.tp)
    p += moe_problems(m, par.name)

    if par.name not in PARALLELISMS:
        p.append(f"parallelism={par.name} is unknown; valid: {', '.join(PARALLELISMS)}")
    if hw.accelerator not in ACCELERATORS:
        p.append(f"hardware.accelerator={hw.accelerator} is unknown; valid: {', '.join(ACCELERATORS)}")
    layout = layout_of(cfg)  # its own rules go where each reads best in the line
    p += layout.degree_problems()
    p += _model_parallel_problems(cfg, planning)
    p += layout.split_problems()
    p += layout.expert_problems(planning)

    if cfg.zero.stage not in (0, 1, 2, 3):
        p.append(f"zero.stage={cfg.zero.stage} is unknown; valid: 0, 1, 2, 3")
    if cfg.offload.name not in OFFLOADS:
        p.append(f"offload={cfg.offload.name} is unknown; valid: {', '.join(OFFLOADS)}")
    if cfg.offload.params != "none" and cfg.zero.stage != 3 and par.name not in SHARDED_PARALLELISMS:
        # (with a sharded strategy, _offload_problems says the same in its own words)
        p.append(
            f"offload={cfg.offload.name} moves parameters (offload.params={cfg.offload.params}), which needs "
            f"zero.stage=3 but zero.stage={cfg.zero.stage}; use zero=3 or offload=cpu"
        )
    if cfg.offload.optimizer != "none" and cfg.zero.stage == 0:
        p.append(f"offload={cfg.offload.name} needs zero.stage 1, 2 or 3 (zero.stage=0)")
    if par.name not in SHARDED_PARALLELISMS and not planning:
        if cfg.zero.stage not in (0, None):
            p.append(
                f"zero.stage={cfg.zero.stage} needs a sharded strategy, but parallelism={par.name}; "
                + (f"use parallelism={' or '.join(SHARDED_PARALLELISMS)}" if SHARDED_PARALLELISMS else "use zero=0")
            )
        if cfg.offload.name != "none":
            p.append(
                f"offload={cfg.offload.name} needs a sharded strategy, but parallelism={par.name}; "
                + (
                    f"use parallelism={' or '.join(SHARDED_PARALLELISMS)}"
                    if SHARDED_PARALLELISMS
                    else "use offload=none"
                )
            )

    p += _offload_problems(cfg)

    _positive(
        p,
        **{
            f"trainer.{k}": tr[k]
            for k in ("max_steps", "global_batch_size", "micro_batch_size", "val_check_interval", "log_every_n_steps")
        },
    )
    if tr.val_batches < 0:
        p.append(f"trainer.val_batches={tr.val_batches} must be >= 0")
    if tr.checkpoint_every_n_steps < 0:
        p.append(f"trainer.checkpoint_every_n_steps={tr.checkpoint_every_n_steps} must be >= 0 (0: only at the end)")
    p += layout.batch_problems()
    if str(tr.precision) not in PRECISIONS:
        p.append(f"trainer.precision={tr.precision} is unknown; valid: {', '.join(PRECISIONS)}")
    elif hw.accelerator == "cpu" and str(tr.precision).startswith("16"):
        p.append(f"trainer.precision={tr.precision} (fp16) is not supported on CPU; use 32-true or bf16-mixed")

    o = cfg.optim
    if o.name != "adamw":
        p.append(f"optim={o.name} is unknown; valid: adamw")
    _positive(p, **{"optim.lr": o.lr})
    if not 0 <= o.min_lr <= o.lr:
        p.append(f"optim.min_lr={o.min_lr} must be between 0 and optim.lr={o.lr}")
    if o.warmup_steps < 0:
        p.append(f"optim.warmup_steps={o.warmup_steps} must be >= 0")
    if o.decay not in ("cosine", "constant"):
        p.append(f"optim.decay={o.decay} is unknown; valid: cosine, constant")
    if o.grad_clip < 0:
        p.append(f"optim.grad_clip={o.grad_clip} must be >= 0 (0 disables clipping)")

    if cfg.data.tokenizer not in TOKENIZERS:
        p.append(f"data.tokenizer={cfg.data.tokenizer} is unknown; valid: {', '.join(TOKENIZERS)}")
    if not 0.0 < cfg.data.val_fraction < 1.0:
        p.append(f"data.val_fraction={cfg.data.val_fraction} must be between 0 and 1 (exclusive)")
    if cfg.data.prepared_dir is not None and not os.path.isfile(os.path.join(cfg.data.prepared_dir, "meta.json")):
        p.append(
            f"data.prepared_dir={cfg.data.prepared_dir} is not a prepared dataset (no meta.json there); "
            f"run `python -m bigtrain task=prepare` or leave data.prepared_dir unset"
        )
    if tr.keep_last < 1:
        p.append(f"trainer.keep_last={tr.keep_last} must be >= 1")
    if tr.on_nonfinite not in ("stop", "skip"):
        p.append(f"trainer.on_nonfinite={tr.on_nonfinite} is unknown; valid: stop, skip")
    if str(tr.get("threads", "auto")) != "auto" and not (str(tr.threads).isdigit() and int(tr.threads) > 0):
        p.append(f"trainer.threads={tr.threads} is not valid; valid: auto or a positive number of threads per process")
    p += _target_problems(cfg)
    if cfg.logger.name not in LOGGERS:
        p.append(f"logger={cfg.logger.name} is unknown; valid: {', '.join(LOGGERS)}")
    p += _use_problems(cfg)
    p += _compress_problems(cfg)
    if "plan" in cfg:
        p += _plan_problems(cfg)
    if cfg.logger.mode not in ("offline", "online", "disabled"):
        p.append(f"logger.mode={cfg.logger.mode} is unknown; valid: offline, online, disabled")
    return p


def _use_problems(cfg) -> list[str]:
    """Rules of the tasks that use a trained model: generate, eval, export, and fine-tuning (init_from)."""
    p: list[str] = []
    if cfg.task in ("generate", "eval", "export", "consolidate", "inspect") and not cfg.ckpt:
        p.append(f"task={cfg.task} needs ckpt=<a .ckpt file, a run directory, or a checkpoint directory>")
    if cfg.task == "generate" and (cfg.prompt is None) == (cfg.prompt_file is None):
        p.append(
            "task=generate needs exactly one of prompt=TEXT or prompt_file=PATH"
            + (" (both are set)" if cfg.prompt is not None else "")
        )
    g = cfg.generate
    if g.temperature < 0:
        p.append(f"generate.temperature={g.temperature} must be >= 0 (0: greedy)")
    if g.top_k is not None and g.top_k <= 0:
        p.append(f"generate.top_k={g.top_k} must be a positive number or null")
    if g.top_p is not None and not 0.0 < g.top_p <= 1.0:
        p.append(f"generate.top_p={g.top_p} must be in (0, 1] or null")
    if g.max_new_tokens < 0 or g.num_samples <= 0:
        p.append(
            f"generate.max_new_tokens={g.max_new_tokens} must be >= 0 and generate.num_samples={g.num_samples} > 0"
        )
    if cfg.eval.batch_size <= 0 or (cfg.eval.max_tokens is not None and cfg.eval.max_tokens <= 0):
        p.append(f"eval.batch_size={cfg.eval.batch_size} and eval.max_tokens={cfg.eval.max_tokens} must be positive")
    if cfg.init_from and cfg.zero.stage == 3:
        p.append(
            f"init_from={cfg.init_from} cannot load weights into ZeRO-3 partitioned parameters yet; "
            f"fine-tune with zero.stage<=2"
        )
    return p


DISTILL_PARALLELISMS = ("single", "ddp", "deepspeed", "fsdp")  # data-parallel layouts: the teacher is replicated
QUANTIZE_SCHEMES = ("int8-weight-only", "int8-dynamic")


def _compress_problems(cfg) -> list[str]:
    """Rules of task=distill and task=quantize (the teacher's own fit is checked by tasks/distill.py)."""
    p: list[str] = []
    d, q = cfg.distill, cfg.quantize
    if not 0.0 <= d.alpha <= 1.0:
        p.append(f"distill.alpha={d.alpha} must be in [0, 1] (the weight of the hard-label cross-entropy)")
    if not d.temperature > 0:
        p.append(f"distill.temperature={d.temperature} must be > 0 (1: the teacher's own distribution)")
    if cfg.task == "distill":
        if not cfg.teacher:
            p.append(f"task=distill needs teacher=<{_CKPT_KINDS}>")
        if cfg.parallelism.name not in DISTILL_PARALLELISMS:
            p.append(
                f"task=distill runs data-parallel layouts only, but parallelism={cfg.parallelism.name}; "
                f"use parallelism={' or '.join(DISTILL_PARALLELISMS)}"
            )
    elif cfg.teacher:
        p.append(f"teacher={cfg.teacher} is read by task=distill only (task={cfg.task}); use task=distill")
    if cfg.get("runs") and cfg.task != "report":
        p.append(f"runs={list(cfg.runs)} is read by task=report only (task={cfg.task}); use task=report")
    if cfg.task == "quantize" and not cfg.ckpt:
        p.append(f"task=quantize needs ckpt=<{_CKPT_KINDS}>")
    if q.scheme not in QUANTIZE_SCHEMES:
        p.append(f"quantize.scheme={q.scheme} is unknown; valid: {', '.join(QUANTIZE_SCHEMES)}")
    if q.eval_tokens < 0:
        p.append(f"quantize.eval_tokens={q.eval_tokens} must be >= 0 (0 skips the perplexity comparison)")
    return p


_CKPT_KINDS = "a .ckpt file, a run directory, a checkpoint directory or a Hugging Face GPT-2 or Llama directory"


def _target_problems(cfg) -> list[str]:
    from omegaconf import OmegaConf

    from bigtrain.config.targets import target_problems  # one exact-name allow-list, hydra.callbacks included

    return target_problems(OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False))


def local_device_problems(cfg) -> list[str]:
    """Rules that only matter when launching on this machine: enough devices here for one node's processes."""
    hw = cfg.hardware
    if cfg.parallelism.name == "single" or hw.devices <= 0:
        return []
    if hw.accelerator == "gpu":
        import torch

        have = torch.cuda.device_count()
        if hw.devices > have:
            return [
                f"hardware.devices={hw.devices} GPUs per node but this machine has {have}; "
                f"use hardware.devices<={have}" + (" or hardware=cpu" if have == 0 else "")
            ]
    else:
        have = os.cpu_count() or 1
        if hw.devices > have:
            return [
                f"hardware.devices={hw.devices} CPU processes but this machine has {have} cores; use hardware.devices<={have}"
            ]
    return []


def wandb_problems(cfg) -> list[str]:
    """logger=wandb online needs a key, or wandb.init would wait on a login prompt or the network."""
    if cfg.logger.name != "wandb" or cfg.logger.mode != "online" or os.environ.get("WANDB_MODE") == "offline":
        return []
    netrc = os.path.expanduser("~/.netrc")
    has_login = os.path.isfile(netrc) and "api.wandb.ai" in open(netrc).read()
    if os.environ.get("WANDB_API_KEY") or has_login:
        return []
    return ["logger.mode=online needs WANDB_API_KEY (or `wandb login`); use logger.mode=offline and `wandb sync` later"]


def nvme_path_problems(cfg) -> list[str]:
    """offload=nvme swaps into offload.nvme_path on this machine: it must be an existing, writable folder."""
    if cfg.parallelism.name not in SHARDED_PARALLELISMS or cfg.offload.name != "nvme" or not cfg.offload.nvme_path:
        return []
    path = cfg.offload.nvme_path
    if not os.path.isdir(path):
        return [f"offload.nvme_path={path} does not exist (or is not a folder); create it or point it at one"]
    try:  # a real write: permission bits alone say nothing about root, read-only mounts or pseudo file systems
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        return [f"offload.nvme_path={path} is not writable by this user ({e.strerror}); choose a folder you can write"]
    return []


def validate(cfg, launching: bool = False, planning: bool = False) -> Layout:
    """Raise one ConfigError listing every broken rule; return the run's Layout when the config is valid."""
    from bigtrain.config.domains import domain_problems

    # Values outside their domain first, alone: the cross-group rules below assume every value is inside it.
    problems = domain_problems(cfg) or problems_of(cfg, planning=planning)
    if launching and not problems:
        from bigtrain.config.launch_checks import multi_node_problems

        problems = local_device_problems(cfg) + wandb_problems(cfg) + nvme_path_problems(cfg) + multi_node_problems(cfg)
        if cfg.hardware.accelerator == "gpu" and not problems and cfg.parallelism.name == "single":
            import torch

            if not torch.cuda.is_available():
                problems = ["hardware.accelerator=gpu but this machine has no CUDA device; use hardware=cpu"]
    if problems:
        raise ConfigError("; ".join(problems))
    return layout_of(cfg)
