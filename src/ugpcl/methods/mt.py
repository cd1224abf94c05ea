"""Mean Teacher (Tarvainen & Valpola 2017) as in SSL4MIS train_mean_teacher_2D.py (METHODS.md §2).

The student sees the clean batch; an EMA teacher (no gradient, train mode) sees the unlabeled
images plus clamped Gaussian noise; L = L_sup + w(t) mean (p_student,u - p_teacher,u)^2, with
w(t) forced to 0 for t < gate_iterations.
"""

from __future__ import annotations

import torch

from ..engine.ema import ema_update, make_teacher
from ..losses import softmax_mse
from .base import Batch, Method


class MeanTeacher(Method):
    name = "mt"

    def __init__(self, cfg: dict, num_classes: int, in_channels: int):
        super().__init__(cfg, num_classes, in_channels)
        # head_dropout is a UA-MT key (its MC-dropout source); for MT it is absent -> model default
        self.nets["model"] = self.build_net(head_dropout=self.hp.get("head_dropout"))
        self.frozen["teacher"] = make_teacher(self.nets["model"])

    def noisy(self, x: torch.Tensor) -> torch.Tensor:
        """x + clamp(noise_std N(0, 1), -noise_clip, noise_clip): the teacher's input."""
        clip = self.hp["noise_clip"]
        return x + (torch.randn_like(x) * self.hp["noise_std"]).clamp(-clip, clip)

    def consistency_weight(self, t: int) -> float:
        return 0.0 if t < self.hp["gate_iterations"] else self.ramp(t)

    def consistency(self, student_u, teacher_u, image_u, t) -> tuple[torch.Tensor, dict[str, float]]:
        """The unsupervised term from student and (noisy, no-grad) teacher logits of x_u."""
        return softmax_mse(student_u, teacher_u), {}

    def train_step(self, batch: Batch, t: int) -> tuple[torch.Tensor, dict[str, float]]:
        n_l = batch.labeled_bs
        logits = self.nets["model"](batch.image)
        with torch.no_grad():
            teacher_u = self.frozen["teacher"](self.noisy(batch.unlabeled))
        sup = self.supervised_loss(logits[:n_l], batch.label)
        unsup, logs = self.consistency(logits[n_l:], teacher_u, batch.unlabeled, t)
        weight = self.consistency_weight(t)
        loss = sup + weight * unsup
        return loss, {"sup": sup.item(), "unsup": unsup.item(), "weight": weight, **logs}

    def after_step(self, t: int) -> None:
        ema_update(self.frozen["teacher"], self.nets["model"], self.hp["ema_decay"], t)


METHOD = MeanTeacher
