"""Entropy minimisation (Vu et al. 2019, ADVENT) as in SSL4MIS train_entropy_minimization_2D.py.

L = L_sup + w(t) mean over ALL B images (labeled too) of the pixel entropy / ln C.
"""

from __future__ import annotations

import math

import torch

from ..losses import entropy_map
from .base import Batch, Method, register


def normalised_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean pixel entropy of softmax(logits), divided by its maximum ln C."""
    return entropy_map(logits.float().softmax(1)).mean() / math.log(logits.shape[1])


@register
class EntropyMinimisation(Method):
    name = "em"

    def compute_loss(self, batch: Batch, t: int):
        logits = self.model(batch.image)
        sup = self.supervised_loss(logits[: batch.labeled_bs], batch.label)
        unsup = normalised_entropy(logits)
        return self.semi_supervised(sup, unsup, self.ramp(t))
