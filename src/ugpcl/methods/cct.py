"""Cross-Consistency Training (Ouali et al. 2020) as in SSL4MIS
train_cross_consistency_training_2D.py (METHODS.md §2 "CCT").

A shared encoder, the main decoder and three auxiliary decoders; each auxiliary decoder gets a
perturbed copy of every encoder feature map: feature noise, dropout, feature drop. No VAT,
object/context masking or cutout. Evaluation uses the main decoder (the model's forward).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import softmax_mse
from ..models import build_decoder
from .base import Batch, Method


def feature_noise(x: torch.Tensor, magnitude: float) -> torch.Tensor:
    """x + x n, n ~ U(-magnitude, magnitude) of shape C x H x W shared by the batch."""
    noise = torch.empty(x.shape[1:], device=x.device, dtype=x.dtype).uniform_(-magnitude, magnitude)
    return x + x * noise


def feature_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    return F.dropout(x, p, training=True)


def feature_drop(x: torch.Tensor, gamma_range: tuple[float, float]) -> torch.Tensor:
    """Zero the positions whose channel mean a is >= gamma max(a) of that sample, gamma ~ U(range)."""
    gamma = torch.empty(()).uniform_(*gamma_range).item()
    attention = x.mean(1, keepdim=True)
    peak = attention.flatten(1).amax(1).view(-1, 1, 1, 1)
    return x * (attention < gamma * peak)


class CrossConsistency(Method):
    name = "cct"

    def __init__(self, cfg: dict, num_classes: int, in_channels: int):
        super().__init__(cfg, num_classes, in_channels)
        model = self.build_net()
        self.nets["model"] = model
        self.nets["aux"] = nn.ModuleList(
            build_decoder(cfg["model"], num_classes, model.encoder_channels) for _ in range(3)
        )
        self.perturbations = [  # one per auxiliary decoder
            partial(feature_noise, magnitude=self.hp["feature_noise"]),
            partial(feature_dropout, p=self.hp["dropout"]),
            partial(feature_drop, gamma_range=tuple(self.hp["drop_gamma"])),
        ]

    def train_step(self, batch: Batch, t: int) -> tuple[torch.Tensor, dict[str, float]]:
        n_l = batch.labeled_bs
        model = self.nets["model"]
        features = model.encode(batch.image)
        main = model.decoder(features)
        # every map the decoder reads (f1..f5, skips included) is perturbed; f0, the input, is unused
        aux = [
            decoder([features[0], *(perturb(f) for f in features[1:])])
            for decoder, perturb in zip(self.nets["aux"], self.perturbations)
        ]
        # mean of 0.5 (CE + Dice) over the 4 outputs = the (sum of 4 CE + 4 Dice) / 8 of SSL4MIS
        sup = sum(self.supervised_loss(out[:n_l], batch.label) for out in [main, *aux]) / 4
        # the main output is not detached (SSL4MIS, unlike the original CCT)
        unsup = sum(softmax_mse(main[n_l:], out[n_l:]) for out in aux) / 3
        weight = self.ramp(t)
        loss = sup + weight * unsup
        return loss, {"sup": sup.item(), "unsup": unsup.item(), "weight": weight}


METHOD = CrossConsistency
