"""Segmenting new images with a trained network (`ugpcl predict`), in the formats clinical viewers open.

Inputs, by file name (a folder stands for the supported files directly in it, in name order):
- PNG / JPEG / TIFF / BMP: one 2D image, grey or colour, scaled to [0, 1] by its integer range;
  grey is replicated to 3 channels for an RGB network, colour is converted to grey for a
  1-channel one (a warning line on stderr, once per kind of input, says so: a network trained on
  the other kind of image may segment them poorly). Outputs: `<stem>_mask.png` and `<stem>_overlay.png`.
- NIfTI `.nii` / `.nii.gz`: a 2D or 3D image, min-max normalised per volume to [0, 1] and
  segmented per axial slice; the X x Y x Z array is transposed to Z x Y x X as in the data
  stage. Outputs: `<stem>_pred.nii[.gz]` (uint8 class indices, the input's affine and header)
  and `<stem>_overlay.png`.
- HDF5 `.h5` / `.hdf5` with an `image` dataset, H x W or D x H x W, already in [0, 1] (the
  SSL4MIS layout). Outputs: `<stem>_pred.h5` (a `pred` dataset of the image's shape),
  `<stem>_pred.nii.gz` (a `spacing` attribute of the file or of `image`, in the array's axis
  order, becomes the voxel size; 1 x 1 x 1 otherwise) and `<stem>_overlay.png`.
Masks: a two-class network writes 0/255 PNGs (ISIC's format: the lesion is white in any
viewer); with more classes the PNG holds the class indices 0..C-1 (dark: the overlay shows
them) and NIfTI/HDF5 outputs always hold class indices. Overlays: the image with every class in
a colour of its own (PALETTE); a volume's overlay shows all its slices in a grid.
Every slice is resized to the network's image_size the way its dataset was prepared
(`data.resize`: the checkpoint's `data.<dataset>` settings), predicted, and its labels resized
back to the slice's own size (nearest), so outputs have the inputs' shapes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path

import cv2
import h5py
import nibabel as nib
import numpy as np
import torch
from torch import nn

from .data.imageio import read_image as decode_image
from .data.resize import Resizing, resize_slices
from .data.volumeio import h5_spacing, nifti_zyx, volume_zyx
from .errors import UserError, warn_once
from .fileio import atomic_path, write_json
from .metrics import predict_slices, resize_labels

KINDS = {".png": "image", ".jpg": "image", ".jpeg": "image", ".tif": "image", ".tiff": "image", ".bmp": "image",
         ".nii": "nifti", ".nii.gz": "nifti", ".h5": "hdf5", ".hdf5": "hdf5"}
MANIFEST = ".ugpcl-predict.json"  # in an output folder: the files predict wrote there, which it may replace
BINARY_FOREGROUND = 255  # a two-class mask PNG: 0 background, 255 foreground (ISIC's ground truth)
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
                        fix="give PNG/JPEG/TIFF/BMP images, NIfTI (.nii, .nii.gz) or HDF5 (.h5) files with an "
                            "`image` dataset, or a folder of them")
    if not path.is_file():
        raise UserError("input file not found", path=path, fix="check the path")
    return KINDS[suffix]


def expand_inputs(paths) -> list[Path]:
    """The input files: each file as given, each folder's supported files (not hidden, not in
    subfolders) in name order; a folder without any is an error naming it."""
    files = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(path)
            continue
        found = sorted(p for p in path.iterdir()
                       if p.is_file() and not p.name.startswith(".") and split_name(p)[1] in KINDS)
        if not found:
            raise UserError("no image, NIfTI or HDF5 file in this folder", path=path,
                            fix=f"give a folder holding files ending in {', '.join(sorted(KINDS))}")
        files += found
    return files


def network_in_channels(net: nn.Module) -> int:
    """Input channels of the network: those of its first convolution."""
    conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError("the network has no Conv2d to read its input channels from")
    return conv.in_channels


KIND_NAMES = {"image": "images", "nifti": "NIfTI volumes", "hdf5": "HDF5 volumes"}


def match_channels(slices: np.ndarray, in_channels: int, path: Path) -> tuple[np.ndarray, str | None]:
    """N x C x H x W -> N x in_channels x H x W: replicate grey, or convert RGB to grey (ITU-R 601).
    Returns the slices and, where they were converted, what was done (for a warning)."""
    c = slices.shape[1]
    if c == in_channels:
        return slices, None
    kind = KIND_NAMES[input_kind(path)]
    if c == 1:
        what = f"grey {kind} replicated to {in_channels} channels for a {in_channels}-channel network"
        return np.repeat(slices, in_channels, axis=1), what
    if c == 3 and in_channels == 1:
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32).reshape(1, 3, 1, 1)
        return (slices * weights).sum(1, keepdims=True), f"RGB {kind} converted to grey for a 1-channel network"
    raise UserError(f"image has {c} channels, the network expects {in_channels}", path=path,
                    fix="give a grey or RGB image")


def segment(net: nn.Module, slices: np.ndarray, image_size: int, batch_size: int = 16, device="cpu",
            interpolation: str = "bilinear") -> np.ndarray:
    """Labels (N x H x W uint8) of N x C x H x W float slices in [0, 1], via image_size (resized
    with `interpolation`, data.resize.FLAGS) and back (nearest)."""
    size = slices.shape[2:]
    out = np.empty((slices.shape[0], *size), dtype=np.uint8)
    for start in range(0, len(slices), batch_size):
        batch = np.ascontiguousarray(slices[start : start + batch_size].transpose(0, 2, 3, 1), dtype=np.float32)
        x = resize_slices(batch, image_size, interpolation).transpose(0, 3, 1, 2)
        pred = predict_slices(net, np.ascontiguousarray(x), batch_size, device)
        out[start : start + len(x)] = resize_labels(pred, size)
    return out


def output_classes(net: nn.Module, in_channels: int, image_size: int, device="cpu") -> int:
    """How many classes the network predicts (the channels of its output)."""
    with torch.no_grad():
        was_training = net.training
        net.eval()
        try:
            return int(net(torch.zeros(1, in_channels, image_size, image_size, device=device)).shape[1])
        finally:
            net.train(was_training)


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


def montage(tiles: list[np.ndarray], gap: int = 2) -> np.ndarray:
    """Equal-sized H x W x 3 tiles in a near-square grid, row by row, separated by `gap` black pixels."""
    columns = int(np.ceil(np.sqrt(len(tiles))))
    rows = -(-len(tiles) // columns)
    h, w = tiles[0].shape[:2]
    grid = np.zeros((rows * (h + gap) - gap, columns * (w + gap) - gap, 3), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        grid[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tile
    return grid


def mask_png(mask: np.ndarray, classes: int) -> np.ndarray:
    """What a mask PNG holds: 0/255 for two classes, the class indices otherwise."""
    return (mask * BINARY_FOREGROUND).astype(np.uint8) if classes == 2 else mask


def write_png(tmp: Path, array: np.ndarray, target: Path) -> None:
    """Write `array` to the temporary file `tmp` of the output `target` (named in the error)."""
    if not cv2.imwrite(str(tmp), array):
        raise UserError("cannot write PNG", path=target, fix="check that the output folder is writable")


def write_overlay(tmp: Path, slices: np.ndarray, labels: np.ndarray, target: Path) -> None:
    """The overlay PNG of N x C x H x W slices and their N x H x W labels (one tile per slice)."""
    tiles = [overlay(image, mask) for image, mask in zip(slices, labels)]
    write_png(tmp, cv2.cvtColor(tiles[0] if len(tiles) == 1 else montage(tiles), cv2.COLOR_RGB2BGR), target)


def nifti_of(pred_zyx: np.ndarray, spacing_zyx: tuple[float, ...] | None) -> nib.Nifti1Image:
    """A uint8 NIfTI image of Z x Y x X (or Y x X) labels, stored X x Y x Z as the Creatis files,
    with the voxel size (z, y, x) on the affine's diagonal (1 where unknown)."""
    volume = pred_zyx if pred_zyx.ndim == 3 else pred_zyx[None]
    spacing = (1.0, 1.0, 1.0) if spacing_zyx is None else ((1.0, *spacing_zyx) if len(spacing_zyx) == 2 else spacing_zyx)
    image = nifti_zyx(volume, spacing, np.uint8)
    image.header.set_xyzt_units("mm" if spacing_zyx is not None else "unknown")
    return image


