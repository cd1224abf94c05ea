"""The folder kind: a folder of images and masks matched by file name -> the prepared HDF5 file.

`data.<name>: {kind: folder, ...}` in params.yaml (README, 'Your own data'); which files pair up,
their groups and the split are `folder_files`, the labeled subsets `split`. Here: reading and
converting each case, the same way for every method and regime.

Files, by suffix (the mask's own suffix decides how the mask is read):
- PNG, JPEG, TIFF, BMP: one 2D image, grey or colour (BGR decoded to RGB; an alpha channel is
  dropped; EXIF orientation is ignored, so a mask stays aligned with its image's stored grid).
  Masks must be one value per pixel (grey, or colour with equal channels).
- NIfTI (.nii, .nii.gz): a 2D slice or a 3D volume, X x Y x Z read as Z x Y x X (ACDC's order).
- HDF5 (.h5, .hdf5): dataset `image` of an image file, `label` of a mask file (H x W or
  D x H x W; one file may hold both, as SSL4MIS's files do).
A 3D volume is cut into its Z slices; they stay one case (one group, one side of the split,
named `<id>_slice_<k>`) and validation scores it as one volume.

Classes: `classes` maps mask values to names; class i is the i-th smallest value, so the
smallest (usually 0) is the background. Any other value in a mask is an error naming the file.

Intensities: 8-bit 2D images are kept as 0..255 (as ISIC); anything else (volumes, 16-bit,
integer or float scans) is min-max normalised per file to float32 [0, 1] (as SSL4MIS's ACDC),
which the prepared file stores as 8 bits, rounded to k/255 (prepared.py). In a dataset mixing
both, 8-bit images pass through x / 255 and back unchanged. Grey images in a dataset with colour
ones are replicated to 3 channels.

Resizing to image_size x image_size: 2D image files with area interpolation (the ISIC path:
photographs are shrunk several-fold), NIfTI/HDF5 slices bilinearly (the ACDC path, SSL4MIS's
order-1 zoom), masks by nearest neighbour. The validation labels of NIfTI/HDF5 cases are also
kept at their original resolution (`val/original/<id>`), so evaluation resizes predictions back
and scores each volume in 3D, as for ACDC; 2D image files are scored at image_size, as ISIC.

Nothing is written until every case has been read and checked; then the prepared file and
`<name>_split.csv` beside it (where every case went), each atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import UserError
from .folder_files import Case, FolderSpec, assign_split, find_cases, spec_from_config, suffix
from .imageio import read_image
from .parallel import progress_map
from .prepared import write_prepared
from .resize import Resizing, resize_slices
from .split import batch_fit, counted, images, labeled_ids, write_split_csv
from .survey import CaseStats, case_stats, dataset_warnings, grouped, survey_report
from .volumeio import h5_spacing, nifti_spacing, read_h5, read_nifti

WORKERS = 4  # decoding and resizing release the GIL


@dataclass
class Raw:
    image: np.ndarray   # Z x H x W (grey) or Z x H x W x 3 (RGB), as stored
    mask: np.ndarray    # Z x H x W, the stored values
    spacing: tuple[float, ...] | None = None  # voxel size (z, y, x) in mm: a NIfTI header, an HDF5 `spacing`


@dataclass
class Converted:
    images: np.ndarray             # Z x C x S x S, uint8 (8-bit 2D images) or float32 in [0, 1]
    labels: np.ndarray             # Z x S x S uint8 class indices
    original: np.ndarray | None    # Z x H x W uint8 class indices (NIfTI/HDF5 cases), else None
    spacing: tuple[float, ...] | None = None  # of `original`, (z, y, x) in mm, when the file gives it


# --- reading --------------------------------------------------------------------------------
def _read_2d(path: Path, role: str) -> np.ndarray:
    """1 x H x W (grey) or 1 x H x W x 3 (RGB) from a PNG/JPEG/TIFF/BMP file."""
    image = read_image(path, "unchanged")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 3:
        if image.shape[2] not in (3, 4):
            raise UserError(f"image with {image.shape[2]} channels", path=path, fix="save it as grey, RGB or RGBA")
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGB)
        if role == "mask":
            if not (image == image[..., :1]).all():
                raise UserError("colour mask: its channels differ", path=path,
                                fix="save each mask as a grey image of class values (a palette PNG decodes to colours)")
            image = image[..., 0]
    return image[None]


def _read(path: Path, role: str) -> np.ndarray:
    kind = suffix(path)
    if kind in (".nii", ".nii.gz"):
        return read_nifti(path)
    if kind in (".h5", ".hdf5"):
        return read_h5(path, "image" if role == "image" else "label")
    return _read_2d(path, role)


def read_raw(case: Case) -> Raw:
    """The case's image and mask as stored (slices first)."""
    if case.image == case.mask and suffix(case.image) not in (".h5", ".hdf5"):
        raise UserError("image_pattern and mask_pattern name the same file", path=case.image,
                        fix="give masks their own names (e.g. '{id}_mask.png'); only an HDF5 file holds both")
    kind = suffix(case.image)
    spacing = (nifti_spacing(case.image) if kind in (".nii", ".nii.gz")
               else h5_spacing(case.image) if kind in (".h5", ".hdf5") else None)
    if spacing is not None and len(spacing) == 2:  # one HDF5 slice: its (y, x)
        spacing = (1.0, *spacing)
    return Raw(_read(case.image, "image"), _read(case.mask, "mask"), spacing)


