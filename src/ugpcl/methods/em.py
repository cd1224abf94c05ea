"""Entropy minimisation (Vu et al. 2019, ADVENT) as in SSL4MIS train_entropy_minimization_2D.py.

L = L_sup + w(t) mean over ALL B images (labeled too) of the pixel entropy / ln C.
"""

from __future__ import annotations

import math

import torch

from ..losses import entropy_map
from .base import Batch, Method


def normalised_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean pixel entropy of softmax(logits), divided by its maximum ln C."""
    return entropy_map(logits.float().softmax(1)).mean() / math.log(logits.shape[1])


class EntropyMinimisation(Method):
    name = "em"

    def __init__(self, cfg: dict, num_classes: int, in_channels: int):
        super().__init__(cfg, num_classes, in_channels)
        self.nets["model"] = self.build_net()

    def train_step(self, batch: Batch, t: int) -> tuple[torch.Tensor, dict[str, float]]:
        logits = self.nets["model"](batch.image)
        sup = self.supervised_loss(logits[: batch.labeled_bs], batch.label)
        unsup = normalised_entropy(logits)
        weight = self.ramp(t)
        loss = sup + weight * unsup
        return loss, {"sup": sup.item(), "unsup": unsup.item(), "weight": weight}


METHOD = EntropyMinimisation
