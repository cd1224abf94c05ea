"""ACDC: raw Creatis zip (or an SSL4MIS folder, or the demo zip) -> the prepared HDF5 file.

The split is SSL4MIS's: training = the slices in `train_slices.list` (70 patients), validation
= the volumes in `val.list` + `test.list` (30 patients). A labeled regime of n patients is the
shortest prefix of `train_slices.list` that holds n whole patients.

The lists name cases and slices as SSL4MIS's data does, whatever the source: `patientNNN_frame01` is
the end-diastolic frame and `frame02` the end-systolic one, and `_slice_k` is the volume's k-th slice
counted from 1 (1312 training slices numbered 1..depth, which with the 590 of the validation volumes
make ACDC's 1902). The Creatis zip names each frame by its number in the cine (`patient001_frame12`)
and says which is which in the patient's `Info.cfg` (`ED: 1`, `ES: 12`): `ZipVolumes` translates.
"""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np

from ..config import dataset_config, raw_dir, resolve_path
from ..errors import UserError
from .archive import open_zip, read_member
from .download import download, verify_file
from .parallel import progress_map
from .prepared import write_prepared
from .resize import resize_slices, resizing

CLASS_NAMES = ["background", "RV", "Myo", "LV"]
LIST_FILES = ("train.list", "val.list", "test.list", "train_slices.list")
CASE_RE = re.compile(r"patient\d{3}_frame\d{2}")
SLICE_RE = re.compile(r"(patient\d{3}_frame\d{2})_slice_(\d+)")
NIFTI_RE = re.compile(r"(?:^|/)training/patient\d{3}/(patient\d{3}_frame\d{2})(_gt)?\.nii\.gz")
INFO_RE = re.compile(r"(?:^|/)training/(patient\d{3})/Info\.cfg")
PHASES = ("ED", "ES")  # SSL4MIS's frame01 and frame02


def patient_of(name: str) -> str:
    return name[: len("patient000")]


# ---------------------------------------------------------------- lists and regimes


@dataclass
class AcdcLists:
    folder: Path
    train_slices: list[str]   # train_slices.list, in order
    val: list[str]            # val.list
    test: list[str]           # test.list

    @property
    def val_cases(self) -> list[str]:
        """The paper's validation set: val.list then test.list."""
        return self.val + self.test


def _read_list(path: Path, pattern: re.Pattern) -> list[str]:
    if not path.is_file():
        raise UserError("list file not found", path=path,
                        fix="point data.<dataset>.lists at a folder holding " + ", ".join(LIST_FILES))
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    bad = [n for n in names if not pattern.fullmatch(n)]
    if bad:
        raise UserError(f"{len(bad)} malformed names, e.g. {bad[0]!r}", path=path,
                        fix=f"each line must match {pattern.pattern}")
    return names


def read_lists(folder: str | Path) -> AcdcLists:
    """The SSL4MIS lists in `folder`, checked: well-formed and train/val patient-disjoint."""
    folder = Path(folder)
    train_slices = _read_list(folder / "train_slices.list", SLICE_RE)
    val, test = _read_list(folder / "val.list", CASE_RE), _read_list(folder / "test.list", CASE_RE)
    val_cases = val + test
    if not train_slices or not val_cases:
        raise UserError("no training slices or no validation volumes listed", path=folder,
                        fix="use complete SSL4MIS lists")
    shared = sorted({patient_of(n) for n in train_slices} & {patient_of(c) for c in val_cases})
    if shared:
        raise UserError(
            f"patients in both training and validation lists: {', '.join(shared[:5])}",
            path=folder / "train_slices.list",
            fix="training and validation must be patient-disjoint; restore the SSL4MIS lists",
        )
    return AcdcLists(folder, train_slices, val, test)


def labeled_prefixes(train_slices: list[str], regimes: dict[str, int], list_path: Path,
                     key: str = "data.acdc.regimes") -> dict[str, np.ndarray]:
    """regime -> indices of the shortest prefix of `train_slices` covering that many patients."""
    patients = np.array([patient_of(n) for n in train_slices])
    starts = np.flatnonzero(np.r_[True, patients[1:] != patients[:-1]])
    order = patients[starts]
    if len(set(order)) != len(order):
        raise UserError(
            "the slices of a patient are not contiguous, so a prefix is not a set of whole patients",
            path=list_path,
            fix="keep each patient's slices together (as in SSL4MIS's train_slices.list)",
        )
    out = {}
    for regime, n in regimes.items():
        if n > len(order):
            raise UserError(
                f"regime {regime!r} asks for {n} labeled patients but the list has {len(order)}",
                path=list_path,
                fix=f"lower {key} or use the full list",
            )
        end = starts[n] if n < len(order) else len(train_slices)
        out[regime] = np.arange(end)
    return out


