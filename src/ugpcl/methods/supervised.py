"""Supervised baseline: the UNet-R50 trained on the labeled images only (Table 1, first row).

The loss covers the labeled images only. What the network forwards follows the authors' baseline
(`unet_r50` in taovv/UGPCL, METHODS §3.7): the whole batch of 16, labeled and unlabeled alike, so
batch normalisation normalises over all 16 and its running statistics, which evaluation uses,
include the unlabeled images (`batch_norm_unlabeled: true`). `false` forwards the labeled 8 alone
(BN on the labeled images only, as a baseline that never sees an unlabeled image).
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Batch, Method, register
from .hparams import hparam


@register
class Supervised(Method):
    name = "supervised"

    @dataclass(frozen=True)
    class HParams:
        batch_norm_unlabeled: bool = hparam(
            True, "authors' unet_r50: two-stream batch of 16 with 8 labeled, loss on the 8, BN on all 16 (METHODS §3.7)")

    @classmethod
    def takes_unlabeled(cls, hp) -> bool:
        return hp.batch_norm_unlabeled  # false: the engine hands it labeled batches only

    def __init__(self, setup, hp, model=None):
        super().__init__(setup, hp, model)
        self.uses_unlabeled = self.takes_unlabeled(hp)

    def compute_loss(self, batch: Batch, t: int):
        logits = self.model(batch.image if self.uses_unlabeled else batch.labeled)
        loss = self.supervised_loss(logits[: batch.labeled_bs], batch.label)
        return loss, {"sup": loss.detach()}
