"""Shared helpers of the data-stage tests: configs, small copies of the real data, fake archives,
and a local HTTP server with Range support."""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import shutil
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import h5py
import nibabel as nib
import numpy as np
import pytest
import yaml

from ugpcl.config import REPO_ROOT, load_config
from ugpcl.errors import UserError
from ugpcl.commands import data as data_command
from ugpcl.data import stage
from ugpcl.data.layout import ISIC_GT_FOLDER as GT_FOLDER, ISIC_INPUT_FOLDER as INPUT_FOLDER


def config(*overrides: str, profile: str | None = None) -> dict:
    return load_config(None, profile, list(overrides))


def run_cli(*argv: str):
    """Run one of the data subcommands through its own argparse registration."""
    parser = argparse.ArgumentParser()
    data_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def folder_state(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes, to show that a failure changed nothing."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def fails_cleanly(out, prepare, *named):
    """Run `prepare` over an earlier output `out`; it must raise a UserError naming `named`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"an earlier prepared file")
    before = folder_state(out.parent)
    with pytest.raises(UserError) as info:
        prepare()
    for name in named:
        assert str(name) in str(info.value)
    assert folder_state(out.parent) == before
    return str(info.value)


# ---------------------------------------------------------------- folder datasets


def folder_config(name: str, entry: dict, *overrides: str, profile: str | None = None) -> dict:
    """params.yaml with `data.<name>` set to `entry` (checked by the schema like any other key)."""
    return config(f"data.{name}={json.dumps(entry, default=str)}", *overrides, profile=profile)


def readme_example() -> dict:
    """The YAML block of the README's section 'Your own data', parsed."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("\n## Your own data\n", 1)[1].split("\n## ", 1)[0]
    return yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])


def isic_pngs(isic_dir: Path, images: Path, masks: Path, n: int, size: int | None = None,
              image_name: str = "{id}.png", mask_name: str = "{id}_mask.png") -> list[str]:
    """The first `n` real ISIC pairs as PNG files named by the patterns (ids: the numbers), optionally
    shrunk to `size` px wide (masks stay 0/255). Returns the ids."""
    ids = []
    for jpg in sorted((isic_dir / INPUT_FOLDER).glob("ISIC_*.jpg"))[:n]:
        image = cv2.imread(str(jpg), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(isic_dir / GT_FOLDER / f"{jpg.stem}_segmentation.png"), cv2.IMREAD_UNCHANGED)
        if size:
            shape = (size, round(size * image.shape[0] / image.shape[1]))
            image = cv2.resize(image, shape, interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, shape, interpolation=cv2.INTER_NEAREST)
        id_ = jpg.stem.removeprefix("ISIC_")
        for folder, pattern, array in ((images, image_name, image), (masks, mask_name, mask)):
            target = folder / pattern.format(id=id_)
            target.parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(target), array)
        ids.append(id_)
    return ids


