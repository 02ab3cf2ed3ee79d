"""Knowledge distillation: the train task's LightningModule with a frozen teacher's soft targets in the loss.

    loss = alpha x CE(student, labels) + (1 - alpha) x T^2 x KL(softmax(teacher / T) || softmax(student / T))

(Hinton et al. 2015; the T^2 keeps the soft targets' gradient scale independent of T.) Validation still reports the
student's plain cross-entropy, so a distilled run's val/loss compares directly with a run trained alone.

The teacher is not a submodule: it is kept out of the module tree (`object.__setattr__`), so it is in no state dict
or checkpoint, no `parameters()` (hence in no optimizer and holds no optimizer state), and no strategy wraps,
all-reduces or shards it. Every data-parallel rank holds a whole replica, also under ZeRO-3 and FSDP, where only
the student is partitioned: a teacher that fits one device needs no gathers in its forward. The teacher is loaded
in `setup` (outside DeepSpeed's zero.Init, which would partition it) and in `on_fit_start` takes the student's
storage dtype (bf16 under DeepSpeed bf16, fp32 under torch AMP, whose autocast then runs both in bf16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bigtrain.training.module import GPTLightningModule


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, cross-entropy, KL) for logits (B, T, V) and targets (B, T); KL is the mean over tokens of
    KL(p_teacher || p_student) at temperature T, in fp32 whatever the logits' dtype."""
    V = student_logits.size(-1)
    s = student_logits.reshape(-1, V).float()  # (B*T, V)
    t = teacher_logits.reshape(-1, V).float()
    ce = F.cross_entropy(s, targets.reshape(-1))
    log_p_s = F.log_softmax(s / temperature, dim=-1)
    log_p_t = F.log_softmax(t / temperature, dim=-1)
    # sum_v p_t (log p_t - log p_s), averaged over the B*T token positions ("batchmean" over rows)
    kl = F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")
    return alpha * ce + (1.0 - alpha) * temperature**2 * kl, ce, kl


class DistillGPTModule(GPTLightningModule):
    """GPTLightningModule whose training loss mixes in a frozen teacher's soft targets (see the module docstring)."""

    def __init__(self, *args, teacher: str, alpha: float, temperature: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher_path = teacher
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        object.__setattr__(self, "teacher", None)  # outside the module tree: see the module docstring

    def setup(self, stage: str) -> None:
        if self.teacher is None:
            from bigtrain.checkpoint_io import load_model, locate

            # Building the teacher draws (then overwrites) initial weights from the CPU generator: forked, so the
            # student starts from exactly the weights a plain run with this seed starts from.
            with torch.random.fork_rng(devices=[]):
                teacher = load_model(locate(self.teacher_path, "teacher"))  # fp32, eval mode
            teacher.requires_grad_(False)
            object.__setattr__(self, "teacher", teacher)

    def on_fit_start(self) -> None:
        # After the strategy set the student up: its device, and the dtype its weights are stored in.
        dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), torch.float32)
        self.teacher.to(device=self.device, dtype=dtype).eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.__dict__.get("teacher") is not None:
            self.teacher.eval()  # always: no dropout in the targets
        return self

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        with torch.no_grad():
            teacher_logits, _ = self.teacher(x)  # (B, T, V), under the same precision context as the student
        student_logits, _ = self.model(x)
        loss, ce, kl = kd_loss(student_logits, teacher_logits, y, self.alpha, self.temperature)
        self.log("train/loss", loss, on_step=True, prog_bar=True, rank_zero_only=True)
        if self.global_step % self.trainer.log_every_n_steps == 0:
            self.log("train/ce", ce, on_step=True, rank_zero_only=True)
            self.log("train/kd_kl", kl, on_step=True, rank_zero_only=True)
        return loss

    def summary_facts(self) -> dict:
        """The run summary's distillation entries: the settings, and what this rank's teacher looks like after
        training (frozen, in eval mode, no gradients, nothing of it in the optimizer), which the tests check."""
        from bigtrain.parallel.gather import inner_optimizer

        params = list(self.teacher.parameters())
        ids = {id(p) for p in params}
        optimizer = inner_optimizer(self.trainer)
        in_optimizer = sum(id(p) in ids for g in optimizer.param_groups for p in g["params"])
        with_state = sum(id(p) in ids for p in optimizer.state)
        return {
            **super().summary_facts(),  # a mixture-of-experts student's routing means
            "teacher": self.teacher_path,
            "distill_alpha": self.alpha,
            "distill_temperature": self.temperature,
            "teacher_n_params": sum(p.numel() for p in params),
            "teacher_dtype": str(params[0].dtype).removeprefix("torch."),
            "teacher_training": self.teacher.training,
            "teacher_requires_grad": any(p.requires_grad for p in params),
            "teacher_has_grad": any(p.grad is not None for p in params),
            "teacher_params_in_optimizer": in_optimizer,
            "teacher_params_with_optimizer_state": with_state,
        }


def distill_kwargs(cfg) -> dict:
    """The DistillGPTModule arguments beyond GPTLightningModule's, from the composed config."""
    return {"teacher": cfg.teacher, "alpha": cfg.distill.alpha, "temperature": cfg.distill.temperature}
