"""Segmentation losses and ramp schedules shared by every method."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -1) -> torch.Tensor:
    """Mean pixel cross-entropy; `target` holds class indices (any integer dtype)."""
    return F.cross_entropy(logits.float(), target.long(), ignore_index=ignore_index)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, include_background: bool = False) -> torch.Tensor:
    """Soft Dice loss of METHODS.md §1, sums pooled over the whole batch.

    d_c = 1 - (2 sum p g + 1e-5) / (sum p^2 + sum g^2 + 1e-5), averaged over all C classes.
    With include_background=False the background term is zeroed but the sum is still divided
    by C, exactly as the UGPCL code does (SSL4MIS includes it).
    """
    num_classes = logits.shape[1]
    probs = logits.float().softmax(dim=1)
    onehot = F.one_hot(target.long(), num_classes).permute(0, 3, 1, 2).float()
    dims = (0, 2, 3)
    intersect = (probs * onehot).sum(dims)
    denom = (probs * probs).sum(dims) + (onehot * onehot).sum(dims)
    per_class = 1 - (2 * intersect + 1e-5) / (denom + 1e-5)
    if not include_background:
        per_class = per_class[1:]
    return per_class.sum() / num_classes


def ce_dice(logits: torch.Tensor, target: torch.Tensor, include_background: bool = False) -> torch.Tensor:
    """L_seg = 0.5 CE + 0.5 Dice (paper eq. 4)."""
    return 0.5 * cross_entropy(logits, target) + 0.5 * dice_loss(logits, target, include_background)


def sigmoid_rampup(current: float, length: float) -> float:
    """exp(-5 (1 - x)^2) with x = clip(current / length, 0, 1) (Laine & Aila 2017)."""
    if length == 0:
        return 1.0
    x = min(max(current, 0.0), length) / length
    return math.exp(-5.0 * (1.0 - x) ** 2)


def ramp_weight(t: int, maximum: float, ramp_epoch: int, ramp_length: int) -> float:
    """Consistency weight at 0-based iteration t: maximum * rampup(floor(t / ramp_epoch), ramp_length)."""
    return maximum * sigmoid_rampup(t // ramp_epoch, ramp_length)


def softmax_mse(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Mean over every element of (softmax(a) - softmax(b))^2; gradients reach both sides."""
    return F.mse_loss(logits_a.float().softmax(1), logits_b.float().softmax(1))


def entropy_map(probs: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Pixel entropy -sum_c p log(p + eps) over the class axis (natural log): B x H x W."""
    return -(probs * torch.log(probs + eps)).sum(dim=1)