# ---------------------------------------------------------------- raw readers


def check_volume(image: np.ndarray, label: np.ndarray, where, label_where=None) -> tuple[np.ndarray, np.ndarray]:
    """Validate one image/label pair (slice or volume); returns float32 image, uint8 label.

    `where` names the image's file, `label_where` the label's when it is another file.
    """
    label_where = label_where or where
    if image.shape != label.shape:
        raise UserError(f"label shape {label.shape} differs from the image shape {image.shape} ({where})",
                        path=label_where, fix="the image and its ground truth must be the same grid; replace the file")
    if not np.isfinite(image).all():
        raise UserError("image contains NaN or infinite values", path=where, fix="replace the file with an intact copy")
    bad = ~np.isin(label, (0, 1, 2, 3))
    if bad.any():
        raise UserError(f"label values outside 0..3: {np.unique(label[bad])[:5].tolist()}", path=label_where,
                        fix="labels must be 0 background, 1 RV, 2 Myo, 3 LV; replace the file")
    return image.astype(np.float32, copy=False), label.astype(np.uint8)


def minmax(volume: np.ndarray, where) -> np.ndarray:
    lo, hi = float(volume.min()), float(volume.max())
    if hi <= lo:
        raise UserError("image volume is constant", path=where, fix="replace the file with an intact copy")
    return (volume - lo) / (hi - lo)


