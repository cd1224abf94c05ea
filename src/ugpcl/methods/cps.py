"""Cross Pseudo Supervision (Chen et al. 2021) as in SSL4MIS train_cross_pseudo_supervision_2D.py.

Two independently initialised UNets see the same batch; on the unlabeled part each is trained
with cross-entropy against the other's argmax (no gradient, no confidence threshold). One
backward on L1 + L2; the single SGD optimiser over both equals SSL4MIS's two equal optimisers.
"""

from __future__ import annotations

import torch

from ..losses import cross_entropy
from .base import Batch, Method


class CrossPseudoSupervision(Method):
    name = "cps"

    def __init__(self, cfg: dict, num_classes: int, in_channels: int):
        super().__init__(cfg, num_classes, in_channels)
        self.nets["model"] = self.build_net()
        self.nets["model2"] = self.build_net()

    def train_step(self, batch: Batch, t: int) -> tuple[torch.Tensor, dict[str, float]]:
        n_l = batch.labeled_bs
        logits1 = self.nets["model"](batch.image)
        logits2 = self.nets["model2"](batch.image)
        pseudo1, pseudo2 = logits1[n_l:].detach().argmax(1), logits2[n_l:].detach().argmax(1)
        sup = self.supervised_loss(logits1[:n_l], batch.label) + self.supervised_loss(logits2[:n_l], batch.label)
        unsup = cross_entropy(logits1[n_l:], pseudo2) + cross_entropy(logits2[n_l:], pseudo1)
        weight = self.ramp(t)
        loss = sup + weight * unsup
        return loss, {"sup": sup.item(), "unsup": unsup.item(), "weight": weight}


METHOD = CrossPseudoSupervision
