"""Resizing images to image_size: one rule for preparing a dataset and for predicting new images.

A network learns the look of its training images, interpolation artefacts included, so new
images are resized the way its dataset was (METHODS §1, §3.2):
- the acdc kind: `data.<name>.interpolation`, `nearest` by default (both codes zoom images with
  order 0), or `bilinear`;
- every other kind (isic, folder): 2D image files with area interpolation (photographs shrink
  several-fold), slices of NIfTI/HDF5 volumes bilinearly (SSL4MIS's order-1 zoom).
Masks and predicted labels are always resized by nearest neighbour.

One pixel grid for every direction: pixel centres aligned (OpenCV's INTER_NEAREST_EXACT here,
torch's `nearest-exact` when evaluation and `ugpcl predict` resize predictions back,
`metrics.resize_labels`), as INTER_LINEAR and INTER_AREA align them (they differ only where a centre
falls exactly on a pixel edge, e.g. rows 3, 10, 17, 24, 80, ... of 224 from 256: OpenCV takes the
lower pixel, torch the upper). OpenCV's INTER_NEAREST takes
the pixel at the corner instead (floor(dst x scale)): down with it and back centred, ACDC's own
labels scored Dice 0.953 against themselves at 224 px (0.891 at 96); on one grid, 0.993 (0.934), as
SSL4MIS's scipy zoom (order 0) both ways, which aligns the corner pixels' centres instead. Both
codes' nearest zoom is therefore kept as nearest, on the grid every other resize here uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..config import dataset_config, dataset_kind

FLAGS = {"nearest": cv2.INTER_NEAREST_EXACT, "bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}


@dataclass(frozen=True)
class Resizing:
    """The interpolation of 2D image files and of volume slices."""

    image_files: str = "area"
    volumes: str = "bilinear"


def resizing(cfg: dict, dataset: str | None) -> Resizing:
    """How `dataset` of `cfg` resizes its images (the default rule when it is not configured)."""
    if dataset is None or dataset not in cfg.get("data", {}):
        return Resizing()
    if dataset_kind(cfg, dataset) == "acdc":
        mode = dataset_config(cfg, dataset).get("interpolation", "nearest")
        return Resizing(mode, mode)
    return Resizing()


def resize_slices(stack: np.ndarray, size: int, interpolation: str) -> np.ndarray:
    """N x H x W (or N x H x W x C) -> N x size x size (x C) with `interpolation` (FLAGS)."""
    flag = FLAGS[interpolation]
    out = np.stack([cv2.resize(s, (size, size), interpolation=flag) for s in stack])
    return out.reshape(len(stack), size, size, *stack.shape[3:])  # cv2 drops a single channel axis
