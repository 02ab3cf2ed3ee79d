"""`task=train`: validate -> data -> record the config -> build -> fit -> sample -> summary.

`run` is rank zero's front door (under Hydra); `fit` is what every rank executes, rank zero from `run` and the
other local ranks from `bigtrain.worker`, which reads the config `run` recorded.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from omegaconf import OmegaConf

from bigtrain.config import sizes, validate
from bigtrain.data import check_block_fits, load_tokenizer, prepare, read_meta
from bigtrain.errors import DataError
from bigtrain.parallel.slurm import (
    cluster_plugins,
    config_ready_marker,
    launched_by_slurm,
    requeued_checkpoint,
    slurm_global_rank,
    wait_for_file,
)
from bigtrain.plan import preflight
from bigtrain.plan.compare import planned_vs_measured, read_plan, write_plan

CONFIG_FILE = "config.yaml"


def prepared_data(cfg, progress: bool = True) -> Path:
    """The prepared dataset for cfg.data, after checking it suits the model (vocabulary, one block)."""
    folder = Path(cfg.data.prepared_dir) if cfg.data.prepared_dir else prepare(cfg.data, progress=progress)
    meta = read_meta(folder)
    if meta["vocab_size"] > cfg.model.vocab_size:
        raise DataError(
            f"the {meta['tokenizer']} tokenizer has {meta['vocab_size']} tokens but model.vocab_size="
            f"{cfg.model.vocab_size}; set model.vocab_size>={meta['vocab_size']}"
        )
    check_block_fits(meta, cfg.model.block_size, folder)
    return folder


def save_run_config(cfg, run_dir: Path) -> Path:
    """Write the resolved config (secrets redacted). A different config already there (a resumed run with changed
    overrides) is kept as config.N.yaml: nothing written earlier is lost."""
    from bigtrain.config.secrets import redact

    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CONFIG_FILE
    text = OmegaConf.to_yaml(OmegaConf.create(redact(OmegaConf.to_container(cfg, resolve=True))))
    if path.is_file() and path.read_text() != text:
        n = 1
        while (run_dir / f"config.{n}.yaml").exists():
            n += 1
        path.rename(run_dir / f"config.{n}.yaml")
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def run(cfg, run_dir: Path) -> dict:
    started = time.perf_counter()
    from bigtrain.training.quiet import quiet_libraries

    quiet_libraries()
    validate(cfg, launching=True)
    if slurm_global_rank() != 0:
        # SLURM started this task itself (one per device): rank zero prepares the data and records the config.
        from bigtrain.worker import load_run_config

        wait_for_file(
            config_ready_marker(run_dir), timeout_s=1800, what="this attempt's config, after data preparation"
        )
        return fit_then_leave(load_run_config(run_dir), run_dir, started=started)
    planned = preflight(cfg)  # one-line verdict; ConfigError when it cannot fit (plan.enforce=false overrides)
    from bigtrain.training.checkpointing import find_resume_checkpoint

    # A requeued SLURM attempt resumes its own run directory, as resume=auto would.
    resume = cfg.resume or cfg.trainer.ckpt_path or ("auto" if requeued_checkpoint(run_dir) else None)
    from bigtrain.training.run_dir import claim

    done = claim(run_dir, resume, cfg.trainer.max_steps)  # refuses a run dir holding another run
    if done is not None:
        return done  # resume=auto on a completed run: nothing to do, its summary untouched
    checkpoint = find_resume_checkpoint(resume, run_dir)
    cfg.resume = str(checkpoint.resolve()) if checkpoint else None  # the exact file, for every rank
    if cfg.init_from:
        from bigtrain.checkpoint_io import check_init_from

        check_init_from(cfg)
    cfg.data.prepared_dir = str(prepared_data(cfg))
    save_run_config(cfg, run_dir)  # the first write into the run directory, after every check passed
    if launched_by_slurm():
        config_ready_marker(run_dir).touch()  # the other SLURM tasks start now, from exactly this config
    write_plan(run_dir, planned)
    if fresh_process_needed(cfg):
        return fit_in_fresh_process(run_dir)
    return fit_then_leave(cfg, run_dir, started=started)


def fit_then_leave(cfg, run_dir: Path, started: float | None = None) -> dict:
    """fit, then leave torch.distributed together with the other ranks (see parallel/teardown.py). Only at the
    end of a process: DeepSpeed keeps its groups in module globals, so a process cannot train again after. Not
    after an error: the peers may be inside another collective, and they fail fast once this process is gone."""
    from bigtrain.parallel.teardown import leave_process_group

    summary = fit(cfg, run_dir, started=started)
    leave_process_group()
    return summary


def fit(cfg, run_dir: Path, started: float | None = None, extra_callbacks: tuple = ()) -> dict:
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.callbacks import RichProgressBar

    from bigtrain.config.secrets import redact
    from bigtrain.data.datamodule import GPTDataModule
    from bigtrain.parallel import build_strategy
    from bigtrain.parallel.gather import full_state_dict, held_numel_per_rank, inner_optimizer
    from bigtrain.training.callbacks import Throughput, ValidationBookends, peak_memory_bytes
    from bigtrain.training.checkpointing import CHECKPOINT_DIR, AtomicCheckpointIO, checkpoint_callback
    from bigtrain.training.guards import NonFiniteGuard
    from bigtrain.training.loggers import build_loggers
    from bigtrain.training.model_states import ModelStateBytes
    from bigtrain.training.module import GPTLightningModule
    from bigtrain.training.pipeline_module import PipelineGPTModule
    from bigtrain.training.quiet import quiet_libraries
    from bigtrain.training.signals import GracefulStop
    from bigtrain.training.summary import print_summary, write_summary

    quiet_libraries()
    started = started if started is not None else time.perf_counter()
    tr = cfg.trainer
    s = sizes(cfg)
    pl.seed_everything(tr.seed, workers=True, verbose=False)
    tokens_per_step = tr.global_batch_size * cfg.model.block_size
    pipelined = cfg.parallelism.name == "pipeline"
    # A pipelined step takes the data-parallel rank's whole batch as one item and the schedule splits it into
    # micro-batches (it draws the windows an unpipelined run with micro_batch_size = global / dp draws).
    loader_batch, accumulate = (tr.global_batch_size // s.dp, 1) if pipelined else (tr.micro_batch_size, s.accumulate)

    datamodule = GPTDataModule(
        cfg.data.prepared_dir,
        cfg.model.block_size,
        loader_batch,
        accumulate,
        tr.val_batches,
        tr.seed,
        cfg.data.num_workers,
    )
    module_cls = PipelineGPTModule if pipelined else GPTLightningModule  # manual optimization, see its docstring
    module = module_cls(
        cfg.model,
        cfg.optim,
        tr.max_steps,
        tokens_per_step,
        run_config=redact(OmegaConf.to_container(cfg, resolve=True)),
        init_from=cfg.init_from,
        compile_model=tr.compile,
    )
    bookends, throughput, states = ValidationBookends(), Throughput(tokens_per_step), ModelStateBytes()
    checkpoint_dir = run_dir / CHECKPOINT_DIR
    stop = GracefulStop(lambda step: checkpoint_dir / f"step-{step:07d}.ckpt")
    callbacks: list[pl.Callback] = [
        bookends,
        throughput,
        states,
        NonFiniteGuard(tr.on_nonfinite, checkpoint_dir),
        checkpoint_callback(run_dir, tr.checkpoint_every_n_steps or tr.max_steps, tr.keep_last),
        stop,
    ]
    if cfg.resume:  # a validation due at the checkpoint step may not have run before the kill
        from bigtrain.training.resume_validation import ValidateDueOnResume

        callbacks.append(ValidateDueOnResume(tr.val_check_interval))
    if tr.progress:
        callbacks.append(RichProgressBar(leave=True))
    resume_from = Path(cfg.resume) if cfg.resume else None  # resolved by run() on rank zero
    loggers = build_loggers(cfg, run_dir, resume_from)
    if cfg.logger.name == "wandb":
        from bigtrain.training.loggers import WandbIdInCheckpoint, wandb_run_id

        callbacks.append(WandbIdInCheckpoint(wandb_run_id(run_dir, resume_from)))
    plugins = cluster_plugins()
    slurm_job = bool(plugins)
    if cfg.parallelism.name in ("single", "ddp"):  # the sharded strategies write their own checkpoint folders
        plugins = [*plugins, AtomicCheckpointIO()]
    if slurm_job:  # a SLURM job: checkpoint + requeue on the time-limit / preemption signal
        from bigtrain.training.requeue import RequeueOnSignal

        callbacks.append(RequeueOnSignal(run_dir))
    callbacks += list(extra_callbacks)
    trainer = pl.Trainer(
        accelerator=cfg.hardware.accelerator,
        devices=1 if cfg.parallelism.name == "single" else cfg.hardware.devices,
        num_nodes=1 if cfg.parallelism.name == "single" else cfg.hardware.nodes,
        strategy=build_strategy(cfg, run_dir),
        precision=tr.precision,
        max_steps=tr.max_steps,
        accumulate_grad_batches=accumulate,
        gradient_clip_val=None if pipelined else cfg.optim.grad_clip or None,  # the pipeline module clips itself
        val_check_interval=tr.val_check_interval * accumulate,  # Lightning counts micro-batches here
        check_val_every_n_epoch=None,
        limit_val_batches=tr.val_batches,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # the DataModule shards by rank itself (deterministic, resumable)
        logger=loggers,
        callbacks=callbacks,
        log_every_n_steps=tr.log_every_n_steps,
        enable_progress_bar=tr.progress,
        enable_model_summary=False,
        default_root_dir=str(run_dir),
        plugins=plugins or None,
    )
    fit_started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    fit_wall = time.perf_counter() - fit_started
    peak = int(trainer.strategy.reduce(torch.tensor(float(peak_memory_bytes(module.device))), reduce_op="max"))
    replicas_identical = replicas_agree(trainer, module) if cfg.parallelism.name == "ddp" else None
    state_bytes = int(trainer.strategy.reduce(torch.tensor(float(states.total)), reduce_op="max"))  # per rank
    held = held_numel_per_rank(trainer, module)  # collectives: every rank takes part
    # A tensor-parallel or pipelined model generates only with every rank taking part; rank zero alone cannot.
    can_sample = tr.sample_tokens > 0 and stop.received is None and cfg.parallelism.name not in ("tp", "pipeline")
    weights = full_state_dict(trainer, module) if can_sample else None  # gathered on rank zero (collective)
    if not trainer.is_global_zero:
        return {}

    sample = write_sample(cfg, module, run_dir, weights) if can_sample else None
    first = bookends.first[1] if bookends.first else None
    final = bookends.final[1] if bookends.final else None
    summary = {
        "run_dir": str(run_dir),
        "status": "completed" if stop.received is None else f"stopped by {stop.received} at step {stop.stopped_at}",
        "resumed_from": cfg.resume,
        "model": cfg.model.name,
        "init_from": cfg.init_from,
        "n_params": n_params(module),
        "parallelism": cfg.parallelism.name,
        "strategy": type(trainer.strategy).__name__,
        "zero_stage": cfg.zero.stage if cfg.parallelism.name in ("deepspeed", "fsdp") else None,
        "offload": cfg.offload.name,
        "optimizer": type(inner_optimizer(trainer)).__name__,
        "world_size": trainer.world_size,
        "precision": str(tr.precision),
        "global_batch_size": tr.global_batch_size,
        "micro_batch_size": tr.micro_batch_size,
        "accumulate": s.accumulate,
        "steps": trainer.global_step,
        "tokens": trainer.global_step * tokens_per_step,
        "first_val_loss": first,
        "final_val_loss": final,
        "val_loss_drop": (1 - final / first) if first and final else None,
        "tokens_per_s": throughput.tokens_per_s,
        "tokens_per_s_median": throughput.median_tokens_per_s,
        "peak_memory_bytes": peak,
        "replicas_identical": replicas_identical,
        "wall_s": fit_wall,
        "total_wall_s": time.perf_counter() - started,
        "val_history": module.val_history,
        "held_numel_per_rank": held,
        "sample": sample,
        **planned_vs_measured(read_plan(run_dir), peak, state_bytes, throughput.tokens_per_s, module.device.type),
    }
    write_summary(run_dir, summary)
    print_summary(summary)
    if sample:
        print(f"--- sample ({cfg.trainer.sample_tokens} tokens after {cfg.trainer.sample_prompt!r}) ---\n{sample}\n---")
    return summary


def n_params(module) -> int:
    """The GPT's parameter count, from a copy on the meta device (sharded parameters hide their full size)."""
    import torch

    from bigtrain.model import GPT

    with torch.device("meta"):
        return GPT(module.gpt_config).num_params()


