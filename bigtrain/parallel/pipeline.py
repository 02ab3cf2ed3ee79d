"""Pipeline parallelism through `torch.distributed.pipelining`: `PipelineStrategy` and the GPT's stages.

Ranks form a (data_parallel x pipeline_parallel) mesh; rank = dp_rank * pp + stage. Each rank builds the whole GPT
once (the same seed gives every rank the same initial weights, so a pipelined run starts exactly where the
unpipelined one does), keeps only its stage's blocks in a `GPTStage`, and drops the rest before the optimizer exists.
The data-parallel rank's batch is split into micro-batches that a GPipe or 1F1B schedule runs through the stages;
the schedule does forward and backward itself, so the LightningModule uses manual optimization
(`bigtrain.training.pipeline_module.PipelineGPTModule`): Lightning's automatic loop owns backward and clipping,
which a pipeline schedule cannot hand back to it.

Weight tying: the first stage holds the token table, the last stage a copy as the output head (an untied model's
head is simply the last stage's own). After backward
the two gradients are summed across the pair (each then holds the tied gradient); identical AdamW updates keep
the copies equal, so training matches the tied unpipelined model. The norm used for clipping counts the pair once.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from bigtrain.model.gpt import embed
from bigtrain.parallel.sharded_checkpoints import after_sharded_save, before_sharded_save
from bigtrain.parallel.strategy import RunDirDDPStrategy
from bigtrain.safe_load import load

SCHEDULES = ("gpipe", "1f1b")
DP, PP = "data_parallel", "pipeline_parallel"


def stage_layers(n_layer: int, pp: int, stage: int) -> range:
    """The block indices of `stage`: contiguous, as even as possible, earlier stages taking the remainder."""
    base, extra = divmod(n_layer, pp)
    start = stage * base + min(stage, extra)
    return range(start, start + base + (1 if stage < extra else 0))


class GPTStage(nn.Module):
    """One pipeline stage cut from a bigtrain GPT. Parameter names are the GPT's own (`transformer.h.3...`), so a
    stage's state dict is a slice of the full model's."""

    def __init__(self, gpt: nn.Module, stage: int, pp: int):
        super().__init__()
        self.config = gpt.config
        self.model_n_params = gpt.num_params()  # the whole model's, for reports (a stage alone cannot count it)
        self.first, self.last = stage == 0, stage == pp - 1
        self.tied = gpt.config.tie_embeddings and pp > 1  # the head is a copy of the first stage's token table
        t = gpt.transformer
        kept = {str(i): t.h[i] for i in stage_layers(len(t.h), pp, stage)}
        parts: dict[str, nn.Module] = {"h": nn.ModuleDict(kept)}
        if self.first:
            parts.update({name: t[name] for name in ("wte", "wpe", "drop") if name in t})  # no wpe with rotary
        if self.last:
            parts["ln_f"] = t.ln_f
        self.transformer = nn.ModuleDict(parts)
        if self.last:
            self.lm_head = gpt.lm_head
            if self.tied:  # untie: the head gets its own copy of the (identical) token table
                self.lm_head.weight = nn.Parameter(gpt.lm_head.weight.detach().clone())

    def num_params(self) -> int:
        """Parameters of the whole GPT this stage was cut from (as GPT.num_params), not of the stage."""
        return self.model_n_params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """First stage: (B, T) token ids -> (B, T, C); middle: (B, T, C) -> (B, T, C); last: -> (B, T, vocab)."""
        t = self.transformer
        if self.first:
            x = embed(t, x)
        for block in t.h.values():
            if self.config.activation_checkpointing and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        if self.last:
            x = self.lm_head(t.ln_f(x))
        return x


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))  # as GPT.forward


class PipelineStrategy(RunDirDDPStrategy):
    """DDP-family strategy (process group, bigtrain's launcher) that wraps nothing in DDP: the stage module is
    driven by a pipeline schedule, and data-parallel gradients are averaged by `pipeline_step` itself."""

    def __init__(self, run_dir: Path, dp: int, pp: int, schedule: str, n_microbatches: int, **kwargs):
        super().__init__(run_dir=run_dir, **kwargs)
        self.dp, self.pp, self.schedule_name, self.n_microbatches = dp, pp, schedule, n_microbatches
        self.schedule = None
        self.stage_module: GPTStage | None = None

    # --- where this rank sits -------------------------------------------------------------------------------
    @property
    def stage(self) -> int:
        return self.global_rank % self.pp

    @property
    def distributed_sampler_kwargs(self) -> dict:
        # Every stage of a pipeline reads the same batch (the first stage its tokens, the last its targets).
        return {"num_replicas": self.dp, "rank": self.global_rank // self.pp}

    def configure_ddp(self) -> None:
        """No DistributedDataParallel wrapper: the schedule runs the stage, `pipeline_step` averages over dp."""

    # --- building ---------------------------------------------------------------------------------------------
    def parallelize_model(self, model: nn.Module) -> nn.Module:
        """GPT -> this rank's GPTStage, with its PipelineStage and schedule (called from configure_model)."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

        dp = self.dp
        self.mesh = init_device_mesh(self.root_device.type, (dp, self.pp), mesh_dim_names=(DP, PP))
        self.pp_group, self.dp_group = self.mesh.get_group(PP), self.mesh.get_group(DP)
        # The pair that shares the tied token table: first and last stage of each data-parallel replica.
        self.tied_group = None
        for replica in range(dp):
            ranks = sorted({replica * self.pp, replica * self.pp + self.pp - 1})
            group = dist.new_group(ranks) if len(ranks) > 1 else None  # every rank joins every new_group call
            if self.global_rank in ranks:
                self.tied_group = group
        self.stage_module = GPTStage(model, self.stage, self.pp).to(self.root_device)
        del model  # the other stages' blocks go with it
        pipe_stage = PipelineStage(self.stage_module, self.stage, self.pp, self.root_device, group=self.pp_group)
        schedule_cls = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}[self.schedule_name]
        self.schedule = schedule_cls(pipe_stage, self.n_microbatches, loss_fn=next_token_loss)
        return self.stage_module

    # --- running ----------------------------------------------------------------------------------------------
    def _run(self, x: torch.Tensor, y: torch.Tensor, train: bool) -> torch.Tensor:
        """One pass of the schedule over a (B, T) batch; the mean loss over its micro-batches, on every rank."""
        losses: list[torch.Tensor] = []
        inputs = (x,) if self.stage == 0 else ()
        targets = {"target": y, "losses": losses} if self.stage == self.pp - 1 else {}
        (self.schedule.step if train else self.schedule.eval)(*inputs, **targets)
        loss = torch.stack(losses).mean().detach() if losses else torch.zeros((), device=self.root_device)
        last = dist.get_global_rank(self.pp_group, self.pp - 1)
        dist.broadcast(loss, src=last, group=self.pp_group)
        return loss

    def pipeline_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Forward + backward of a whole batch; gradients summed over the tied pair and averaged over dp."""
        loss = self._run(x, y, train=True)
        m = self.stage_module
        if self.tied_group is not None and m.tied:
            tied = m.transformer.wte.weight if m.first else m.lm_head.weight
            dist.all_reduce(tied.grad, group=self.tied_group)
        if dist.get_world_size(self.dp_group) > 1:
            for p in m.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad, op=dist.ReduceOp.AVG, group=self.dp_group)
        return loss

    @torch.no_grad()
    def pipeline_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._run(x, y, train=False)

    def grad_norm(self) -> torch.Tensor:
        """Global L2 norm of all gradients across stages, the tied table counted once."""
        m = self.stage_module
        skip = m.lm_head.weight if (m.last and m.tied) else None
        sq = [p.grad.float().pow(2).sum() for p in m.parameters() if p.grad is not None and p is not skip]
        total = torch.stack(sq).sum() if sq else torch.zeros((), device=self.root_device)
        dist.all_reduce(total, group=self.pp_group)
        return total.sqrt()

    # --- checkpoints: every rank holds different weights, so every rank writes its own file -----------------
    def save_checkpoint(self, checkpoint: dict, filepath, storage_options=None) -> None:
        folder = Path(self.broadcast(str(filepath)))
        if self.is_global_zero and folder.is_file():
            folder.unlink()
        before_sharded_save(self, folder)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(checkpoint, folder / f"rank-{self.global_rank}.ckpt")
        after_sharded_save(self, folder)

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict:
        if Path(checkpoint_path).is_file():  # the layout-neutral form of another layout's checkpoint: this slice
            from bigtrain.parallel.neutral_load import stage_checkpoint

            blob = load(checkpoint_path, map_location=self.root_device)
            return stage_checkpoint(blob, self.stage_module.config, self.stage, self.pp)
        path = Path(checkpoint_path) / f"rank-{self.global_rank}.ckpt"
        return load(path, map_location=self.root_device)  # weights-only (bigtrain.safe_load)
