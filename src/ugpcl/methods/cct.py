"""Cross-Consistency Training (Ouali et al. 2020) as in SSL4MIS
train_cross_consistency_training_2D.py (METHODS.md §2 "CCT").

A shared encoder, the main decoder and three auxiliary decoders; each auxiliary decoder gets a
perturbed copy of every encoder feature map: feature noise, dropout, feature drop. No VAT,
object/context masking or cutout. Evaluation uses the main decoder (the model's forward).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import softmax_mse
from ..models import build_decoder
from .base import Batch, Method, RampHParams, register
from .hparams import hparam


def feature_noise(x: torch.Tensor, magnitude: float) -> torch.Tensor:
    """x + x n, n ~ U(-magnitude, magnitude) of shape C x H x W shared by the batch."""
    noise = torch.empty(x.shape[1:], device=x.device, dtype=x.dtype).uniform_(-magnitude, magnitude)
    return x + x * noise


def feature_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    return F.dropout(x, p, training=True)


def feature_drop(x: torch.Tensor, gamma_range: tuple[float, float]) -> torch.Tensor:
    """Zero the positions whose channel mean a is >= gamma max(a) of that sample, gamma ~ U(range)."""
    gamma = torch.empty((), device=x.device).uniform_(*gamma_range)  # drawn on the device: no copy, no read back
    attention = x.mean(1, keepdim=True)
    peak = attention.flatten(1).amax(1).view(-1, 1, 1, 1)
    return x * (attention < gamma * peak)


@dataclass(frozen=True)
class Perturbations(RampHParams):
    """The three auxiliary decoders' feature perturbations, and the consistency ramp."""

    feature_noise: float = hparam(0.3, "SSL4MIS FeatureNoise(uniform_range=0.3)", minimum=0)
    dropout: float = hparam(0.3, "SSL4MIS Dropout(p=0.3)", minimum=0, maximum=1)
    drop_gamma: tuple[float, float] = hparam((0.7, 0.9), "SSL4MIS FeatureDropout: uniform(0.7, 0.9)",
                                             minimum=0, maximum=1)
    # `all`: the main decoder gets a quarter of the supervised gradient it would get alone;
    # `main` (off the reference code, as in Ouali et al.): the auxiliary decoders learn from L_c only
    supervision: Literal["all", "main"] = hparam(
        "all", "SSL4MIS: L_sup the mean over the main and the 3 auxiliary decoders (all)")


@register
class CrossConsistency(Method):
    name = "cct"
    HParams = Perturbations

    def __init__(self, setup, hp, model=None):
        super().__init__(setup, hp, model)
        self.aux = nn.ModuleList(build_decoder(setup.net, self.model.encoder_channels) for _ in range(3))
        self.perturbations = [  # one per auxiliary decoder
            partial(feature_noise, magnitude=hp.feature_noise),
            partial(feature_dropout, p=hp.dropout),
            partial(feature_drop, gamma_range=hp.drop_gamma),
        ]

    def compute_loss(self, batch: Batch, t: int):
        n_l = batch.labeled_bs
        features = self.model.encode(batch.image)
        main = self.model.decoder(features)
        # every map the decoder reads (f1..f5, skips included) is perturbed; f0, the input, is unused
        aux = [decoder([features[0], *(perturb(f) for f in features[1:])])
               for decoder, perturb in zip(self.aux, self.perturbations)]
        # mean of 0.5 (CE + Dice) over the supervised outputs; over all 4, SSL4MIS's (4 CE + 4 Dice) / 8
        supervised = [main, *aux] if self.hp.supervision == "all" else [main]
        sup = sum(self.supervised_loss(out[:n_l], batch.label) for out in supervised) / len(supervised)
        # the main output is not detached (SSL4MIS, unlike the original CCT)
        unsup = sum(softmax_mse(main[n_l:], out[n_l:]) for out in aux) / 3
        return self.semi_supervised(sup, unsup, self.ramp(t))
