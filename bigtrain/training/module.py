"""The LightningModule: next-token loss, AdamW with decay groups, warmup + cosine schedule, metrics.

It builds the GPT in `configure_model`, the hook Lightning runs inside the strategy's model-building context
(DeepSpeed's zero.Init for ZeRO-3), so a sharded strategy never materialises the whole model on one rank.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch

from bigtrain.model import GPT, gpt_config_from


def lr_at(step: int, lr: float, min_lr: float, warmup: int, max_steps: int, decay: str) -> float:
    """Linear warmup to lr over `warmup` steps, then cosine decay to min_lr at max_steps (or constant)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if decay == "constant" or max_steps <= warmup:
        return lr
    progress = min((step - warmup) / max(max_steps - warmup, 1), 1.0)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


class GPTLightningModule(pl.LightningModule):
    def __init__(self, model_cfg, optim_cfg, max_steps: int, tokens_per_step: int):
        super().__init__()
        self.gpt_config = gpt_config_from(model_cfg)
        self.optim_cfg = optim_cfg
        self.max_steps = max_steps
        self.tokens_per_step = tokens_per_step  # global: global_batch_size x block_size
        self.model: GPT | None = None
        self.val_history: list[tuple[int, float]] = []  # (step, val loss) in order

    def configure_model(self) -> None:
        if self.model is None:  # Lightning may call this more than once (e.g. on resume)
            self.model = GPT(self.gpt_config)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        return self.model(idx, targets)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        _, loss = self.model(x, y)
        self.log("train/loss", loss, on_step=True, prog_bar=True, rank_zero_only=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        _, loss = self.model(x, y)
        self.log("val/loss", loss, on_epoch=True, sync_dist=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        loss = self.trainer.callback_metrics.get("val/loss")
        if loss is not None and not self.trainer.sanity_checking:
            self.log("val/ppl", torch.exp(loss), sync_dist=True)
            self.val_history.append((self.global_step, float(loss)))

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.log("perf/tokens_seen", float(self.global_step * self.tokens_per_step), rank_zero_only=True)

    def on_before_optimizer_step(self, optimizer) -> None:
        # Pre-clipping global grad norm, every log interval (the norm costs a pass over all gradients).
        if self.global_step % self.trainer.log_every_n_steps == 0:
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            if grads:
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
                self.log("train/grad_norm", norm, rank_zero_only=True)

    def configure_optimizers(self):
        o = self.optim_cfg
        # Weight decay on matrices (dim >= 2) only: biases and LayerNorm gains stay undecayed (GPT-2/3 practice).
        # The decision reads each parameter's true rank from a meta-device copy of the GPT, by name: under ZeRO-3 a
        # parameter is an empty placeholder and under FSDP a flat 1-D shard, so p.dim() would put all in one group.
        with torch.device("meta"):
            ndims = {name: p.dim() for name, p in GPT(self.gpt_config).named_parameters()}
        params = [
            (p, ndims[name.replace("_fsdp_wrapped_module.", "")])
            for name, p in self.model.named_parameters()
            if p.requires_grad
        ]
        groups = [
            {"params": [p for p, ndim in params if ndim >= 2], "weight_decay": o.weight_decay},
            {"params": [p for p, ndim in params if ndim < 2], "weight_decay": 0.0},
        ]
        on_gpu = self.device.type == "cuda"
        fused = o.fused if o.fused is not None else on_gpu
        optimizer = torch.optim.AdamW(
            groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, fused=fused or None, foreach=None if fused else True
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: lr_at(step, o.lr, o.min_lr, o.warmup_steps, self.max_steps, o.decay) / o.lr,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @torch.no_grad()
    def evaluate(self, dataloader) -> float:
        """Mean loss over `dataloader`, averaged across ranks; outside Lightning's loop (before the first step and
        after the last), under the trainer's precision."""
        was_training = self.training
        self.eval()
        total = torch.zeros((), device=self.device)
        n = 0
        # Through the strategy's wrapper (DDP, DeepSpeed engine, FSDP root), as Lightning's own loops call it: under
        # FSDP the root unit's weights (embeddings, final norm) are only gathered by the wrapper's forward.
        wrapped = self.trainer.strategy.model or self
        with self.trainer.precision_plugin.forward_context():
            for x, y in dataloader:
                _, loss = wrapped(x.to(self.device), y.to(self.device))
                total += loss.float()
                n += 1
        self.train(was_training)
        mean = self.trainer.strategy.reduce(total / max(n, 1), reduce_op="mean")
        return float(mean)
