"""`task=train`: validate (the Layout) -> plan -> data -> record the config -> build -> fit -> sample -> summary.

`run` is rank zero's front door (under Hydra); `fit` is what every rank executes, rank zero from `run` and the
other local ranks from `bigtrain.worker`, which reads the config `run` recorded.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from omegaconf import OmegaConf

from bigtrain.config import Layout, layout_of, validate
from bigtrain.config.run_config import load_run_config, save_run_config
from bigtrain.data import check_block_fits, load_tokenizer, prepare, read_meta
from bigtrain.errors import DataError
from bigtrain.parallel.prestart import prestart_local_ranks, releases_waiting_ranks
from bigtrain.parallel.slurm import (
    cluster_plugins,
    config_ready_marker,
    launched_by_slurm,
    requeued_checkpoint,
    slurm_global_rank,
    wait_for_file,
)
from bigtrain.parallel.traits import traits_of
from bigtrain.plan import plan, preflight
from bigtrain.plan.compare import planned_vs_measured, read_plan, write_plan


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


@releases_waiting_ranks  # ranks started early and never launched (a refusal, an error) leave with run()
def run(cfg, run_dir: Path) -> dict:
    started = time.perf_counter()
    from bigtrain.training.lean_imports import import_lightning_lean
    from bigtrain.training.quiet import quiet_libraries
    from bigtrain.training.threads import apply_threads

    quiet_libraries()
    layout = validate(cfg, launching=True)
    # The plan refuses what cannot fit (ConfigError; plan.enforce=false overrides) before anything heavy is
    # imported: asking whether SLURM started this process imports Lightning. Every SLURM task plans (milliseconds)
    # so none waits for a rank zero that refused; only rank zero prints the one-line verdict.
    preflight(cfg, echo=print if os.environ.get("SLURM_PROCID", "0") == "0" else lambda line: None)
    apply_threads(cfg.trainer.threads)  # before torch is imported: OpenMP reads its settings then
    if not in_multirun():  # a sweep's point trains in a fresh process (fit_in_fresh_process), which starts its own
        prestart_local_ranks(layout, run_dir)  # after apply_threads: the other local ranks import while this prepares
    import_lightning_lean()  # before anything imports Lightning: none of torchmetrics' optional extras
    if slurm_global_rank() != 0:
        # SLURM started this task itself (one per device): rank zero prepares the data and records the config.
        wait_for_file(
            config_ready_marker(run_dir), timeout_s=1800, what="this attempt's config, after data preparation"
        )
        return fit_then_leave(load_run_config(run_dir), run_dir, started=started)
    from bigtrain.training.checkpointing import find_resume_checkpoint
    from bigtrain.training.run_dir import claim

    # A requeued SLURM attempt resumes its own run directory, as resume=auto would.
    resume = cfg.resume or cfg.trainer.ckpt_path or ("auto" if requeued_checkpoint(run_dir) else None)
    done = claim(run_dir, resume, cfg.trainer.max_steps)  # refuses a run dir holding another run
    if done is not None:
        return done  # resume=auto on a completed run: nothing to do, its summary untouched
    checkpoint = find_resume_checkpoint(resume, run_dir)
    if checkpoint is not None:  # another layout's checkpoint: refused if another model, else made layout-neutral
        from bigtrain.training.cross_layout import checkpoint_for_layout

        checkpoint = checkpoint_for_layout(cfg, layout, checkpoint, run_dir)
    cfg.resume = str(checkpoint.resolve()) if checkpoint else None  # the exact file, for every rank
    if cfg.init_from:
        from bigtrain.checkpoint_io import check_init_from

        check_init_from(cfg)
    cfg.data.prepared_dir = str(prepared_data(cfg))
    save_run_config(cfg, run_dir)  # the first write into the run directory, after every check passed
    if launched_by_slurm():
        config_ready_marker(run_dir).touch()  # the other SLURM tasks start now, from exactly this config
    write_plan(run_dir, plan(cfg))  # planned again: the prepared shards' sizes enter its data-pages term
    if fresh_process_needed(layout):
        return fit_in_fresh_process(run_dir)
    return fit_then_leave(cfg, run_dir, started=started, layout=layout)


def fit_then_leave(cfg, run_dir: Path, started: float | None = None, layout: Layout | None = None) -> dict:
    """fit, then leave torch.distributed together with the other ranks (see parallel/teardown.py). Only at the
    end of a process: DeepSpeed keeps its groups in module globals, so a process cannot train again after. Not
    after an error: the peers may be inside another collective, and they fail fast once this process is gone."""
    from bigtrain.parallel.teardown import leave_process_group

    layout = layout or layout_of(cfg).check()
    summary = fit(cfg, run_dir, started=started, layout=layout)
    if traits_of(layout).multi_process:
        leave_process_group()
    return summary


def fit(
    cfg, run_dir: Path, started: float | None = None, extra_callbacks: tuple = (), layout: Layout | None = None
) -> dict:
    """Every rank: data and model -> callbacks and loggers -> strategy and Trainer -> fit -> measure; rank zero
    then samples and writes the summary (the other ranks return {})."""
    from bigtrain.training.lean_imports import import_lightning_lean

    import_lightning_lean()  # the extra ranks start here (bigtrain.worker); a no-op where run() did it
    import pytorch_lightning as pl

    from bigtrain.data.datamodule import GPTDataModule
    from bigtrain.training.callbacks import Throughput, ValidationBookends
    from bigtrain.training.checkpointing import CHECKPOINT_DIR
    from bigtrain.training.loggers import build_loggers
    from bigtrain.training.model_states import ModelStateBytes
    from bigtrain.training.quiet import quiet_libraries
    from bigtrain.training.signals import GracefulStop
    from bigtrain.training.step_time import step_time_breakdown

    quiet_libraries()
    started = started if started is not None else time.perf_counter()
    layout = layout or layout_of(cfg).check()  # the extra ranks read the config rank zero validated
    traits, tr = traits_of(layout), cfg.trainer
    pl.seed_everything(tr.seed, workers=True, verbose=False)
    tokens_per_step = tr.global_batch_size * cfg.model.block_size

    datamodule = GPTDataModule(
        cfg.data.prepared_dir,
        cfg.model.block_size,
        layout.loader_batch_size,  # a pipelined rank loads its whole batch; the schedule splits it
        layout.trainer_accumulation,
        tr.val_batches,
        tr.seed,
        cfg.data.num_workers,
        dp_size=layout.dp,
    )
    module = build_module(cfg, traits.manual_optimization, tokens_per_step)

    resume_from = Path(cfg.resume) if cfg.resume else None  # resolved by run() on rank zero
    bookends, throughput, states = ValidationBookends(), Throughput(tokens_per_step), ModelStateBytes()
    stop = GracefulStop(lambda step: run_dir / CHECKPOINT_DIR / f"step-{step:07d}.ckpt")
    profiler, breakdown = (
        step_time_breakdown(cfg, tokens_per_step, read_plan(run_dir) or plan(cfg)) if tr.step_time else (None, None)
    )
    callbacks = [
        bookends,
        throughput,
        *([breakdown] if breakdown else []),
        states,
        *run_callbacks(cfg, run_dir, stop, resume_from),
        *extra_callbacks,
    ]
    trainer = build_trainer(cfg, layout, run_dir, callbacks, build_loggers(cfg, run_dir, resume_from), profiler)

    fit_started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    fit_wall = time.perf_counter() - fit_started

    can_sample = tr.sample_tokens > 0 and stop.received is None and traits.gathers_whole_model
    measured = measure(trainer, module, states, traits.checks_replicas, gather_weights=can_sample)  # collectives
    if not trainer.is_global_zero:
        return {}

    sample = write_sample(cfg, module, run_dir, measured.pop("weights")) if can_sample else None
    first = bookends.first[1] if bookends.first else None
    final = bookends.final[1] if bookends.final else None
    peak, state_bytes = measured["peak_memory_bytes"], measured.pop("model_state_bytes")
    summary = {
        "run_dir": str(run_dir),
        "status": "completed" if stop.received is None else f"stopped by {stop.received} at step {stop.stopped_at}",
        "resumed_from": cfg.resume,
        "model": cfg.model.name,
        "init_from": cfg.init_from,
        "n_params": n_params(module),
        "parallelism": layout.parallelism,
        "strategy": type(trainer.strategy).__name__,
        **traits.summary_fields(layout),
        "offload": cfg.offload.name,
        "optimizer": measured.pop("optimizer"),
        "world_size": trainer.world_size,
        "precision": str(tr.precision),
        "global_batch_size": tr.global_batch_size,
        "micro_batch_size": tr.micro_batch_size,
        "accumulate": layout.accumulate,
        "layout": layout.as_dict(),
        "steps": trainer.global_step,
        "tokens": trainer.global_step * tokens_per_step,
        "first_val_loss": first,
        "final_val_loss": final,
        "val_loss_drop": (1 - final / first) if first and final else None,
        "tokens_per_s": throughput.tokens_per_s,
        "tokens_per_s_median": throughput.median_tokens_per_s,
        "first_step_unix": throughput.first_step_unix,  # time to first step = this - the launcher's spawn time
        **(breakdown.summary() if breakdown else {}),
        "peak_memory_bytes": peak,
        "replicas_identical": measured["replicas_identical"],
        "wall_s": fit_wall,
        "total_wall_s": time.perf_counter() - started,
        "val_history": module.val_history,
        "held_numel_per_rank": measured["held_numel_per_rank"],
        "sample": sample,
        **getattr(module, "summary_facts", dict)(),  # a module variant's own facts (distillation: the teacher's)
        **planned_vs_measured(read_plan(run_dir), peak, state_bytes, throughput.tokens_per_s, module.device.type),
    }
    report(summary, cfg, run_dir, trainer.loggers)
    return summary


def build_module(cfg, manual_optimization: bool, tokens_per_step: int):
    """The LightningModule: the pipeline module steps and clips itself (manual optimization, see its docstring)."""
    from bigtrain.config.secrets import redact
    from bigtrain.training.module import GPTLightningModule
    from bigtrain.training.pipeline_module import PipelineGPTModule

    module_cls = PipelineGPTModule if manual_optimization else GPTLightningModule
    extra: dict = {}
    if cfg.task == "distill":  # the same fit, a frozen teacher's soft targets in the loss (training/distill.py)
        from bigtrain.training.distill import DistillGPTModule as module_cls
        from bigtrain.training.distill import distill_kwargs

        extra = distill_kwargs(cfg)
    return module_cls(
        cfg.model,
        cfg.optim,
        cfg.trainer.max_steps,
        tokens_per_step,
        run_config=redact(OmegaConf.to_container(cfg, resolve=True)),
        init_from=cfg.init_from,
        compile_model=cfg.trainer.compile,
        **extra,
    )


def run_callbacks(cfg, run_dir: Path, stop, resume_from: Path | None) -> list:
    """What keeps a run safe and visible: NaN guard, checkpoints, graceful stop, progress bar, the wandb id in
    checkpoints, and under SLURM checkpoint + requeue on the time-limit / preemption signal."""
    from bigtrain.training.checkpointing import CHECKPOINT_DIR, checkpoint_callback
    from bigtrain.training.guards import NonFiniteGuard

    tr = cfg.trainer
    callbacks = [
        # DDP hands every rank the same reduced gradients: its guard agrees without a collective of its own.
        NonFiniteGuard(tr.on_nonfinite, run_dir / CHECKPOINT_DIR, traits_of(layout_of(cfg)).checks_replicas),
        checkpoint_callback(run_dir, tr.checkpoint_every_n_steps or tr.max_steps, tr.keep_last),
        stop,
    ]
    if cfg.resume:  # a validation due at the checkpoint step may not have run before the kill
        from bigtrain.training.resume_validation import ValidateDueOnResume

        callbacks.append(ValidateDueOnResume(tr.val_check_interval))
    if tr.progress:
        from bigtrain.training.progress import StepProgressBar

        callbacks.append(StepProgressBar(leave=True))
    if cfg.logger.name == "wandb":
        from bigtrain.training.loggers import WandbIdInCheckpoint, wandb_run_id

        callbacks.append(WandbIdInCheckpoint(wandb_run_id(run_dir, resume_from)))
    if launched_by_slurm():
        from bigtrain.training.requeue import RequeueOnSignal

        callbacks.append(RequeueOnSignal(run_dir))
    return callbacks


def build_trainer(cfg, layout: Layout, run_dir: Path, callbacks: list, loggers: list, profiler=None):
    """The Lightning Trainer, every size from the Layout and the strategy from the one builder; `profiler` times
    the step's parts (training/step_time.py)."""
    import pytorch_lightning as pl

    from bigtrain.parallel import build_strategy
    from bigtrain.training.checkpointing import AtomicCheckpointIO

    tr, traits = cfg.trainer, traits_of(layout)
    plugins = cluster_plugins()
    if not traits.sharded_checkpoint:  # one file, written atomically; sharded strategies write their own folders
        plugins = [*plugins, AtomicCheckpointIO()]
    accumulate = layout.trainer_accumulation
    return pl.Trainer(
        accelerator=cfg.hardware.accelerator,
        devices=layout.trainer_devices,
        num_nodes=layout.trainer_nodes,
        strategy=build_strategy(cfg, run_dir, layout),
        precision=tr.precision,
        max_steps=tr.max_steps,
        accumulate_grad_batches=accumulate,
        # A module with manual optimization (the pipeline's) clips its gradients itself.
        gradient_clip_val=None if traits.manual_optimization else cfg.optim.grad_clip or None,
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
        profiler=profiler,
    )


