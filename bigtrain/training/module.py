"""The LightningModule: next-token loss, AdamW with decay groups, warmup + cosine schedule, metrics.

It builds the GPT in `configure_model`, the hook Lightning runs inside the strategy's model-building context
(DeepSpeed's zero.Init for ZeRO-3), so a sharded strategy never materialises the whole model on one rank.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytorch_lightning as pl
import torch

from bigtrain.model import GPT, gpt_config_from
from bigtrain.model.param_groups import decay_split


def lr_at(step: int, lr: float, min_lr: float, warmup: int, max_steps: int, decay: str) -> float:
    """Linear warmup to lr over `warmup` steps, then cosine decay to min_lr at max_steps (or constant)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if decay == "constant" or max_steps <= warmup:
        return lr
    progress = min((step - warmup) / max(max_steps - warmup, 1), 1.0)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


class GPTLightningModule(pl.LightningModule):
    def __init__(
        self,
        model_cfg,
        optim_cfg,
        max_steps: int,
        tokens_per_step: int,
        run_config: dict | None = None,
        init_from: str | None = None,
        compile_model: bool = False,
    ):
        super().__init__()
        self.compile_model = compile_model
        self.gpt_config = gpt_config_from(model_cfg)
        self.run_config = run_config  # stored in every checkpoint, so a checkpoint file describes its own model
        self.init_from = init_from  # a checkpoint whose weights start this run (fine-tuning)
        self.optim_cfg = optim_cfg
        self.max_steps = max_steps
        self.tokens_per_step = tokens_per_step  # global: global_batch_size x block_size
        self.model: GPT | None = None
        self.val_history: list[tuple[int, float]] = []  # (step, val loss) in order
        self.moe_totals: dict[str, torch.Tensor] = {}  # routing metrics summed over steps (MoE models)

    def configure_model(self) -> None:
        if self.model is None:  # Lightning may call this more than once (e.g. on resume)
            model = GPT(self.gpt_config)
            if self.init_from:
                from bigtrain.checkpoint_io import load_model, locate

                # Weights only: the optimizer, schedule and step count start fresh (train.run checked the fit).
                model.load_state_dict(load_model(locate(self.init_from, "init_from")).state_dict())
            # A model-parallel strategy (bigtrain/parallel) shards or splits the model here, the hook Lightning
            # expects it in; the module itself stays parallelism-agnostic.
            parallelize = getattr(getattr(self._trainer, "strategy", None), "parallelize_model", None)
            self.model = parallelize(model) if parallelize is not None else model
            if self.compile_model:
                self.model.compile()  # in place: parameters and checkpoint keys stay those of the plain GPT

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        return self.model(idx, targets)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        _, loss = self.model(x, y)
        self.log("train/loss", loss, on_step=True, prog_bar=True, rank_zero_only=True)
        moe = getattr(self.model, "moe_stats", dict)()
        if moe:  # train/loss stays the language-model loss, comparable with a dense run's
            from bigtrain.training.moe_metrics import add_router_losses

            loss = add_router_losses(self, loss, moe)
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
        # Only on the steps the loggers write: each self.log costs ~1-2 ms of Lightning bookkeeping on CPU, and a
        # value logged in between would be overwritten before anyone reads it.
        if self.global_step % self.trainer.log_every_n_steps == 0:
            self.log("perf/tokens_seen", float(self.global_step * self.tokens_per_step), rank_zero_only=True)

    def on_before_optimizer_step(self, optimizer) -> None:
        # Pre-clipping global grad norm, every log interval (the norm costs a pass over all gradients).
        # Lightning writes a row when (steps taken + 1) % log_every_n_steps == 0: compute the norm for that row.
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            strategy_norm = getattr(self.trainer.strategy, "grad_norm", None)  # a strategy whose ranks hold parts
            if strategy_norm is not None:
                self.log("train/grad_norm", strategy_norm(self), rank_zero_only=True)
                return
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            if grads:
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
                if hasattr(norm, "full_tensor"):  # a DTensor (tensor parallel): reduce the partial norms
                    norm = norm.full_tensor()
                self.log("train/grad_norm", norm, rank_zero_only=True)

    def summary_facts(self) -> dict:
        """Facts for summary.json beyond the common ones: a mixture of experts' routing means (empty if dense)."""
        from bigtrain.training.moe_metrics import moe_summary

        return moe_summary(self)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Everything an exact resume needs beyond Lightning's own state: the validation history (so the summary
        # still knows where the run started) and every RNG (dropout, sampling), in weights_only-loadable types.
        if self.run_config is not None:  # makes every checkpoint self-describing (generate, eval, export)
            from bigtrain.checkpoint_io import RUN_CONFIG_KEY

            checkpoint[RUN_CONFIG_KEY] = self.run_config
        np_state = np.random.get_state()
        checkpoint["bigtrain"] = {
            "val_history": [[int(s), float(v)] for s, v in self.val_history],
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
                "python": random.getstate(),
            },
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("bigtrain", {})
        self.val_history = [(int(s), float(v)) for s, v in state.get("val_history", [])]
        rng = state.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            name, keys, *rest = rng["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
            version, internal, gauss = rng["python"]
            random.setstate((version, tuple(internal), gauss))

    def configure_optimizers(self):
        o = self.optim_cfg
        # Weight decay on matrices (dim >= 2) only: biases and LayerNorm gains stay undecayed (GPT-2/3 practice).
        # The decision reads each parameter's true rank from a meta-device copy of the GPT, by name: under ZeRO-3 a
        # parameter is an empty placeholder and under FSDP a flat 1-D shard, so p.dim() would put all in one group.
        with torch.device("meta"):
            ndims = {name: p.dim() for name, p in GPT(self.gpt_config).named_parameters()}
        # Names the plain GPT lacks (a pipeline stage's own output head, tensor parallel's split q/k/v) are whole
        # tensors or DTensors there, whose dim() is the true rank.
        trainable = {name: p for name, p in self.model.named_parameters() if p.requires_grad}
        decay, rest = decay_split(
            (name, ndims.get(name.replace("_fsdp_wrapped_module.", ""), p.dim())) for name, p in trainable.items()
        )
        groups = [
            {"params": [trainable[n] for n in decay], "weight_decay": o.weight_decay},
            {"params": [trainable[n] for n in rest], "weight_decay": 0.0},
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
