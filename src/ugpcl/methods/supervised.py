"""Supervised baseline: the UNet-R50 trained on the labeled images only (Table 1, first row)."""

from __future__ import annotations

import torch

from .base import Batch, Method


class Supervised(Method):
    name = "supervised"
    uses_unlabeled = False

    def __init__(self, cfg: dict, num_classes: int, in_channels: int):
        super().__init__(cfg, num_classes, in_channels)
        self.nets["model"] = self.build_net()

    def train_step(self, batch: Batch, t: int) -> tuple[torch.Tensor, dict[str, float]]:
        logits = self.nets["model"](batch.labeled)
        loss = self.supervised_loss(logits, batch.label)
        return loss, {"sup": loss.item()}


METHOD = Supervised