def _values_text(values) -> str:
    values = [str(v) for v in values]
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} and {values[-1]}"


def case_problems(case: Case, raw: Raw, stats: CaseStats, spec: FolderSpec) -> list[UserError]:
    """What makes a case unusable: a size mismatch, mask values outside the classes, bad intensities."""
    problems = []
    grid, mask_grid = raw.image.shape[:3], raw.mask.shape
    if grid != mask_grid:
        shown = (lambda s: s[1:] if s[0] == 1 and not case.volume else s)
        problems.append(UserError(f"mask size {shown(mask_grid)} differs from its image's {shown(grid)}",
                                  path=case.mask, fix="the mask must have the pixel grid of its image"))
    unexpected = [v for v in stats.values if v not in spec.classes]
    if unexpected:
        shown = ", ".join(map(str, unexpected[:5])) + (f", ... ({len(unexpected)} in all)" if len(unexpected) > 5 else "")
        message = f"mask values other than {_values_text(spec.classes)}: [{shown}]"
        fix = spec.mask_fix or f"correct the mask, or name these values' classes in {spec.key('classes')}"
        if 255 in unexpected and 255 not in spec.classes and len(spec.classes) == 2:  # the usual binary slip
            background, other = sorted(spec.classes)
            fix = (f"the masks look binary 0/255: write {spec.key('classes')} as {{{background}: "
                   f"{spec.classes[background]}, 255: {spec.classes[other]}}}, or {fix}")
        if suffix(case.mask) in (".jpg", ".jpeg"):
            message += "; JPEG's lossy compression changes a mask's values (around the edges between classes)"
            fix = "save the masks as PNG (lossless)" + ("" if spec.mask_fix else
                                                        f" and set {spec.key('mask_pattern')} to match")
        problems.append(UserError(message, path=case.mask, fix=fix))
    if not stats.finite:
        problems.append(UserError("image contains NaN or infinite values", path=case.image,
                                  fix="replace the file with an intact copy"))
    elif stats.vmin == stats.vmax and not (stats.dtype == "uint8" and not case.volume):
        problems.append(UserError("image is constant (nothing to normalise)", path=case.image,
                                  fix="replace the file with an intact copy or remove the case"))
    return problems


# --- converting -------------------------------------------------------------------------------
def convert(case: Case, raw: Raw, spec: FolderSpec, size: int) -> Converted:
    """Class indices, intensities and image_size of one checked case (module docstring)."""
    values = np.array(list(spec.classes))
    labels = np.searchsorted(values, raw.mask).astype(np.uint8)
    image = raw.image
    if case.volume or image.dtype != np.uint8:
        lo, hi = float(image.min()), float(image.max())
        image = (image.astype(np.float32) - lo) / np.float32(hi - lo)
    rule = Resizing()  # the folder kind's (data.resize)
    resized = resize_slices(image, size, rule.volumes if case.volume else rule.image_files)
    resized = resized[:, None] if resized.ndim == 3 else resized.transpose(0, 3, 1, 2)
    small = resize_slices(labels, size, "nearest")
    return Converted(resized, small, labels if case.volume else None, raw.spacing if case.volume else None)


def load_case(case: Case, spec: FolderSpec, size: int) -> tuple[Converted, CaseStats]:
    raw = read_raw(case)
    stats = case_stats(case, raw.image, raw.mask, raw.spacing)
    problems = case_problems(case, raw, stats, spec)
    if problems:
        raise problems[0]
    return convert(case, raw, spec, size), stats


