"""Geometric transforms of image and label batches on the device, shared by the engine's
augmentation and UGPCL's rotation task: exact quarter turns and one-kernel affine warps."""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F


INTERPOLATIONS = ("nearest", "bilinear")


def warp(images: torch.Tensor, labels: torch.Tensor | None, theta: torch.Tensor, mode: str = "bilinear"):
    """Apply per-sample affine maps (B x 2 x 3, output -> input coordinates); fill with 0.

    Images are resampled with `mode` ("nearest", as both reference codes do: scipy order 0 and
    torchvision's default, or "bilinear"); labels, which may cover only the first samples,
    always with nearest.
    """
    if mode not in INTERPOLATIONS:
        raise ValueError(f"interpolation {mode!r} is not one of {INTERPOLATIONS}")
    # All in float32 whatever autocast is on: under bf16 autocast (UGPCL's turns run inside the training
    # step's) affine_grid's matmul would round the sampling positions to bf16, up to 0.9 px off at 224.
    with _without_autocast(images.device.type):
        grid = F.affine_grid(theta.float(), list(images.shape), align_corners=False)
        images = F.grid_sample(images.float(), grid, mode=mode, padding_mode="zeros",
                               align_corners=False).to(images.dtype)
        if labels is not None:
            lab = F.grid_sample(labels[:, None].float(), grid[: labels.shape[0]], mode="nearest", align_corners=False)
            labels = lab[:, 0].round().to(labels.dtype)
    return images, labels


def _without_autocast(device_type: str):
    """Autocast off on `device_type` (a device with no autocast, e.g. meta, needs nothing)."""
    return torch.autocast(device_type, enabled=False) if torch.amp.is_autocast_available(device_type) else nullcontext()


def rotation_theta(angles_deg: torch.Tensor, quarter_turns: torch.Tensor | None = None) -> torch.Tensor:
    """Affine maps rotating each sample by quarter_turns * 90 + angle degrees, in torch.rot90's sense."""
    total = angles_deg.float()
    if quarter_turns is not None:
        total = total + 90.0 * quarter_turns.float()
    rad = torch.deg2rad(total)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    return torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)


def rot90(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate each sample of x (B x ... x H x W, H == W) by its own k quarter turns, exactly.

    All four turns of the batch are stacked and each sample picks its own by integer indexing:
    no data-dependent branch, so no host-device synchronisation.
    """
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"per-sample quarter turns need square images, got {tuple(x.shape[-2:])}")
    turns = torch.stack([torch.rot90(x, q, dims=(-2, -1)) for q in range(4)])  # 4 x B x ...
    return turns[k.long(), torch.arange(x.shape[0], device=x.device)]


def random_turns(images: torch.Tensor, labels: torch.Tensor, max_deg: float, mode: str = "nearest"):
    """UGPCL's rotation task (authors' train_step, METHODS §3.3 step 1): every image turned by its
    own k ~ U{0..3} quarter turns (exact), then by an angle ~ U(-max_deg, max_deg) with `mode`;
    labels (those of the first len(labels) images) turned with them, nearest. Returns
    (images, labels, k), k being the rotation classes."""
    n, device = images.shape[0], images.device
    k = torch.randint(0, 4, (n,), device=device)
    angle = (torch.rand(n, device=device) * 2 - 1) * max_deg
    images, labels = rot90(images, k), rot90(labels, k[: labels.shape[0]])
    images, labels = warp(images, labels, rotation_theta(angle), mode)
    return images, labels, k
