"""Segmenting new images with a trained network (`ugpcl predict`).

Inputs, by file name:
- PNG / JPEG (cv2): one 2D image, grey or colour, scaled to [0, 1] by its integer range;
  grey is replicated to 3 channels for an RGB network, colour is converted to grey for a
  1-channel one. Output: `<stem>_mask.png` (uint8 class indices) and `<stem>_overlay.png`.
- NIfTI `.nii` / `.nii.gz`: a 2D or 3D image, min-max normalised per volume to [0, 1] and
  segmented per axial slice; the X x Y x Z array is transposed to Z x Y x X as in the data
  stage. Output: `<stem>_pred.nii[.gz]` (uint8) with the input's affine and header.
- HDF5 `.h5` / `.hdf5` with an `image` dataset, H x W or D x H x W, already in [0, 1]
  (the SSL4MIS layout). Output: `<stem>_pred.h5` with a `pred` dataset of the same shape.
Every slice is resized to the network's image_size (bilinear), predicted, and its labels
resized back to the slice's own size (nearest), so outputs have the inputs' shapes.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import cv2
import h5py
import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data.imageio import read_image as decode_image
from .data.volumeio import volume_zyx
from .errors import UserError
from .fileio import atomic_path
from .metrics import predict_slices, resize_labels

KINDS = {".png": "image", ".jpg": "image", ".jpeg": "image", ".nii": "nifti", ".nii.gz": "nifti",
         ".h5": "hdf5", ".hdf5": "hdf5"}
# Overlay colours (RGB) of classes 1, 2, ...: ACDC RV red, Myo green, LV blue; ISIC lesion red.
PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25], [145, 30, 180]],
                   dtype=np.uint8)


def split_name(path: Path) -> tuple[str, str]:
    """(stem, suffix) with double suffixes such as `.nii.gz` kept whole; suffix lower-cased."""
    name = path.name
    if name.lower().endswith(".nii.gz"):
        return name[: -len(".nii.gz")], ".nii.gz"
    return path.stem, path.suffix.lower()


def input_kind(path: Path) -> str:
    suffix = split_name(path)[1]
    if suffix not in KINDS:
        raise UserError(f"unsupported input type {suffix or '(no suffix)'!r}", path=path,
                        fix="give PNG/JPEG images, NIfTI (.nii, .nii.gz) or HDF5 (.h5) files with an `image` dataset")
    if not path.is_file():
        raise UserError("input file not found", path=path, fix="check the path")
    return KINDS[suffix]


def network_in_channels(net: nn.Module) -> int:
    """Input channels of the network: those of its first convolution."""
    conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError("the network has no Conv2d to read its input channels from")
    return conv.in_channels


def match_channels(slices: np.ndarray, in_channels: int, path: Path) -> np.ndarray:
    """N x C x H x W -> N x in_channels x H x W: replicate grey, or convert RGB to grey (ITU-R 601)."""
    c = slices.shape[1]
    if c == in_channels:
        return slices
    if c == 1:
        return np.repeat(slices, in_channels, axis=1)
    if c == 3 and in_channels == 1:
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32).reshape(1, 3, 1, 1)
        return (slices * weights).sum(1, keepdims=True)
    raise UserError(f"image has {c} channels, the network expects {in_channels}", path=path,
                    fix="give a grey or RGB image")


def segment(net: nn.Module, slices: np.ndarray, image_size: int, batch_size: int = 16, device="cpu",
            amp: bool = False) -> np.ndarray:
    """Labels (N x H x W uint8) of N x C x H x W float slices in [0, 1], via image_size and back."""
    size = slices.shape[2:]
    out = np.empty((slices.shape[0], *size), dtype=np.uint8)
    for start in range(0, len(slices), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(slices[start : start + batch_size], dtype=np.float32))
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
        pred = predict_slices(net, x.numpy(), batch_size, device, amp=amp)
        out[start : start + len(x)] = resize_labels(pred, size)
    return out


# --- readers: float32 in [0, 1] -------------------------------------------------------------
def read_image(path: Path) -> np.ndarray:
    """1 x C x H x W (C = 1 grey, 3 RGB), scaled by the integer range of the file."""
    img = decode_image(path, "unchanged")
    if img.dtype.kind not in "ui":
        raise UserError("cannot read this image", path=path, fix="give an 8- or 16-bit PNG or a JPEG file")
    scale = float(np.iinfo(img.dtype).max)
    if img.ndim == 2:
        img = img[..., None]
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return (img.astype(np.float32) / scale).transpose(2, 0, 1)[None]


def read_nifti(path: Path) -> tuple[np.ndarray, nib.spatialimages.SpatialImage]:
    """Z x 1 x Y x X slices, min-max normalised over the volume, and the loaded image."""
    try:
        img = nib.load(str(path))
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as exc:  # nibabel, gzip and zlib raise many types for corrupt files
        raise UserError(f"cannot read this NIfTI file ({exc})", path=path, fix="give a valid .nii or .nii.gz image") from exc
    volume = volume_zyx(data, path)
    lo, hi = float(volume.min()), float(volume.max())
    volume = (volume - lo) / (hi - lo) if hi > lo else np.zeros_like(volume)
    return volume[:, None], img


def read_hdf5(path: Path) -> np.ndarray:
    """The `image` dataset as float32, H x W or D x H x W (not reshaped to slices)."""
    try:
        with h5py.File(path, "r") as f:
            if "image" not in f:
                raise UserError("no `image` dataset in this HDF5 file", path=path,
                                fix="store the image as `image` (H x W or D x H x W, in [0, 1])")
            image = np.asarray(f["image"][()], dtype=np.float32)
    except OSError as exc:
        raise UserError(f"cannot read this HDF5 file ({exc})", path=path, fix="give a valid HDF5 file") from exc
    if image.ndim not in (2, 3) or image.size == 0:
        raise UserError(f"`image` has shape {image.shape}, expected H x W or D x H x W", path=path)
    if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
        raise UserError(f"`image` values span [{image.min()}, {image.max()}], expected [0, 1]", path=path,
                        fix="min-max normalise the volume to [0, 1] (as SSL4MIS does) before predicting")
    return image


# --- writers ------------------------------------------------------------------------------
def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 overlay of a C x H x W [0, 1] image and its class-index mask."""
    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image[:3]
    rgb = rgb.transpose(1, 2, 0) * 255.0
    colours = PALETTE[mask % len(PALETTE)].astype(np.float32)
    blended = np.where(mask[..., None] > 0, (1 - alpha) * rgb + alpha * colours, rgb)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def write_png(tmp: Path, array: np.ndarray, target: Path) -> None:
    """Write `array` to the temporary file `tmp` of the output `target` (named in the error)."""
    if not cv2.imwrite(str(tmp), array):
        raise UserError("cannot write PNG", path=target, fix="check that the output folder is writable")