def output_paths(path: Path, out_dir: Path) -> list[Path]:
    """The files that predicting `path` writes into out_dir (the prediction first, the overlay last)."""
    stem, suffix = split_name(path)
    kind = input_kind(path)
    if kind == "image":
        return [out_dir / f"{stem}_mask.png", out_dir / f"{stem}_overlay.png"]
    if kind == "nifti":
        return [out_dir / f"{stem}_pred{suffix}", out_dir / f"{stem}_overlay.png"]
    return [out_dir / f"{stem}_pred.h5", out_dir / f"{stem}_pred.nii.gz", out_dir / f"{stem}_overlay.png"]


def predict_file(net: nn.Module, path: Path, out_dir: Path, image_size: int, batch_size: int = 16, device="cpu",
                 resizing: Resizing = Resizing(), classes: int | None = None,
                 warn: Callable[[str], None] | None = None) -> list[Path]:
    """Segment one input file and write its outputs into out_dir; returns their paths.

    The outputs are computed first and written together, each under a temporary name that is
    renamed only when all of them are complete: an input's outputs are all there or none is.
    `warn` receives what was converted to fit the network's channels (default: printed)."""
    warn = warn or warn_once()
    kind = input_kind(path)
    outputs = output_paths(path, out_dir)
    in_channels = network_in_channels(net)
    classes = classes or output_classes(net, in_channels, image_size, device)

    def run(slices: np.ndarray, interpolation: str) -> tuple[np.ndarray, np.ndarray]:
        slices, converted = match_channels(slices, in_channels, path)
        if converted:
            warn(converted)
        return slices, segment(net, slices, image_size, batch_size, device, interpolation)

    with contextlib.ExitStack() as stack:
        staged = [stack.enter_context(atomic_path(out, suffix=split_name(out)[1])) for out in outputs]
        if kind == "image":
            shown, labels = run(read_image(path), resizing.image_files)
            write_png(staged[0], mask_png(labels[0], classes), outputs[0])
        elif kind == "nifti":
            slices, img = read_nifti(path)
            shown, labels = run(slices, resizing.volumes)
            header = img.header.copy()
            header.set_data_dtype(np.uint8)
            nib.save(type(img)(labels.transpose(2, 1, 0).reshape(img.shape), img.affine, header), str(staged[0]))
        else:
            image = read_hdf5(path)
            shown, labels = run(image.reshape(-1, 1, *image.shape[-2:]), resizing.volumes)
            pred = labels.reshape(image.shape)
            with h5py.File(staged[0], "w") as f:
                f.create_dataset("pred", data=pred, compression="gzip")
            nib.save(nifti_of(pred, h5_spacing(path)), str(staged[1]))
        write_overlay(staged[-1], shown, labels, outputs[-1])
    return outputs


