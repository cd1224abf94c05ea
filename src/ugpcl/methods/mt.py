"""Mean Teacher (Tarvainen & Valpola 2017) as in SSL4MIS train_mean_teacher_2D.py (METHODS.md §2).

The student sees the clean batch; an EMA teacher (no gradient, train mode) sees the unlabeled
images plus clamped Gaussian noise; L = L_sup + w(t) mean (p_student,u - p_teacher,u)^2, with
w(t) forced to 0 for t < gate_iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ema import ema_update, make_teacher
from ..losses import softmax_mse
from .base import Batch, Method, RampHParams, register
from .hparams import hparam


@dataclass(frozen=True)
class TeacherHParams(RampHParams):
    """The EMA teacher and its input noise, shared with UA-MT."""

    ema_decay: float = hparam(0.99, "SSL4MIS --ema_decay 0.99", minimum=0, maximum=1)
    noise_std: float = hparam(0.1, "SSL4MIS: clamp(randn_like(x) * 0.1, -0.2, 0.2)", minimum=0)
    noise_clip: float = hparam(0.2, "SSL4MIS: clamp(randn_like(x) * 0.1, -0.2, 0.2)", minimum=0)


@register
class MeanTeacher(Method):
    name = "mt"

    @dataclass(frozen=True)
    class HParams(TeacherHParams):
        # Kept at 1000 iterations whatever the run's length (not scaled like the ramp): it is a warm-up
        # in iterations for the EMA teacher (alpha 0.99: a memory of ~100 steps), not a fraction of a
        # schedule. At t = 1000 SSL4MIS's own ramp is below 1% of lambda (METHODS §2); ours, scaled to
        # 6000 iterations, is at 3%, so the gate holds back a sixth of the run's (small) early weight.
        gate_iterations: int = hparam(1000, "SSL4MIS: consistency_loss = 0 while iter_num < 1000", minimum=0)

    def __init__(self, setup, hp, model=None):
        super().__init__(setup, hp, model)
        self.teacher = make_teacher(self.model)

    def noisy(self, x: torch.Tensor) -> torch.Tensor:
        """x + clamp(noise_std N(0, 1), -noise_clip, noise_clip): the teacher's input."""
        return x + (torch.randn_like(x) * self.hp.noise_std).clamp(-self.hp.noise_clip, self.hp.noise_clip)

    def consistency_weight(self, t: int) -> float:
        return 0.0 if t < self.hp.gate_iterations else self.ramp(t)

    def consistency(self, student_u, teacher_u, image_u, t) -> tuple[torch.Tensor, dict]:
        """The unsupervised term from student and (noisy, no-grad) teacher logits of x_u."""
        return softmax_mse(student_u, teacher_u), {}

    def compute_loss(self, batch: Batch, t: int):
        n_l = batch.labeled_bs
        logits = self.model(batch.image)
        with torch.no_grad():
            teacher_u = self.teacher(self.noisy(batch.unlabeled))
        sup = self.supervised_loss(logits[:n_l], batch.label)
        unsup, logs = self.consistency(logits[n_l:], teacher_u, batch.unlabeled, t)
        return self.semi_supervised(sup, unsup, self.consistency_weight(t), **logs)

    def after_step(self, t: int) -> None:
        ema_update(self.teacher, self.model, self.hp.ema_decay, t)

    def steady_state_iteration(self) -> int:
        return self.hp.gate_iterations
