"""Supervised baseline: the UNet-R50 trained on the labeled images only (Table 1, first row)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Batch, Method, register


@register
class Supervised(Method):
    name = "supervised"
    uses_unlabeled = False

    @dataclass(frozen=True)
    class HParams:
        """No hyper-parameters of its own."""

    def compute_loss(self, batch: Batch, t: int):
        loss = self.supervised_loss(self.model(batch.labeled), batch.label)
        return loss, {"sup": loss.detach()}