def _as_stored(images: np.ndarray, channels: int, as_uint8: bool) -> np.ndarray:
    if not as_uint8 and images.dtype == np.uint8:
        images = images.astype(np.float32) / np.float32(255)
    return np.repeat(images, channels, axis=1) if images.shape[1] != channels else images


def slice_names(case: Case, depth: int) -> list[str]:
    return [f"{case.id}_slice_{k}" for k in range(depth)] if case.volume else [case.id]


def counts_text(cases: list[Case], slices: int) -> str:
    """'42 images', or '120 slices / 8 volumes / 4 groups': what a split or subset holds."""
    volumes = sum(c.volume for c in cases)
    parts = [counted(slices, "slice" if volumes else "image")]
    if volumes:
        parts.append(counted(len(cases), "volume"))
    groups = len({c.group for c in cases})
    if groups != len(cases):
        parts.append(counted(groups, "group"))
    return " / ".join(parts)


def _unit(cases: list[Case]) -> str:
    if len({c.group for c in cases}) != len(cases):
        return "groups"
    return "volumes" if any(c.volume for c in cases) else "images"


# --- the kind's interface ----------------------------------------------------------------------
def regime_warnings(spec: FolderSpec, train: list[Case], depth: dict[str, int], labeled: dict[str, list[str]],
                    train_cfg: dict | None) -> list[str]:
    """Regimes whose runs would stop at once under `train_cfg` (split.batch_fit: too few labeled or
    unlabeled images for a batch), and regimes that label the same images as another."""
    out, seen = [], {}
    n_train = sum(depth.get(c.id, 0) for c in train)
    for regime, groups in labeled.items():
        chosen = set(groups)
        n = sum(depth.get(c.id, 0) for c in train if c.group in chosen)
        if train_cfg is not None:
            labeled_bs = train_cfg["labeled_bs"]
            out += [said for problem, fix in batch_fit(spec.name, regime, n, n_train, labeled_bs,
                                                       train_cfg["batch_size"] - labeled_bs)
                    if (said := f"{problem}: its runs would stop at once (fix: {fix})") not in out]
        twin = seen.setdefault(frozenset(chosen), regime)
        if twin != regime:
            out.append(f"regimes {twin!r} and {regime!r} of {spec.name} label the same {images(n)}: every method "
                       "would train twice on the same data")
    return out


def prepare_spec(spec: FolderSpec, out: str | Path, size: int, *, source: str = "folder",
                 provenance: dict | None = None, train_cfg: dict | None = None) -> dict:
    """Read, check and convert every case of `spec`, then write `out` and `<name>_split.csv`; a summary
    (its warnings name the regimes that cannot fill a batch of `train_cfg`, params.yaml's `train:`)."""
    out = Path(out)
    cases, problems = find_cases(spec)
    if problems:
        raise problems[0]
    side = assign_split(cases, spec)
    train = [c for c in cases if side[c.id] == "train"]
    val = [c for c in cases if side[c.id] == "val"]
    labeled = labeled_ids([c.group for c in train], spec.regimes, spec.seed, spec.key("regimes"), _unit(train))
    loaded = progress_map(lambda c: load_case(c, spec, size), train + val, WORKERS, f"{spec.name} cases")
    converted = [conv for conv, _ in loaded]
    channels = max(conv.images.shape[1] for conv in converted)
    as_uint8 = all(conv.images.dtype == np.uint8 for conv in converted)
    depth = {c.id: len(conv.labels) for c, conv in zip(train + val, converted)}

    def stacked(part: slice):
        chosen = converted[part]
        return (np.concatenate([_as_stored(conv.images, channels, as_uint8) for conv in chosen]),
                np.concatenate([conv.labels for conv in chosen]))

    n = len(train)
    train_images, train_labels = stacked(slice(0, n))
    val_images, val_labels = stacked(slice(n, None))
    train_names = [s for c in train for s in slice_names(c, depth[c.id])]
    train_groups = [c.group for c in train for _ in range(depth[c.id])]
    val_names = [s for c in val for s in slice_names(c, depth[c.id])]
    chosen = {r: set(groups) for r, groups in labeled.items()}
    spacing = {c.id: conv.spacing for c, conv in zip(val, converted[n:]) if conv.spacing is not None}
    if len(spacing) < sum(c.volume for c in val):  # one unit for every distance: voxels, where some give none
        spacing = {}  # (survey.dataset_warnings says so)
    write_prepared(
        out,
        dataset=spec.name,
        class_names=list(spec.classes.values()),
        train_images=train_images,
        train_labels=train_labels,
        train_names=train_names,
        train_groups=train_groups,
        labeled={r: np.flatnonzero(np.isin(train_groups, list(g))) for r, g in chosen.items()},
        val_images=val_images,
        val_labels=val_labels,
        val_names=val_names,
        val_cases=[c.id for c in val for _ in range(depth[c.id])],
        val_original={c.id: conv.original for c, conv in zip(val, converted[n:]) if conv.original is not None},
        val_spacing=spacing,
        source=source,
        provenance={"images": str(spec.images), "masks": str(spec.masks), "cases": len(cases), **(provenance or {})},
    )
    write_split_csv(out.parent / f"{spec.name}_split.csv", [(c.id, c.group, side[c.id]) for c in train + val], labeled)
    stats = [s for _, s in loaded]
    return {
        "dataset": spec.name,
        "out": str(out),
        "train": counts_text(train, len(train_names)),
        "labeled": {r: counts_text(sub := [c for c in train if c.group in g], sum(depth[c.id] for c in sub))
                    for r, g in chosen.items()},
        "val": counts_text(val, len(val_names)),
        "classes": {name: f["fraction"] for name, f in survey_report(stats, spec, size)["classes"].items()},
        "warnings": dataset_warnings(stats, spec, size, side) + regime_warnings(spec, train, depth, labeled, train_cfg),
    }


