"""Segmentation losses and ramp schedules shared by every method."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .geometry import rot90


def class_map(logits: torch.Tensor) -> torch.Tensor:
    """The class of every pixel of N x C x ... scores: `logits.argmax(1)`, the first maximal index
    (NaN counting as maximal), computed as `max`'s indices, which give the same result several
    times faster on the CPU (torch 2.13, 4 x 4 x 64 x 64: argmax 1.9 ms, max 0.26 ms)."""
    return logits.max(1).indices


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -1) -> torch.Tensor:
    """Mean pixel cross-entropy over the pixels whose target (class indices, any integer dtype) is
    not `ignore_index`; NaN when every pixel is ignored, as torch's mean. The mean is taken here,
    not by nll_loss: on CUDA its own reduction is an atomic sum with no deterministic version
    (engine/determinism.py)."""
    target = target.long()
    per_pixel = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="none")
    return per_pixel.sum() / (target != ignore_index).sum()


def dice_per_class(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss of each class (C,), METHODS.md §1, sums pooled over the whole batch:
    d_c = 1 - (2 sum p g + 1e-5) / (sum p^2 + sum g^2 + 1e-5), p = softmax, g = one-hot target."""
    num_classes = logits.shape[1]
    probs = logits.float().softmax(dim=1)
    onehot = F.one_hot(target.long(), num_classes).permute(0, 3, 1, 2).float()
    dims = (0, 2, 3)
    intersect = (probs * onehot).sum(dims)
    denom = (probs * probs).sum(dims) + (onehot * onehot).sum(dims)
    return 1 - (2 * intersect + 1e-5) / (denom + 1e-5)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, include_background: bool = False) -> torch.Tensor:
    """The mean of `dice_per_class` over all C classes.

    With include_background=False the background term is zeroed but the sum is still divided
    by C, exactly as the UGPCL code does (class_weight [0, 1, 1, 1]; SSL4MIS includes it).
    """
    per_class = dice_per_class(logits, target)
    if not include_background:
        per_class = per_class[1:]
    return per_class.sum() / logits.shape[1]


def ce_dice(logits: torch.Tensor, target: torch.Tensor, include_background: bool = False) -> torch.Tensor:
    """L_seg = 0.5 CE + 0.5 Dice (paper eq. 4)."""
    return 0.5 * cross_entropy(logits, target) + 0.5 * dice_loss(logits, target, include_background)


def equivariance_loss(logits: torch.Tensor, k: torch.Tensor, images: torch.Tensor | None = None,
                      classify=None) -> torch.Tensor:
    """UGPCL's l_e (eq. 12): the cross-entropy of the rotation head's `logits` for each image's turn class k.

    That one term is what the authors' code takes: a one-sample estimate of eq. 12's mean over the four
    turns. With `classify` (images -> rotation logits) the mean itself: each of `images` (those already
    turned by k) turned j = 1..3 more quarter turns, class (k + j) mod 4, classified as one batch.
    """
    own = F.cross_entropy(logits.float(), k)
    if classify is None:
        return own
    extra = torch.arange(1, 4, device=k.device).repeat_interleave(images.shape[0])  # 1..1, 2..2, 3..3
    others = classify(rot90(images.repeat(3, 1, 1, 1), extra))
    return (own + 3 * F.cross_entropy(others.float(), (k.repeat(3) + extra) % 4)) / 4


def sigmoid_rampup(current: float, length: float) -> float:
    """exp(-5 (1 - x)^2) with x = clip(current / length, 0, 1) (Laine & Aila 2017)."""
    if length == 0:
        return 1.0
    x = min(max(current, 0.0), length) / length
    return math.exp(-5.0 * (1.0 - x) ** 2)


def ramp_position(t: int, ramp_epoch: int, ramp_length: int, iterations: int | None = None) -> int:
    """The ramp "epoch" of 0-based iteration t, which `sigmoid_rampup` compares with ramp_length.

    iterations None: t // ramp_epoch, the code's literal constants (SSL4MIS 150, the authors'
    UGPCL 100). Given the run's iterations T: floor(t L / (T - 1)), the ramp epoch scaled to the
    run, so that the ramp spans the whole run as it does in each source for that source's own
    length (SSL4MIS 150 x 200 = its max_iter 30000; the authors' 100 x 100 = their max_iter
    10000; METHODS §1, §3.7), and epoch L (full weight) falls exactly on the last iteration
    T - 1 (the sources' last iteration reaches epoch L - 1: 0.99988 of the maximum for L = 200).
    """
    if iterations is None:
        return t // ramp_epoch
    if iterations <= 1:
        return ramp_length
    return t * ramp_length // (iterations - 1)


def ramp_weight(t: int, maximum: float, ramp_epoch: int, ramp_length: int, iterations: int | None = None) -> float:
    """Consistency weight at 0-based iteration t: maximum * rampup(ramp_position(t, ...), ramp_length)."""
    return maximum * sigmoid_rampup(ramp_position(t, ramp_epoch, ramp_length, iterations), ramp_length)


def softmax_mse(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Mean over every element of (softmax(a) - softmax(b))^2; gradients reach both sides."""
    return F.mse_loss(logits_a.float().softmax(1), logits_b.float().softmax(1))


def entropy_map(probs: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Pixel entropy -sum_c p log(p + eps) over the class axis (natural log): B x H x W."""
    return -(probs * torch.log(probs + eps)).sum(dim=1)