def output_paths(path: Path, out_dir: Path) -> list[Path]:
    """The files that predicting `path` writes into out_dir."""
    stem, suffix = split_name(path)
    kind = input_kind(path)
    if kind == "image":
        return [out_dir / f"{stem}_mask.png", out_dir / f"{stem}_overlay.png"]
    return [out_dir / f"{stem}_pred{suffix if kind == 'nifti' else '.h5'}"]


def predict_file(net: nn.Module, path: Path, out_dir: Path, image_size: int, batch_size: int = 16, device="cpu",
                 amp: bool = False) -> list[Path]:
    """Segment one input file and write its outputs into out_dir; returns their paths.

    The outputs are computed first and written together, each under a temporary name that is
    renamed only when all of them are complete: an input's outputs are all there or none is."""
    kind = input_kind(path)
    outputs = output_paths(path, out_dir)
    in_channels = network_in_channels(net)

    def run(slices: np.ndarray) -> np.ndarray:
        return segment(net, match_channels(slices, in_channels, path), image_size, batch_size, device, amp)

    with contextlib.ExitStack() as stack:
        staged = [stack.enter_context(atomic_path(out, suffix=split_name(out)[1])) for out in outputs]
        if kind == "image":
            image = read_image(path)
            mask = run(image)[0]
            write_png(staged[0], mask, outputs[0])
            write_png(staged[1], cv2.cvtColor(overlay(image[0], mask), cv2.COLOR_RGB2BGR), outputs[1])
        elif kind == "nifti":
            slices, img = read_nifti(path)
            pred = run(slices).transpose(2, 1, 0).reshape(img.shape)
            header = img.header.copy()
            header.set_data_dtype(np.uint8)
            nib.save(type(img)(pred, img.affine, header), str(staged[0]))
        else:
            image = read_hdf5(path)
            pred = run(image.reshape(-1, 1, *image.shape[-2:])).reshape(image.shape)
            with h5py.File(staged[0], "w") as f:
                f.create_dataset("pred", data=pred, compression="gzip")
    return outputs


def predict_files(net: nn.Module, inputs, out_dir: str | Path, image_size: int, batch_size: int = 16, device="cpu",
                  amp: bool = False) -> list[Path]:
    """Segment every input (checked first: types, existence, distinct output names).

    An input that fails (unreadable, wrong channels, ...) does not stop the others; each input's
    outputs are complete or absent (`predict_file`), and no existing file is deleted. If any
    input failed, a UserError lists them after all the others are done."""
    inputs, out_dir = [Path(p) for p in inputs], Path(out_dir)
    writers: dict[Path, Path] = {}
    for path in inputs:
        for out in output_paths(path, out_dir):
            if out in writers:
                raise UserError(f"inputs {writers[out]} and {path} would both write {out.name}", path=path,
                                fix="rename one of them or predict them into different --out folders")
            writers[out] = path
    written, failed = [], []
    for path in inputs:
        try:
            written += predict_file(net, path, out_dir, image_size, batch_size, device, amp)
        except UserError as exc:
            failed.append(str(exc))
    if failed:
        done = len(inputs) - len(failed)
        raise PredictionFailed(
            f"{len(failed)} of {len(inputs)} inputs failed ({done} predicted into {out_dir}, each input's outputs "
            "complete; nothing written for the failed ones):\n  " + "\n  ".join(failed),
            fix="correct or remove the failed inputs and predict them again", written=written)
    return written


class PredictionFailed(UserError):
    """Some inputs failed; `written` lists the outputs of those that did not."""

    def __init__(self, message: str, *, fix: str, written: list[Path]):
        super().__init__(message, fix=fix)
        self.written = written