def nifti_volumes(acdc_dir: Path, folder: Path, cases: list[str]) -> Path:
    """Real ACDC validation volumes as <case>.nii.gz images and <case>_gt.nii.gz masks (X x Y x Z)."""
    folder.mkdir(parents=True, exist_ok=True)
    for case in cases:
        image, label = read_h5(acdc_dir / "data" / f"{case}.h5")
        nib.save(nib.Nifti1Image(image.transpose(2, 1, 0), np.eye(4)), folder / f"{case}.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8).transpose(2, 1, 0), np.eye(4)), folder / f"{case}_gt.nii.gz")
    return folder


# ---------------------------------------------------------------- ACDC


def read_h5(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as f:
        return f["image"][()], f["label"][()]


def write_h5(path: Path, image: np.ndarray, label: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        f["image"], f["label"] = image, label


def write_lists(folder: Path, train_slices: list[str], val: list[str], test: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    train = sorted({n.rsplit("_slice_", 1)[0] for n in train_slices})
    lists = {"train.list": train, "val.list": val, "test.list": test, "train_slices.list": train_slices}
    for name, lines in lists.items():
        (folder / name).write_text("".join(f"{line}\n" for line in lines))
    return folder


def mini_acdc_folder(src: Path, dst: Path, train_patients: int = 2, val_cases: int = 2) -> tuple[Path, Path]:
    """A small SSL4MIS folder copied from the real one: the first training patients' slices and
    a few validation volumes. Returns (folder, lists folder)."""
    names = (src / "train_slices.list").read_text().split()
    patients = list(dict.fromkeys(n[:10] for n in names))[:train_patients]
    train = [n for n in names if n[:10] in patients]
    val = (src / "val.list").read_text().split()[:val_cases]
    (dst / "data" / "slices").mkdir(parents=True)
    for n in train:
        shutil.copy(src / "data" / "slices" / f"{n}.h5", dst / "data" / "slices")
    for c in val:
        shutil.copy(src / "data" / f"{c}.h5", dst / "data")
    return dst, write_lists(dst / "lists", train, val[:1], val[1:])


def nifti_gz(volume_zyx: np.ndarray, zooms=(1.0, 1.0, 1.0)) -> bytes:
    """A (Z, Y, X) array as gzipped NIfTI bytes holding (X, Y, Z) with voxel size `zooms` (x, y, z),
    as the Creatis files do."""
    img = nib.Nifti1Image(np.ascontiguousarray(volume_zyx.transpose(2, 1, 0)), np.diag([*zooms, 1.0]))
    return gzip.compress(img.to_bytes(), compresslevel=1)


def es_frame(patient: str) -> int:
    """The end-systolic frame number a fake archive gives a patient (10-18, as real ones vary)."""
    return 10 + int(patient[-3:]) % 9


def fake_acdc_zip(path: Path, volumes: dict[str, tuple[np.ndarray, np.ndarray]], extra: dict[str, bytes] = {},
                  zooms=(1.0, 1.0, 1.0)) -> Path:
    """A Creatis-layout zip holding the given (image, label) volumes, (Z, Y, X) each, named as in
    SSL4MIS's lists (frame01 end-diastolic, frame02 end-systolic). In the zip, as in the real one,
    each frame is named by its number in the cine, which the patient's Info.cfg gives: ED 1, ES
    `es_frame(patient)`."""
    with zipfile.ZipFile(path, "w") as zf:
        for patient in dict.fromkeys(case[:10] for case in volumes):
            zf.writestr(f"ACDC/database/training/{patient}/Info.cfg",
                        f"ED: 1\nES: {es_frame(patient)}\nGroup: NOR\nNbFrame: 30\n")
        for case, (image, label) in volumes.items():
            patient, phase = case[:10], case[-2:]
            raw = f"{patient}_frame{1 if phase == '01' else es_frame(patient):02d}"
            prefix = f"ACDC/database/training/{patient}/"
            zf.writestr(prefix + f"{raw}.nii.gz", nifti_gz(image, zooms))
            zf.writestr(prefix + f"{raw}_gt.nii.gz", nifti_gz(label, zooms))
        for name, data in extra.items():
            zf.writestr(name, data)
    return path


# ---------------------------------------------------------------- ISIC


def mini_isic(src: Path, dst: Path, n: int) -> Path:
    """A copy of the first `n` image/mask pairs of the real mini set, in the unzipped layout."""
    for folder in (INPUT_FOLDER, GT_FOLDER):
        (dst / folder).mkdir(parents=True)
    for image in sorted((src / INPUT_FOLDER).glob("ISIC_*.jpg"))[:n]:
        shutil.copy(image, dst / INPUT_FOLDER)
        shutil.copy(src / GT_FOLDER / f"{image.stem}_segmentation.png", dst / GT_FOLDER)
    return dst


def zip_folder(folder: Path, archive: Path) -> Path:
    """Zip `folder` with its own name as the top-level member folder (the official layout)."""
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, f"{folder.name}/{p.name}")
    return archive


# ---------------------------------------------------------------- HTTP


class _RangeHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        server.ranges_seen.append(self.headers.get("Range"))
        data = server.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404)
            return
        start, requested = 0, self.headers.get("Range")
        if requested and server.honour_range:
            start = int(requested.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.drop_after is not None:  # simulate a connection lost mid-transfer, once
            body, server.drop_after = body[: server.drop_after], None
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def http_server(files: dict[str, bytes], *, honour_range: bool = True, drop_after: int | None = None):
    """Serve `files` (name -> bytes) on 127.0.0.1; yields (base URL, server)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    server.files, server.honour_range, server.drop_after, server.ranges_seen = files, honour_range, drop_after, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
