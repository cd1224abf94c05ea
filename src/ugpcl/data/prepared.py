"""The prepared-data HDF5 file: one per dataset, the only data input of training and evaluation.

Layout (format_version 3):

    attrs: format_version, dataset (its name under data:), num_classes, class_names (JSON list),
           in_channels, image_size, source, provenance (JSON: where the raw data came from)
    train/images   N x C x S x S   uint8 intensities 0..255, stored encoded (below)
    train/labels   N x S x S       uint8, values < num_classes
    train/names    N               slice or image ids (utf-8)
    train/groups   N               the group of each slice: patient (ACDC), image (ISIC), volume...
    labeled/<regime>  n            int64 indices into train/, ascending; the rest is unlabeled
    val/images     M x C x S x S   as train/images
    val/labels     M x S x S       uint8
    val/names      M               slice or image ids
    val/cases      M               the case (volume or image) each slice belongs to; a case's
                                   slices are contiguous and in slice order
    val/original/<case>  D x H x W or H x W uint8: the case's labels at original resolution
                                   (ACDC, NIfTI/HDF5 folder data; evaluation resizes predictions back)
    val/spacing/<case>   (optional) the voxel size of val/original/<case> in mm, one float per
                                   axis (ACDC from NIfTI); absent: distances are in voxels

Images and labels are chunked one slice per chunk and gzip-compressed. Intensities are 8 bits:
ISIC's JPEGs are 8-bit already (lossless); ACDC's slices, min-max scaled per volume to [0, 1]
and resized, are rounded to k/255 (max error 1/510; README "The prepared files" has the measured
effect on a trained network). The image datasets hold the residual of the planar predictor
left + up - upper-left (lossless JPEG's predictor 4), i.e. the image differenced along both
pixel axes modulo 256, with attribute `encoding = "diff2d-mod256"`; two cumulative sums modulo
256 undo it exactly (`decode_images`). Smooth images leave small residuals that gzip packs
about 18% tighter than the plain bytes: ACDC at 224 px is 51 MB instead of 62 MB, and 478 MB
as format 1 (float32, uncompressed). load_prepared returns the decoded uint8 images; every
consumer maps them to float as x / 255 (the trainer on the device).

Format 3 resizes by nearest neighbour on the pixel-centre grid (data/resize.py); format 2 took
the corner pixel, format 1 stored float32. Older files are refused with the fix (prepare again);
Snakemake's prepare rule carries
FORMAT_VERSION in its params and DVC's data stage depends on this file, so both rebuild them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..errors import UserError
from ..fileio import staged_bytes

FORMAT_VERSION = 3
CHANGES = {  # what a file of each older format lacks
    1: "8-bit images, compressed; nearest resizing on the pixel-centre grid",
    2: "nearest resizing on the pixel-centre grid, which evaluation's resizing back assumes",
}
IMAGE_ENCODING = "diff2d-mod256"
FLOAT_SLACK = 1e-5  # float images may overshoot [0, 1] by interpolation round-off, no more


@dataclass
class Split:
    images: np.ndarray
    labels: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class Prepared:
    path: Path
    dataset: str
    num_classes: int
    class_names: list[str]
    in_channels: int
    image_size: int
    train: Split
    train_groups: list[str]
    labeled: dict[str, np.ndarray]
    val: Split
    val_cases: list[str]
    val_original: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    val_spacing: dict[str, tuple[float, ...]] = field(default_factory=dict)  # case -> mm per axis

    def labeled_indices(self, regime: str) -> np.ndarray:
        if regime not in self.labeled:
            raise UserError(
                f"labeled regime {regime!r} not in this file (has {', '.join(sorted(self.labeled))})",
                path=self.path,
                fix=f"configure it under data.{self.dataset}.regimes in params.yaml (regime -> number labeled), "
                    f"then prepare the file again (`ugpcl prepare {self.dataset}`, with the --profile you train "
                    "with); or use one of the regimes it has",
            )
        return self.labeled[regime]

    def unlabeled_indices(self, regime: str) -> np.ndarray:
        mask = np.ones(len(self.train), dtype=bool)
        mask[self.labeled_indices(regime)] = False
        return np.flatnonzero(mask)

    def check_dataset(self, dataset: str, *, role: str, fix: str) -> None:
        """UserError unless this file holds `dataset` (its name under data:, the `dataset` attribute
        the data stage wrote): `role` says what wants it ("the run was trained on"), `fix` what to do."""
        if self.dataset != dataset:
            raise UserError(f"{role} the dataset {dataset!r}, but this file holds the prepared {self.dataset!r} "
                            f"dataset ({self.num_classes} classes, {self.in_channels} channel(s))",
                            path=self.path, fix=fix)

    def case_slices(self) -> dict[str, np.ndarray]:
        """case -> indices of its validation slices, in order."""
        out: dict[str, list[int]] = {}
        for i, case in enumerate(self.val_cases):
            out.setdefault(case, []).append(i)
        return {k: np.asarray(v) for k, v in out.items()}


def quantize(images: np.ndarray) -> np.ndarray:
    """Images as uint8: uint8 unchanged, float in [0, 1] rounded to the nearest k/255."""
    if images.dtype == np.uint8:
        return images
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"images must be uint8 or float in [0, 1], got {images.dtype}")
    lo, hi = (float(images.min()), float(images.max())) if images.size else (0.0, 0.0)
    if not (lo >= -FLOAT_SLACK and hi <= 1 + FLOAT_SLACK):  # also false for NaN
        raise ValueError(f"float images must lie in [0, 1], got [{lo}, {hi}]")
    return np.rint(np.clip(images, 0, 1) * 255).astype(np.uint8)


def encode_images(images: np.ndarray) -> np.ndarray:
    """uint8 ... x H x W -> the residual of predictor left + up - upper-left, modulo 256."""
    rows = images.copy()
    rows[..., :, 1:] -= images[..., :, :-1]  # uint8 arithmetic wraps: modulo 256
    out = rows.copy()
    out[..., 1:, :] -= rows[..., :-1, :]
    return out


def decode_images(residual: np.ndarray) -> np.ndarray:
    """The inverse of encode_images: cumulative sums along both pixel axes, modulo 256."""
    return np.cumsum(np.cumsum(residual, axis=-2, dtype=np.uint8), axis=-1, dtype=np.uint8)


def _write_slices(f: h5py.File, name: str, data: np.ndarray):
    """One chunk per slice (or image), gzip-compressed."""
    if not len(data):
        return f.create_dataset(name, data=data)
    return f.create_dataset(name, data=data, chunks=(1, *data.shape[1:]), compression="gzip", compression_opts=4)


def _write_images(f: h5py.File, name: str, images: np.ndarray) -> None:
    _write_slices(f, name, encode_images(quantize(images))).attrs["encoding"] = IMAGE_ENCODING


def _read_images(ds) -> np.ndarray:
    encoding = ds.attrs.get("encoding")
    if encoding != IMAGE_ENCODING:
        raise KeyError(f"{ds.name}: image encoding {encoding!r}, expected {IMAGE_ENCODING!r}")
    return decode_images(ds[()])


def _check_version(f: h5py.File, path: Path) -> None:
    version = int(f.attrs.get("format_version", -1))
    if version == FORMAT_VERSION:
        return
    dataset = str(f.attrs.get("dataset", "<dataset>"))
    if version == -1 or version > FORMAT_VERSION:
        problem = f"format_version {version}: not written by this version of ugpcl (it reads {FORMAT_VERSION})"
    else:
        problem = (f"prepared by an older ugpcl (format_version {version}; this one reads {FORMAT_VERSION}: "
                   f"{CHANGES.get(version, 'a different layout')})")
    raise UserError(problem, path=path,
                    fix=f"prepare it again: `ugpcl prepare {dataset}` (snakemake and `dvc repro` rebuild it too)")


def _strings(ds) -> list[str]:
    return [s.decode() if isinstance(s, bytes) else str(s) for s in ds[()]]


def write_prepared(
    path: str | Path,
    *,
    dataset: str,
    class_names: list[str],
    train_images: np.ndarray,
    train_labels: np.ndarray,
    train_names: list[str],
    train_groups: list[str],
    labeled: dict[str, np.ndarray],
    val_images: np.ndarray,
    val_labels: np.ndarray,
    val_names: list[str],
    val_cases: list[str],
    val_original: dict[str, np.ndarray] | None = None,
    val_spacing: dict[str, tuple[float, ...]] | None = None,
    source: str = "",
    provenance: dict | None = None,
) -> Path:
    """Validate and write a prepared file atomically (the old file survives any failure).

    Images are uint8 or float in [0, 1] (stored as round(255 x), see the module docstring)."""
    path = Path(path)
    num_classes = len(class_names)
    for split, images, labels, names in (
        ("train", train_images, train_labels, train_names),
        ("val", val_images, val_labels, val_names),
    ):
        if images.ndim != 4 or labels.ndim != 3 or images.shape[0] != labels.shape[0] != len(names):
            raise ValueError(f"{split}: images {images.shape}, labels {labels.shape}, {len(names)} names disagree")
        if images.shape[2:] != labels.shape[1:] or images.shape[2] != images.shape[3]:
            raise ValueError(f"{split}: image {images.shape[2:]} and label {labels.shape[1:]} sizes disagree")
        if labels.size and int(labels.max()) >= num_classes:
            raise ValueError(f"{split}: label value {int(labels.max())} >= {num_classes} classes")
    string = h5py.string_dtype()
    with staged_bytes(path, suffix=".h5") as tmp:  # built in memory: h5py crashes on a full disk
        with h5py.File(tmp, "w") as f:
            f.attrs.update(
                format_version=FORMAT_VERSION,
                dataset=dataset,
                num_classes=num_classes,
                class_names=json.dumps(class_names),
                in_channels=int(train_images.shape[1]),
                image_size=int(train_images.shape[2]),
                source=source,
                provenance=json.dumps(provenance or {}),
            )
            _write_images(f, "train/images", train_images)
            _write_slices(f, "train/labels", train_labels.astype(np.uint8))
            f.create_dataset("train/names", data=np.array(train_names, dtype=object), dtype=string)
            f.create_dataset("train/groups", data=np.array(train_groups, dtype=object), dtype=string)
            for regime, idx in labeled.items():
                f.create_dataset(f"labeled/{regime}", data=np.sort(np.asarray(idx, dtype=np.int64)))
            _write_images(f, "val/images", val_images)
            _write_slices(f, "val/labels", val_labels.astype(np.uint8))
            f.create_dataset("val/names", data=np.array(val_names, dtype=object), dtype=string)
            f.create_dataset("val/cases", data=np.array(val_cases, dtype=object), dtype=string)
            for case, lab in (val_original or {}).items():
                f.create_dataset(f"val/original/{case}", data=lab.astype(np.uint8), compression="gzip")
            for case, spacing in (val_spacing or {}).items():
                f.create_dataset(f"val/spacing/{case}", data=np.asarray(spacing, dtype=np.float64))
    return path


def load_prepared(path: str | Path, *, dataset: str | None = None, profile: str | None = None) -> Prepared:
    """Read a prepared file fully into memory, with clear errors for missing or corrupt files.

    `dataset` and `profile`, where the caller knows them (the file is the configured one), name
    the command that writes a missing file.
    """
    path = Path(path)
    if not path.is_file():
        if dataset:
            command = f"ugpcl prepare {dataset}" + (f" --profile {profile}" if profile else "")
            fix = f"prepare it first: `{command}` (with this command's --config and --set options, if any)"
        else:
            fix = "prepare it first (`ugpcl prepare <dataset> --profile <profile>`), or name an existing prepared file"
        raise UserError("prepared data file not found", path=path, fix=fix)
    try:
        with h5py.File(path, "r") as f:
            _check_version(f, path)
            originals = {k: f["val/original"][k][()] for k in f["val/original"]} if "val/original" in f else {}
            spacing = {k: tuple(v[()].tolist()) for k, v in f["val/spacing"].items()} if "val/spacing" in f else {}
            prepared = Prepared(
                path=path,
                dataset=str(f.attrs["dataset"]),
                num_classes=int(f.attrs["num_classes"]),
                class_names=json.loads(f.attrs["class_names"]),
                in_channels=int(f.attrs["in_channels"]),
                image_size=int(f.attrs["image_size"]),
                train=Split(_read_images(f["train/images"]), f["train/labels"][()], _strings(f["train/names"])),
                train_groups=_strings(f["train/groups"]),
                labeled={k: f["labeled"][k][()] for k in f["labeled"]},
                val=Split(_read_images(f["val/images"]), f["val/labels"][()], _strings(f["val/names"])),
                val_cases=_strings(f["val/cases"]),
                val_original=originals,
                attrs={k: f.attrs[k] for k in f.attrs},
                val_spacing=spacing,
            )
    except UserError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise UserError(
            f"not a readable prepared HDF5 file ({exc})",
            path=path,
            fix="the file is truncated or corrupt: delete it and run the data stage again",
        ) from exc
    check_contents(prepared)
    return prepared


def check_contents(p: Prepared) -> None:
    """UserError unless the arrays agree with each other and with the file's attributes (labels below
    num_classes, image sizes, channels, indices in range), so that nothing fails later mid-training."""
    problems = []
    for name, split in (("train", p.train), ("val", p.val)):
        n, size = len(split), p.image_size
        if split.images.shape != (n, p.in_channels, size, size) or split.labels.shape != (n, size, size):
            problems.append(f"{name}/images {split.images.shape} and {name}/labels {split.labels.shape} do not fit "
                            f"{n} names of {p.in_channels}-channel {size} px images")
        elif split.labels.size and int(split.labels.max()) >= p.num_classes:
            problems.append(f"{name}/labels hold the value {int(split.labels.max())}, but the file declares "
                            f"{p.num_classes} classes ({', '.join(p.class_names)})")
    for case, labels in p.val_original.items():
        if labels.size and int(labels.max()) >= p.num_classes:
            problems.append(f"val/original/{case} holds the label {int(labels.max())} >= {p.num_classes} classes")
            break
    if len(p.val_cases) != len(p.val) or len(p.train_groups) != len(p.train):
        problems.append("val/cases or train/groups do not have one entry per image")
    for regime, idx in p.labeled.items():
        if idx.size and (idx.min() < 0 or idx.max() >= len(p.train)):
            problems.append(f"labeled/{regime} indexes images outside train/ (0..{len(p.train) - 1})")
    if problems:
        raise UserError("inconsistent prepared file: " + "; ".join(problems), path=p.path,
                        fix="the file is corrupt or was altered: delete it and run the data stage again "
                            f"(`ugpcl prepare {p.dataset}`)")