def measure(trainer, module, states, check_replicas: bool, gather_weights: bool) -> dict:
    """What the run held and used, reduced over ranks (collectives: every rank calls this): peak memory and model
    state bytes (max over ranks), what each rank held, whether replicas agree, the inner optimizer, and the whole
    fp32 weights on rank zero when `gather_weights`."""
    import torch

    from bigtrain.parallel.gather import full_state_dict, held_numel_per_rank, inner_optimizer
    from bigtrain.training.callbacks import peak_memory_bytes

    def reduced_max(value: float) -> int:
        return int(trainer.strategy.reduce(torch.tensor(float(value)), reduce_op="max"))

    return {
        "peak_memory_bytes": reduced_max(peak_memory_bytes(module.device)),
        "replicas_identical": replicas_agree(trainer, module) if check_replicas else None,
        "model_state_bytes": reduced_max(states.total),  # per rank
        "held_numel_per_rank": held_numel_per_rank(trainer, module),
        "optimizer": type(inner_optimizer(trainer)).__name__,
        "weights": full_state_dict(trainer, module) if gather_weights else None,  # gathered on rank zero
    }


def report(summary: dict, cfg, run_dir: Path, loggers: list) -> None:
    """summary.json, the loggers' run summaries, the printed table and the sample (rank zero)."""
    from bigtrain.training.loggers import summary_to_loggers
    from bigtrain.training.summary import print_summary, write_summary

    write_summary(run_dir, summary)
    summary_to_loggers(loggers, summary)
    print_summary(summary)
    if summary["sample"]:
        print(f"--- sample ({cfg.trainer.sample_tokens} tokens after {cfg.trainer.sample_prompt!r}) ---")
        print(f"{summary['sample']}\n---")


def n_params(module) -> int:
    """The GPT's parameter count, from a copy on the meta device (sharded parameters hide their full size)."""
    import torch

    from bigtrain.model import GPT

    with torch.device("meta"):
        return GPT(module.gpt_config).num_params()


# Rendezvous variables an earlier point of the sweep left in this process: a fresh rank zero starts without them.
DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "LOCAL_WORLD_SIZE")


def fresh_process_needed(layout: Layout) -> bool:
    """A multi-process run inside a Hydra multirun trains in a fresh process: the sweep's own process runs every
    point, and torch.distributed / DeepSpeed state left by one point's ranks would leave the next one hanging."""
    return in_multirun() and traits_of(layout).multi_process and layout.world > 1 and not launched_by_slurm()


def in_multirun() -> bool:
    """This process runs a Hydra multirun (a sweep's points, one after another)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


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

    # Under expert parallelism the ranks hold different experts by design: the strategy names what must agree.
    params = getattr(trainer.strategy, "replicated_parameters", lambda m: list(m.parameters()))(module)
    checksum = torch.stack([p.detach().double().sum() + (p.detach().double() ** 2).sum() for p in params])
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
