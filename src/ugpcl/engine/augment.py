"""Batch augmentation on the device: one affine warp per sample, then colour jitter.

The paper's augmentations (random crop, rotation, flip, colour jitter) are folded into a single
affine transform per sample, applied with one `grid_sample` to the images (`augment.interpolation`:
nearest, as SSL4MIS's order-0 rotation, or bilinear) and one to the labels (nearest), so
augmentation costs two kernel launches whatever the batch size.
Randomness comes from torch's global RNG, which the trainer checkpoints.
"""

from __future__ import annotations

import functools
import math

import torch

from ..geometry import rotation_theta, warp


def _uniform(n: int, low: float, high: float, device) -> torch.Tensor:
    return torch.rand(n, device=device) * (high - low) + low


def _bernoulli(n: int, p: float, device) -> torch.Tensor:
    return torch.rand(n, device=device) < p


def geometric_theta(batch: int, aug: dict, device) -> torch.Tensor:
    """Random crop (area fraction in crop_scale), rot90+flip or else a small rotation, and horizontal flip.

    As SSL4MIS's and the authors' `RandomGenerator`: with probability rot90_flip_p a quarter turn
    k ~ U{0..3} (its flip along a random axis is the horizontal flip below: together uniform over the
    square's 8 symmetries, as theirs with their RandomFlip); otherwise, with probability rotate_p, a
    turn of U(-rotate_deg, rotate_deg) degrees (theirs: whole degrees). 0.5 / 0.5 gives their 50/25/25.
    """
    side = torch.sqrt(_uniform(batch, *aug["crop_scale"], device))
    cx = (torch.rand(batch, device=device) * 2 - 1) * (1 - side)
    cy = (torch.rand(batch, device=device) * 2 - 1) * (1 - side)

    rotate = _bernoulli(batch, aug["rotate_p"], device)
    angle = _uniform(batch, -aug["rotate_deg"], aug["rotate_deg"], device)
    turned = _bernoulli(batch, aug["rot90_flip_p"], device)
    quarter = torch.where(turned, torch.randint(0, 4, (batch,), device=device), 0)
    angle = torch.where(rotate & ~turned, angle, 0.0)  # their `elif`
    flip = _bernoulli(batch, aug["hflip_p"], device)

    theta = rotation_theta(angle, quarter)
    theta[:, :, :2] *= side[:, None, None]
    theta[:, 0, :2] *= torch.where(flip, -1.0, 1.0)[:, None]
    theta[:, 0, 2] = cx
    theta[:, 1, 2] = cy
    return theta


# RGB -> grey (ITU-R 601 luma) and RGB -> YIQ, whose chroma plane the hue shift turns
GREY = ((0.299, 0.587, 0.114),)
TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


@functools.lru_cache(maxsize=None)
def _constants(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grey weights 1x3x1x1, TO_YIQ, its inverse) on `device`: computed on the CPU and copied once
    per device and dtype, not at every step (a copy from the host, or `linalg.inv` on a GPU, makes
    the host wait for the device)."""
    to_yiq = torch.tensor(TO_YIQ, dtype=torch.float64)
    grey = torch.tensor(GREY, dtype=torch.float64).view(1, 3, 1, 1)
    return tuple(m.to(device=device, dtype=dtype) for m in (grey, to_yiq, torch.linalg.inv(to_yiq)))


def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    return (x * _constants(x.device, x.dtype)[0]).sum(1, keepdim=True)


def color_jitter(x: torch.Tensor, aug: dict) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter with probability color_jitter_p per sample.

    Factors are U[1-s, 1+s] (hue shift U[-h, h] of a turn), as torchvision's ColorJitter, applied
    in a fixed order. Saturation and hue act on RGB only (they are no-ops on grey images anyway).
    """
    n, device = x.shape[0], x.device
    on = _bernoulli(n, aug["color_jitter_p"], device).view(n, 1, 1, 1)

    def factor(strength):
        return _uniform(n, 1 - strength, 1 + strength, device).clamp_min(0).view(n, 1, 1, 1)

    out = (x * factor(aug["brightness"])).clamp(0, 1)
    mean = _grey(out).mean(dim=(1, 2, 3), keepdim=True)
    out = ((out - mean) * factor(aug["contrast"]) + mean).clamp(0, 1)
    if x.shape[1] == 3:
        grey = _grey(out)
        out = ((out - grey) * factor(aug["saturation"]) + grey).clamp(0, 1)
        out = _hue_shift(out, _uniform(n, -aug["hue"], aug["hue"], device)).clamp(0, 1)
    return torch.where(on, out, x)


def _hue_shift(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate the chroma plane of YIQ space by `turns` of a full circle (a fast hue shift)."""
    _, to_yiq, from_yiq = _constants(x.device, x.dtype)
    angle = 2 * math.pi * turns
    cos, sin = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    rot = torch.stack(
        [torch.stack([one, zero, zero], -1), torch.stack([zero, cos, -sin], -1), torch.stack([zero, sin, cos], -1)], 1
    )
    m = from_yiq @ rot @ to_yiq  # B x 3 x 3
    return torch.einsum("bij,bjhw->bihw", m, x)


def augment_batch(images: torch.Tensor, labels: torch.Tensor, aug: dict):
    """Augment a batch whose first labels.shape[0] images are labeled; returns (images, labels)."""
    theta = geometric_theta(images.shape[0], aug, images.device)
    images, labels = warp(images, labels, theta, aug["interpolation"])
    return color_jitter(images, aug), labels