def inspect_spec(spec: FolderSpec, size: int, train_cfg: dict | None = None) -> dict:
    """What `prepare` would read, without writing anything: counts, sizes, value ranges, class
    pixel fractions, and every problem (`errors`: prepare would stop; `warnings`: it would not)."""
    report: dict = {"dataset": spec.name, "errors": [], "warnings": []}
    try:
        cases, problems = find_cases(spec)
    except UserError as exc:
        report["errors"].append(str(exc))
        return report
    errors: list[UserError] = list(problems)

    def survey(case: Case):
        try:
            raw = read_raw(case)
            stats = case_stats(case, raw.image, raw.mask, raw.spacing)
            return stats, case_problems(case, raw, stats, spec)
        except UserError as exc:
            return None, [exc]

    surveyed = progress_map(survey, cases, WORKERS, f"{spec.name} cases")
    stats = [s for s, _ in surveyed if s is not None]
    errors += [e for _, case_errors in surveyed for e in case_errors]
    side: dict[str, str] = {}
    try:
        side = assign_split(cases, spec)
        train = [c for c in cases if side[c.id] == "train"]
        labeled = labeled_ids([c.group for c in train], spec.regimes, spec.seed, spec.key("regimes"), _unit(train))
    except UserError as exc:
        errors.append(exc)
        labeled = {}
    depth = {s.id: s.depth for s in stats}
    if side:
        parts = {s: [c for c in cases if side[c.id] == s] for s in ("train", "val")}
        report["split"] = {s: counts_text(part, sum(depth.get(c.id, 0) for c in part)) for s, part in parts.items()}
        report["split"]["labeled"] = {r: counts_text(sub := [c for c in parts["train"] if c.group in set(g)],
                                                     sum(depth.get(c.id, 0) for c in sub)) for r, g in labeled.items()}
    report.update(survey_report(stats, spec, size, side))
    report["errors"] = grouped(errors)
    report["warnings"] = dataset_warnings(stats, spec, size, side) + regime_warnings(
        spec, [c for c in cases if side.get(c.id) == "train"], depth, labeled, train_cfg)
    return report


def fetch(cfg: dict, name: str) -> list[Path]:
    """Nothing to download: the folders, checked to exist."""
    spec = spec_from_config(cfg, name)
    find_cases(spec)
    return sorted({spec.images, spec.masks})


def prepare(cfg: dict, name: str, out: str | Path) -> dict:
    return prepare_spec(spec_from_config(cfg, name), out, cfg["data"]["image_size"], train_cfg=cfg["train"])


def inspect(cfg: dict, name: str) -> dict:
    return inspect_spec(spec_from_config(cfg, name), cfg["data"]["image_size"], cfg["train"])


def input_files(cfg: dict, name: str) -> list[Path]:
    """Every file preparation reads (for the workflow's up-to-date checks); [] while the folders are unusable."""
    spec = spec_from_config(cfg, name)
    try:
        cases, _ = find_cases(spec)
    except UserError:
        return []
    lists = {p for p in spec.split.values() if p.is_file()} if isinstance(spec.split, dict) else set()
    return sorted({p for c in cases for p in (c.image, c.mask)} | lists)
