"""The LightningModule for parallelism=pipeline: the same loss, optimizer and schedule, optimized by hand.

A pipeline schedule (torch.distributed.pipelining) runs forward and backward of all micro-batches itself and leaves
the gradients on each stage; Lightning's automatic optimization would want a loss to call backward on and would
clip each rank's gradients alone. So this module uses manual optimization: one training_step is one optimizer step
over the data-parallel rank's whole batch (the strategy splits it into micro-batches), with the gradient norm and
clipping computed across stages. The PipelineStrategy (bigtrain/parallel/pipeline.py) does the distributed work.
"""

from __future__ import annotations

import torch

from bigtrain.training.module import GPTLightningModule


class PipelineGPTModule(GPTLightningModule):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False

    @property
    def pipeline(self):
        return self.trainer.strategy

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        optimizer.zero_grad(set_to_none=True)
        loss = self.pipeline.pipeline_step(x, y)  # forward + backward of every micro-batch, on every stage
        norm = self.pipeline.grad_norm()
        if self.global_step % self.trainer.log_every_n_steps == 0:
            self.log("train/grad_norm", norm, rank_zero_only=True)
        clip = self.optim_cfg.grad_clip
        if clip:  # torch.nn.utils.clip_grad_norm_'s rule, with the norm of the whole (pipelined) model
            scale = torch.clamp(clip / (norm + 1e-6), max=1.0)
            for p in self.parameters():
                if p.grad is not None:
                    p.grad.mul_(scale)
        optimizer.step()
        scheduler.step()
        self.log("train/loss", loss, on_step=True, prog_bar=True, rank_zero_only=True)
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        """The norm is logged by training_step (across stages); a stage's own norm would mislead."""

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        self.log("val/loss", self.pipeline.pipeline_loss(x, y), on_epoch=True, sync_dist=True, prog_bar=True)

    @torch.no_grad()
    def evaluate(self, dataloader) -> float:
        was_training = self.training
        self.eval()
        losses = [self.pipeline.pipeline_loss(x.to(self.device), y.to(self.device)) for x, y in dataloader]
        self.train(was_training)
        mean = torch.stack(losses).mean() if losses else torch.zeros((), device=self.device)
        return float(self.trainer.strategy.reduce(mean, reduce_op="mean"))