class ZipVolumes:
    """The NIfTI volumes of the Creatis zip (or the demo zip), read without extracting; cases and
    slices named as in SSL4MIS's lists (module docstring)."""

    workers = 4  # gzip decoding and resizing release the GIL

    def __init__(self, path: Path):
        self.path = path
        self.members: dict[tuple[str, bool], str] = {}  # (SSL4MIS case, is ground truth) -> member name
        self.zooms: dict[str, tuple[float, ...]] = {}     # case -> voxel size (z, y, x) in mm, once read
        frames, infos = {}, {}
        with open_zip(path) as zf:
            for name in zf.namelist():
                if m := NIFTI_RE.search(name):
                    frames[(m[1], bool(m[2]))] = name
                elif m := INFO_RE.search(name):
                    infos[m[1]] = read_member(zf, name), f"{path}::{name}"
        for patient, (text, where) in infos.items():
            for i, frame in enumerate(_phase_frames(text, where), 1):
                for gt in (False, True):
                    if (raw := (f"{patient}_frame{frame:02d}", gt)) in frames:
                        self.members[(f"{patient}_frame{i:02d}", gt)] = frames[raw]

    def check(self, lists: AcdcLists) -> None:
        cases = {_parse_slice(n)[0] for n in lists.train_slices} | set(lists.val_cases)
        missing = sorted({c for c in cases for gt in (False, True) if (c, gt) not in self.members})
        if missing:
            raise UserError(
                f"{len(missing)} volumes named in the lists of {lists.folder} are not in the archive, "
                f"e.g. {missing[0]} (frame01 is the frame Info.cfg names ED, frame02 the one it names ES)",
                path=self.path,
                fix="use the complete ACDC training archive or lists that match it",
            )

    def _nifti(self, case: str, gt: bool) -> np.ndarray:
        name = self.members[(case, gt)]
        with open_zip(self.path) as zf:  # a handle per read, so threads never share one
            data = read_member(zf, name)
        where = f"{self.path}::{name}"
        try:
            img = nib.Nifti1Image.from_bytes(gzip.decompress(data))
            array = np.asanyarray(img.dataobj)
        except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as exc:
            raise UserError(f"not a readable NIfTI file ({exc})", path=where,
                            fix="the archive is corrupt: download it again") from exc
        if array.ndim != 3:
            raise UserError(f"expected a 3-D volume, got shape {array.shape}", path=where,
                            fix="use the ACDC frame files")
        if gt:
            self.zooms[case] = tuple(float(z) for z in img.header.get_zooms()[:3][::-1])
        return array.transpose(2, 1, 0)  # nibabel (X, Y, Z) -> (Z, Y, X), as SimpleITK's GetArrayFromImage

    def volume(self, case: str) -> tuple[np.ndarray, np.ndarray]:
        where, label_where = (f"{self.path}::{self.members[(case, gt)]}" for gt in (False, True))
        image, label = check_volume(self._nifti(case, False), self._nifti(case, True), where, label_where)
        return minmax(image, where), label

    def spacing(self, case: str) -> tuple[float, ...]:
        """The voxel size (z, y, x, mm) of a case whose volume has been read (the NIfTI header's)."""
        return self.zooms[case]

    def slices(self, case: str, ks: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Slices ks of a case, counted from 1 as in SSL4MIS's lists."""
        image, label = self.volume(case)
        if min(ks) < 1 or max(ks) > len(image):
            bad = min(ks) if min(ks) < 1 else max(ks)
            raise UserError(f"{case} has slices 1..{len(image)}, the list names slice {bad}", path=self.path,
                            fix="use lists that match the archive (SSL4MIS's count slices from 1)")
        index = np.asarray(ks) - 1
        return image[index], label[index]


class FolderVolumes:
    """An SSL4MIS folder: data/slices/<case>_slice_<k>.h5 (train), data/<case>.h5 (val)."""

    workers = 1  # h5py serialises every call behind one lock: threads would only contend

    def __init__(self, path: Path):
        self.path = path

    def spacing(self, case: str) -> None:
        """None: the SSL4MIS h5 files store no voxel size, so distances stay in voxels."""
        return None

    def slice_file(self, case: str, k: int) -> Path:
        return self.path / "data" / "slices" / f"{case}_slice_{k}.h5"

    def volume_file(self, case: str) -> Path:
        return self.path / "data" / f"{case}.h5"

    def check(self, lists: AcdcLists) -> None:
        for list_name, files in (
            ("train_slices.list", [self.slice_file(*_parse_slice(n)) for n in lists.train_slices]),
            ("val.list", [self.volume_file(c) for c in lists.val]),
            ("test.list", [self.volume_file(c) for c in lists.test]),
        ):
            missing = [f for f in files if not f.is_file()]
            if missing:
                raise UserError(
                    f"names {len(missing)} files missing from {self.path}, e.g. {missing[0]}",
                    path=lists.folder / list_name,
                    fix="complete the SSL4MIS folder or use lists that match it",
                )

    @staticmethod
    def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
        try:
            with h5py.File(path, "r") as f:
                return check_volume(f["image"][()], f["label"][()], path)
        except (OSError, KeyError) as exc:
            raise UserError(f"not a readable SSL4MIS h5 file with image and label ({exc})", path=path,
                            fix="replace the file with an intact copy") from exc

    def volume(self, case: str) -> tuple[np.ndarray, np.ndarray]:
        return self._read(self.volume_file(case))

    def slices(self, case: str, ks: list[int]) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self._read(self.slice_file(case, k)) for k in ks]
        for (image, _), k in zip(pairs, ks):
            if image.ndim != 2 or image.shape != pairs[0][0].shape:
                raise UserError(f"slice shape {image.shape} differs from the volume's {pairs[0][0].shape}",
                                path=self.slice_file(case, k), fix="replace the file with an intact copy")
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def _phase_frames(info: bytes, where: str) -> tuple[int, int]:
    """The ED and ES frame numbers of a Creatis `Info.cfg` (`ED: 1`, `ES: 12`, one per line)."""
    values = dict(line.split(":", 1) for line in info.decode("utf-8", "replace").splitlines() if ":" in line)
    try:
        return tuple(int(values[phase].strip()) for phase in PHASES)
    except (KeyError, ValueError) as exc:
        raise UserError(f"no ED and ES frame numbers ({exc})", path=where,
                        fix="the archive is incomplete or corrupt: download it again") from exc


def _parse_slice(name: str) -> tuple[str, int]:
    m = SLICE_RE.fullmatch(name)
    return m[1], int(m[2])


# ---------------------------------------------------------------- fetch and prepare


