"""Uncertainty-Aware Mean Teacher (Yu et al. 2019) as in SSL4MIS
train_uncertainty_aware_mean_teacher_2D.py (METHODS.md §2 "UA-MT uncertainty").

Mean Teacher whose consistency is kept only where the teacher is certain: the entropy of the
mean of `mc_passes` noisy, MC-dropout teacher predictions must be below a threshold that ramps
from 0.75 ln 2 to ln 2 over training. No t < 1000 gate.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from ..losses import entropy_map, sigmoid_rampup
from .base import register
from .hparams import hparam
from .mt import MeanTeacher, TeacherHParams


def certain_mask(mean_probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """B x 1 x H x W float mask, 1 where the entropy of the mean prediction is below `threshold`."""
    return (entropy_map(mean_probs) < threshold).float().unsqueeze(1)


def masked_mse(probs_a: torch.Tensor, probs_b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(M (a - b)^2) / (2 sum M + 1e-16): summed over channels, pixels counted once (SSL4MIS)."""
    return (mask * (probs_a - probs_b) ** 2).sum() / (2 * mask.sum() + 1e-16)


@register
class UncertaintyAwareMeanTeacher(MeanTeacher):
    name = "uamt"
    diagnostics = ("weight", "threshold", "certain")  # the entropy threshold, the fraction of pixels under it

    @dataclass(frozen=True)
    class HParams(TeacherHParams):
        mc_passes: int = hparam(8, "SSL4MIS: T = 8 noisy teacher passes", minimum=2, multiple_of=2)
        head_dropout: float = hparam(0.1, "ours: MC-dropout before the seg head (the R50 encoder has none; "
                                          "SSL4MIS's UNet has encoder dropout)", minimum=0, maximum=1)

    def __init__(self, setup, hp, model=None):
        net = dataclasses.replace(setup.net, head_dropout=hp.head_dropout)
        super().__init__(dataclasses.replace(setup, net=net), hp, model)

    def consistency_weight(self, t: int) -> float:
        return self.ramp(t)

    def threshold(self, t: int) -> float:
        """(0.75 + 0.25 rampup(t, T)) ln 2. SSL4MIS ramps it on raw t over max_iter (METHODS §2, §5.1),
        so it already spans the whole run whatever its length: no constant to scale."""
        return (0.75 + 0.25 * sigmoid_rampup(t, self.setup.iterations)) * math.log(2)

    @torch.no_grad()
    def mean_teacher_probs(self, image_u: torch.Tensor) -> torch.Tensor:
        """Mean softmax of mc_passes teacher passes: x_u twice per pass, fresh noise each pass."""
        twice = image_u.repeat(2, 1, 1, 1)
        total = 0.0
        for _ in range(self.hp.mc_passes // 2):
            probs = self.teacher(self.noisy(twice)).float().softmax(1)
            total = total + probs.view(2, len(image_u), *probs.shape[1:]).sum(0)
        return total / self.hp.mc_passes

    def consistency(self, student_u, teacher_u, image_u, t) -> tuple[torch.Tensor, dict]:
        threshold = self.threshold(t)
        mask = certain_mask(self.mean_teacher_probs(image_u), threshold)
        loss = masked_mse(student_u.float().softmax(1), teacher_u.float().softmax(1), mask)
        return loss, {"threshold": threshold, "certain": mask.mean()}

    def steady_state_iteration(self) -> int:
        return 0