def predict_files(net: nn.Module, inputs, out_dir: str | Path, image_size: int, batch_size: int = 16, device="cpu",
                  resizing: Resizing = Resizing()) -> list[Path]:
    """Segment every input (files or folders; checked first: types, existence, distinct output names).

    An input that fails (unreadable, wrong channels, ...) does not stop the others; each input's
    outputs are complete or absent (`predict_file`), and no file it did not write is replaced (an
    output name taken by another file, such as a mask `<stem>_mask.png` beside its image, is refused
    before any work; the files it wrote are listed in out_dir/MANIFEST, so a rerun replaces them).
    If any input failed, a UserError lists them after all the others are done."""
    inputs, out_dir = expand_inputs(inputs), Path(out_dir)
    writers: dict[Path, Path] = {}
    for path in inputs:
        for out in output_paths(path, out_dir):
            if out in writers:
                raise UserError(f"inputs {writers[out]} and {path} would both write {out.name}", path=path,
                                fix="rename one of them or predict them into different --out folders")
            writers[out] = path
    ours = predicted_before(out_dir)
    foreign = [out for out in writers if out.exists() and out.name not in ours]
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise UserError(
            f"predicting {writers[foreign[0]]} would replace {foreign[0].name}{more}, which `ugpcl predict` did not "
            "write (a ground-truth mask named like its outputs?)", path=foreign[0],
            fix="predict into another --out folder (outputs: <stem>_mask.png, <stem>_pred.*, <stem>_overlay.png), "
                "or move those files away")
    classes = output_classes(net, network_in_channels(net), image_size, device)
    written, failed, warn = [], [], warn_once()  # one warning per kind of conversion, not per file
    for path in inputs:
        try:
            outputs = predict_file(net, path, out_dir, image_size, batch_size, device, resizing, classes, warn)
            written += outputs
            ours |= {out.name for out in outputs}
            write_json(out_dir / MANIFEST, {"written by ugpcl predict": sorted(ours)})
        except UserError as exc:
            failed.append(f"{exc.problem} (fix: {exc.fix})" if exc.fix else exc.problem)  # one "Fix:": the list's
    if failed:
        done = len(inputs) - len(failed)
        raise PredictionFailed(
            f"{len(failed)} of {len(inputs)} inputs failed ({done} predicted into {out_dir}, each input's outputs "
            "complete; nothing written for the failed ones):\n  " + "\n  ".join(failed),
            fix="correct or remove the failed inputs and predict them again", written=written)
    return written


def predicted_before(out_dir: Path) -> set[str]:
    """The names of the files earlier `ugpcl predict` commands wrote into out_dir (MANIFEST); an
    unreadable manifest counts as none, so nothing is replaced on its word."""
    try:
        return set(json.loads((out_dir / MANIFEST).read_text())["written by ugpcl predict"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()


class PredictionFailed(UserError):
    """Some inputs failed; `written` lists the outputs of those that did not."""

    def __init__(self, message: str, *, fix: str, written: list[Path]):
        super().__init__(message, fix=fix)
        self.written = written