# Rendezvous variables an earlier point of the sweep left in this process: a fresh rank zero starts without them.
DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "LOCAL_WORLD_SIZE")


def fresh_process_needed(cfg) -> bool:
    """A multi-process run inside a Hydra multirun trains in a fresh process: the sweep's own process runs every
    point, and torch.distributed / DeepSpeed state left by one point's ranks would leave the next one hanging."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return multirun and sizes(cfg).world > 1 and not launched_by_slurm()


def fit_in_fresh_process(run_dir: Path) -> dict:
    """Rank zero as `python -m bigtrain.worker RUN_DIR` (which starts the other ranks as usual); its summary."""
    import json
    import subprocess
    import sys

    env = {key: value for key, value in os.environ.items() if key not in DIST_ENV}
    proc = subprocess.run([sys.executable, "-m", "bigtrain.worker", str(run_dir.resolve())], env=env)
    if proc.returncode != 0:
        from bigtrain.errors import BigtrainError

        raise BigtrainError(f"training in {run_dir} exited with status {proc.returncode} (its log is above)")
    return json.loads((run_dir / "summary.json").read_text())


def replicas_agree(trainer, module) -> bool:
    """Whether every data-parallel replica ends with bit-identical weights (DDP's promise), by gathering a
    per-parameter float64 checksum from each rank."""
    import torch

    checksum = torch.stack([p.detach().double().sum() + (p.detach().double() ** 2).sum() for p in module.parameters()])
    gathered = trainer.strategy.all_gather(checksum)  # (world, n_params)
    return bool((gathered == gathered[0]).all())


def write_sample(cfg, module, run_dir: Path, weights: dict | None) -> str | None:
    """Text sampled from the trained model (temperature 0.8, top-k 40, fixed seed), saved as sample.txt.

    `weights` is the gathered fp32 state dict: the sample comes from a plain GPT, whatever the sharding."""
    import torch

    from bigtrain.model import GPT

    n = cfg.trainer.sample_tokens
    if n <= 0 or weights is None:
        return None
    folder = Path(cfg.data.prepared_dir)
    tokenizer = load_tokenizer(read_meta(folder, verify_checksums=False), folder)
    model = GPT(module.gpt_config).to(module.device)
    model.load_state_dict(weights)
    prompt = torch.tensor(tokenizer.encode(cfg.trainer.sample_prompt), dtype=torch.long)[None].to(module.device)
    generator = torch.Generator(device=module.device).manual_seed(cfg.trainer.seed)
    model.eval()
    out = model.generate(prompt, n, temperature=0.8, top_k=40, generator=generator)
    text = tokenizer.decode(out[0].tolist())
    (run_dir / "sample.txt").write_text(text)
    return text


def is_worker() -> bool:
    """True in the extra local ranks that bigtrain.worker started."""
    return int(os.environ.get("LOCAL_RANK", "0")) != 0
