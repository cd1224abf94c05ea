"""Cross Pseudo Supervision (Chen et al. 2021) as in SSL4MIS train_cross_pseudo_supervision_2D.py.

Two UNets see the same batch: their decoders are initialised independently; their encoders, with
ImageNet weights (`model.pretrained`), start from the same weights, as in the CPS paper's
ImageNet-initialised backbones (SSL4MIS's UNets have no pretrained part and start wholly
apart; with `pretrained: false` so do these). On the unlabeled part each is trained
with cross-entropy against the other's argmax (no gradient, no confidence threshold). One
backward on L1 + L2; the single SGD optimiser over both equals SSL4MIS's two equal optimisers.
"""

from __future__ import annotations

from ..losses import class_map, cross_entropy
from .base import Batch, Method, register


@register
class CrossPseudoSupervision(Method):
    name = "cps"
    evaluated = ("model", "model2")  # SSL4MIS scores both; the tables report the first

    def __init__(self, setup, hp, model=None):
        super().__init__(setup, hp, model)
        self.model2 = self.unet()  # its own random draw (the encoder's ImageNet weights, if any, are shared)

    def compute_loss(self, batch: Batch, t: int):
        n_l = batch.labeled_bs
        logits1, logits2 = self.model(batch.image), self.model2(batch.image)
        pseudo1, pseudo2 = class_map(logits1[n_l:].detach()), class_map(logits2[n_l:].detach())
        sup = self.supervised_loss(logits1[:n_l], batch.label) + self.supervised_loss(logits2[:n_l], batch.label)
        unsup = cross_entropy(logits1[n_l:], pseudo2) + cross_entropy(logits2[n_l:], pseudo1)
        return self.semi_supervised(sup, unsup, self.ramp(t))
