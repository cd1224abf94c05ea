"""Deep Co-Training (Qiao et al. 2018) in the SSL4MIS 2D form (train_deep_co_training_2D.py).

One UNet, two views of the unlabeled images: x_u and rot90(x_u, k) with one k per iteration.
No second network and no adversarial examples (METHODS.md §2 "DCT").
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from ..geometry import rot90
from .base import Batch, Method, register


def rotation_consistency(net: nn.Module, image_u: torch.Tensor, logits_u: torch.Tensor, k) -> torch.Tensor:
    """0.5 [mean (sg(s) - r)^2 + mean (s - sg(r))^2], s = softmax f(rot_k x_u), r = rot_k softmax f(x_u).

    Rotating the plain view's prediction aligns the two before they are compared. `k`: quarter
    turns, an int or a tensor on the images' device (then no value is read back to the host).
    """
    k = torch.as_tensor(k, device=image_u.device).expand(len(image_u))
    rotated = rot90(logits_u.float().softmax(1), k)
    of_rotated = net(rot90(image_u, k)).float().softmax(1)
    return 0.5 * (F.mse_loss(rotated, of_rotated.detach()) + F.mse_loss(of_rotated, rotated.detach()))


@register
class DeepCoTraining(Method):
    name = "dct"

    def compute_loss(self, batch: Batch, t: int):
        n_l = batch.labeled_bs
        logits = self.model(batch.image)
        sup = self.supervised_loss(logits[:n_l], batch.label)
        k = torch.randint(4, (), device=batch.image.device)  # one k per iteration, drawn on the device: no copy
        unsup = rotation_consistency(self.model, batch.unlabeled, logits[n_l:], k)
        return self.semi_supervised(sup, unsup, self.ramp(t))