def fetch_input(cfg: dict, name: str) -> tuple[ZipVolumes | FolderVolumes, AcdcLists, dict]:
    """Make sure the configured raw ACDC input exists; returns its reader, lists and provenance."""
    acdc = dataset_config(cfg, name)
    source = acdc["source"]
    if source == "local":
        if not acdc["local_dir"]:
            raise UserError(f"data.{name}.source is local but data.{name}.local_dir is not set",
                            fix=f"set data.{name}.local_dir to an SSL4MIS ACDC folder")
        folder = resolve_path(acdc["local_dir"])
        if not (folder / "data" / "slices").is_dir():
            raise UserError("not an SSL4MIS ACDC folder (no data/slices/)", path=folder,
                            fix=f"point data.{name}.local_dir at the folder holding data/ and the lists")
        reader, lists_dir = FolderVolumes(folder), resolve_path(acdc["lists"])
        provenance = {"local_dir": str(folder)}
    elif source == "demo":
        from .demo import ensure_demo_acdc

        archive, lists_dir = ensure_demo_acdc(raw_dir(cfg) / "demo" / "acdc", cfg["data"]["demo"])
        reader, provenance = ZipVolumes(archive), {"archive": str(archive), "demo": cfg["data"]["demo"]}
    else:
        if acdc["archive"]:
            archive = verify_file(resolve_path(acdc["archive"]), acdc["sha256"])
        else:
            archive = download(acdc["url"], raw_dir(cfg) / "acdc" / "ACDC.zip", sha256=acdc["sha256"])
        reader, lists_dir = ZipVolumes(archive), resolve_path(acdc["lists"])
        provenance = {"archive": str(archive), "sha256": acdc["sha256"], "url": acdc["url"]}
    lists = read_lists(lists_dir)
    reader.check(lists)
    provenance.update(source=source, lists=str(lists_dir))
    return reader, lists, provenance


def fetch(cfg: dict, name: str) -> list[Path]:
    reader, lists, _ = fetch_input(cfg, name)
    return [reader.path, lists.folder]


def prepare(cfg: dict, name: str, out: str | Path) -> dict:
    """Convert the configured ACDC source into the prepared file `out`; returns a summary."""
    reader, lists, provenance = fetch_input(cfg, name)
    size = cfg["data"]["image_size"]
    # images: SSL4MIS and the authors' loaders both zoom with order 0 (nearest, METHODS §1, §3.2); bilinear is ours
    interpolation = resizing(cfg, name).volumes
    provenance["interpolation"] = interpolation

    def resized(image, label):
        return resize_slices(image, size, interpolation), resize_slices(label, size, "nearest")

    def train_case(case):
        return resized(*reader.slices(case, [k for _, k in by_case[case]]))

    def val_case(case):
        image, label = reader.volume(case)
        return (*resized(image, label), label, reader.spacing(case))

    labeled = labeled_prefixes(lists.train_slices, dataset_config(cfg, name)["regimes"],
                               lists.folder / "train_slices.list", f"data.{name}.regimes")
    by_case: dict[str, list[tuple[int, int]]] = {}  # volume -> (index in the list, slice) of its slices
    for i, slice_name in enumerate(lists.train_slices):
        case, k = _parse_slice(slice_name)
        by_case.setdefault(case, []).append((i, k))
    train_images = np.empty((len(lists.train_slices), 1, size, size), np.float32)
    train_labels = np.empty((len(lists.train_slices), size, size), np.uint8)
    train = progress_map(train_case, list(by_case), reader.workers, "acdc train volumes")
    for case, (images, labels) in zip(by_case, train):
        index = [i for i, _ in by_case[case]]
        train_images[index, 0], train_labels[index] = images, labels
    del train
    val = progress_map(val_case, lists.val_cases, reader.workers, "acdc val volumes")
    val_names = [f"{case}_slice_{k}" for case, (img, *_) in zip(lists.val_cases, val) for k in range(len(img))]

    write_prepared(
        out,
        dataset=name,
        class_names=CLASS_NAMES,
        train_images=train_images,
        train_labels=train_labels,
        train_names=lists.train_slices,
        train_groups=[patient_of(n) for n in lists.train_slices],
        labeled=labeled,
        val_images=np.concatenate([img for img, *_ in val])[:, None],
        val_labels=np.concatenate([lab for _, lab, *_ in val]),
        val_names=val_names,
        val_cases=[n.rsplit("_slice_", 1)[0] for n in val_names],
        val_original={case: original for case, (_, _, original, _) in zip(lists.val_cases, val)},
        val_spacing={case: spacing for case, (*_, spacing) in zip(lists.val_cases, val) if spacing is not None},
        source=provenance["source"],
        provenance=provenance,
    )
    groups = {patient_of(n) for n in lists.train_slices}
    return {
        "dataset": name,
        "out": str(out),
        "train": f"{len(lists.train_slices)} slices / {len(groups)} patients",
        "labeled": {r: f"{len(idx)} slices / {len({patient_of(lists.train_slices[i]) for i in idx})} patients"
                    for r, idx in labeled.items()},
        "val": f"{len(val_names)} slices / {len(lists.val_cases)} volumes / "
               f"{len({patient_of(c) for c in lists.val_cases})} patients",
    }
