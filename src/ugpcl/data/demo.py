"""Synthetic stand-ins for ACDC and ISIC 2018, written in the official raw layouts.

The preparation code cannot tell them from the real archives, so `make demo` exercises the
whole data stage in seconds. Everything is drawn from numpy generators seeded by `data.demo.seed`.

ACDC-like: short-axis cine phantoms, two frames (ED, ES) per patient, as NIfTI inside
`ACDC.zip` (ACDC/database/training/patientXXX/...) plus SSL4MIS-style lists in `lists/`.
ISIC-like: RGB skin images with one darker irregular lesion and 0/255 masks, as the two
official zips.
"""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np

from ..fileio import atomic_dir, atomic_path, write_text
from .layout import ACDC_ZIP_PREFIX, ISIC_GT_FOLDER as GT_FOLDER, ISIC_INPUT_FOLDER as INPUT_FOLDER
from .volumeio import nifti_zyx

STAMP = "demo.json"
LAYOUT = 2  # what a configuration makes; a stamp of another layout is remade (2: ACDC lists named as SSL4MIS's)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Low-frequency texture with unit standard deviation."""
    noise = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    return noise / (noise.std() + 1e-8)


def _write_zip(path: Path, members: dict[str, bytes]) -> None:
    with atomic_path(path, suffix=".zip") as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2022, 1, 1, 0, 0, 0)), data)


# ---------------------------------------------------------------- ACDC-like


def phantom_volume(rng: np.random.Generator, anatomy: dict, slices: int, systole: bool):
    """One frame: image (Z, H, W) float32 in scanner units and labels (Z, H, W) uint8."""
    height, width = anatomy["shape"]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    bx, by, ax, ay = anatomy["body"]
    body = ((xx - bx) / ax) ** 2 + ((yy - by) / ay) ** 2 < 1
    angle = anatomy["bias"]  # a linear coil-sensitivity ramp across the field of view
    bias = 1 + 0.25 * ((xx / width - 0.5) * np.cos(angle) + (yy / height - 0.5) * np.sin(angle))
    lv_scale, wall_scale = (0.7, 1.3) if systole else (1.0, 1.0)
    image = np.empty((slices, height, width), np.float32)
    label = np.zeros((slices, height, width), np.uint8)
    for z in range(slices):
        depth = z / max(slices - 1, 1)                          # 0 at the base, 1 at the apex
        cx, cy = anatomy["center"] + rng.normal(0, 0.01 * height, 2)
        r_lv = anatomy["r_lv"] * lv_scale * (1 - 0.45 * depth) * rng.uniform(0.95, 1.05)
        r_out = r_lv + anatomy["wall"] * wall_scale
        d_lv = np.hypot(xx - cx, yy - cy)
        r_rv = anatomy["r_lv"] * 1.3 * (1 - 0.7 * depth)
        rx = cx + np.cos(anatomy["rv_angle"]) * (r_out + 0.4 * r_rv)
        ry = cy + np.sin(anatomy["rv_angle"]) * (r_out + 0.4 * r_rv)
        rv = (np.hypot(xx - rx, yy - ry) < r_rv) & (d_lv > r_out + 0.03 * height) & (depth < 0.9)
        label[z][rv] = 1
        label[z][(d_lv >= r_lv) & (d_lv < r_out)] = 2
        label[z][d_lv < r_lv] = 3
        tissue = np.where(body, 0.3 + 0.05 * anatomy["texture"] + 0.04 * _smooth_noise(rng, (height, width), 2), 0.02)
        blood = np.array([0.0, 0.78, 0.22, 0.88], np.float32) * anatomy["contrast"]
        slice_ = np.where(label[z] > 0, blood[label[z]], tissue)
        slice_ = cv2.GaussianBlur(slice_.astype(np.float32), (0, 0), 0.7)  # partial-volume edges
        image[z] = np.clip(slice_ * bias + rng.normal(0, 0.03, slice_.shape), 0, None) * anatomy["gain"]
    return image, label


# The heart fills the field of view as in a scan cropped around it (the LV radius is 14-18% of
# the image side, the wall 5-7%): at the demo's 64 px every structure, the thin myocardium
# included, is several pixels wide, and the demo's small networks learn it within a hundred or
# so iterations (zoomed out, the right ventricle's thin crescent took several times longer).
HEART_ZOOM = 1.4


def _anatomy(rng: np.random.Generator, size: int) -> dict:
    height, width = size, size - int(rng.integers(0, size // 6 + 1))
    zoom = HEART_ZOOM
    return {
        "shape": (height, width),
        "center": np.array([width * rng.uniform(0.5, 0.6), height * rng.uniform(0.42, 0.55)]),
        "r_lv": zoom * size * rng.uniform(0.1, 0.13),
        "wall": zoom * size * rng.uniform(0.035, 0.05),
        "rv_angle": np.pi + rng.uniform(-0.35, 0.35),        # the RV sits to the image left of the LV
        "body": (width / 2, height / 2, zoom * width * rng.uniform(0.42, 0.48), zoom * height * rng.uniform(0.36, 0.44)),
        "bias": rng.uniform(0, 2 * np.pi),
        "texture": _smooth_noise(rng, (height, width), size / 24),
        "contrast": rng.uniform(0.85, 1.15),
        "gain": rng.uniform(300, 900),
    }


def _nifti_gz(volume: np.ndarray, dtype) -> bytes:
    """(Z, Y, X) array -> gzipped NIfTI bytes holding the (X, Y, Z) array, as the Creatis files."""
    return gzip.compress(nifti_zyx(volume, (10.0, 1.4, 1.4), dtype).to_bytes(), compresslevel=1, mtime=0)


def make_demo_acdc(out_dir: str | Path, *, seed: int, acdc_train_patients: int, acdc_val_patients: int,
                   acdc_slices: int, acdc_size: int) -> tuple[Path, Path]:
    """Write `out_dir/ACDC.zip` and `out_dir/lists/`; returns (zip path, lists folder)."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng([seed, 0])
    members, volumes, train_slices = {}, {}, []
    patients = [f"patient{i:03d}" for i in range(1, acdc_train_patients + acdc_val_patients + 1)]
    for patient in patients:
        anatomy = _anatomy(rng, acdc_size)
        es_frame = int(rng.integers(8, 16))
        prefix = f"{ACDC_ZIP_PREFIX}{patient}/"
        members[prefix + "Info.cfg"] = f"ED: 1\nES: {es_frame}\nGroup: NOR\nNbFrame: 30\n".encode()
        for frame, systole in ((1, False), (es_frame, True)):  # the zip names frames as Creatis does
            image, label = phantom_volume(rng, anatomy, acdc_slices, systole)
            members[prefix + f"{patient}_frame{frame:02d}.nii.gz"] = _nifti_gz(np.round(image), np.int16)
            members[prefix + f"{patient}_frame{frame:02d}_gt.nii.gz"] = _nifti_gz(label, np.uint8)
        volumes[patient] = cases = [f"{patient}_frame01", f"{patient}_frame02"]  # the lists as SSL4MIS (ED, ES)
        if len(volumes) <= acdc_train_patients:  # SSL4MIS: a patient's slices together, shuffled, from 1
            names = [f"{c}_slice_{k}" for c in cases for k in range(1, acdc_slices + 1)]
            train_slices += rng.permutation(names).tolist()
    held_out = patients[acdc_train_patients:]
    n_val = max(1, len(held_out) // 3)
    lists = {
        "train.list": [c for p in patients[:acdc_train_patients] for c in volumes[p]],
        "val.list": [c for p in held_out[:n_val] for c in volumes[p]],
        "test.list": [c for p in held_out[n_val:] for c in volumes[p]],
        "train_slices.list": train_slices,
    }
    archive = out_dir / "ACDC.zip"
    _write_zip(archive, members)
    with atomic_dir(out_dir / "lists") as tmp:
        for name, lines in lists.items():
            (tmp / name).write_text("".join(f"{line}\n" for line in lines))
    return archive, out_dir / "lists"


# ---------------------------------------------------------------- ISIC-like


def lesion_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 skin image (H, W, 3) with one dark irregular lesion, and its 0/255 mask."""
    height, width = size, int(round(size * rng.uniform(1.25, 1.45)))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    skin = np.array([rng.uniform(195, 235), rng.uniform(145, 185), rng.uniform(115, 160)], np.float32)
    shade = 1 + 0.05 * _smooth_noise(rng, (height, width), size / 12) - 0.25 * (
        ((xx / width - 0.5) ** 2 + (yy / height - 0.5) ** 2) * 2.5)           # dermoscope vignette
    image = skin * shade[..., None]
    cx, cy = width * rng.uniform(0.35, 0.65), height * rng.uniform(0.35, 0.65)
    theta = np.arctan2(yy - cy, xx - cx)
    k = np.arange(2, 7)[:, None, None]
    wobble = (rng.uniform(0, 0.1, (5, 1, 1)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi, (5, 1, 1)))).sum(0)
    radius = size * rng.uniform(0.14, 0.3) * (1 + wobble)
    stretch = rng.uniform(0.75, 1.3)
    mask = np.hypot((xx - cx) * stretch, (yy - cy) / stretch) < radius
    darkness = rng.uniform(0.35, 0.6) * (1 + 0.15 * _smooth_noise(rng, (height, width), size / 30))
    lesion = image * darkness[..., None] * np.array([1.0, 0.85, 0.8], np.float32)
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.5)[..., None]  # soft edge; mask stays hard
    image = alpha * lesion + (1 - alpha) * image + rng.normal(0, 3, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8), mask.astype(np.uint8) * 255


def make_demo_isic(out_dir: str | Path, *, seed: int, isic_images: int, isic_size: int) -> tuple[Path, Path]:
    """Write the two official-layout zips into `out_dir`; returns (input zip, ground-truth zip)."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng([seed, 1])
    ids = np.sort(rng.choice(np.arange(1, 100000), isic_images, replace=False))
    inputs = {f"{INPUT_FOLDER}/LICENSE.txt": b"Synthetic demo images, CC0.\n"}
    masks = {}
    for i in ids:
        image, mask = lesion_image(rng, isic_size)
        jpeg = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])[1]  # cv2 wants BGR
        inputs[f"{INPUT_FOLDER}/ISIC_{i:07d}.jpg"] = jpeg.tobytes()
        masks[f"{GT_FOLDER}/ISIC_{i:07d}_segmentation.png"] = cv2.imencode(".png", mask)[1].tobytes()
    paths = out_dir / f"{INPUT_FOLDER}.zip", out_dir / f"{GT_FOLDER}.zip"
    _write_zip(paths[0], inputs)
    _write_zip(paths[1], masks)
    return paths


# ---------------------------------------------------------------- made once per configuration


def _ensure(folder: Path, params: dict, outputs: list[Path], make) -> None:
    """Run `make` unless `folder` already holds outputs made with exactly these parameters."""
    stamp, made = folder / STAMP, {**params, "layout": LAYOUT}
    try:
        current = json.loads(stamp.read_text()) == made and all(p.exists() for p in outputs)
    except (OSError, ValueError):
        current = False
    if not current:
        make(folder, **params)
        write_text(stamp, json.dumps(made, sort_keys=True) + "\n")


def demo_settings(demo_cfg: dict, kind: str) -> dict:
    """The settings of `data.demo` the demo data of `kind` (acdc | isic) is made from."""
    return {k: v for k, v in demo_cfg.items() if k == "seed" or k.startswith(f"{kind}_")}


def ensure_demo_acdc(folder: str | Path, demo_cfg: dict) -> tuple[Path, Path]:
    folder = Path(folder)
    params = demo_settings(demo_cfg, "acdc")
    _ensure(folder, params, [folder / "ACDC.zip", folder / "lists"], make_demo_acdc)
    return folder / "ACDC.zip", folder / "lists"


def ensure_demo_isic(folder: str | Path, demo_cfg: dict) -> tuple[Path, Path]:
    folder = Path(folder)
    params = demo_settings(demo_cfg, "isic")
    zips = [folder / f"{INPUT_FOLDER}.zip", folder / f"{GT_FOLDER}.zip"]
    _ensure(folder, params, zips, make_demo_isic)
    return zips[0], zips[1]


def make_demo(out_dir: str | Path, demo_cfg: dict) -> dict[str, Path]:
    """Both demo datasets under `out_dir/acdc` and `out_dir/isic` (the `ugpcl demo-data` command)."""
    out_dir = Path(out_dir)
    acdc_zip, lists = ensure_demo_acdc(out_dir / "acdc", demo_cfg)
    isic_input, isic_gt = ensure_demo_isic(out_dir / "isic", demo_cfg)
    return {"acdc_zip": acdc_zip, "acdc_lists": lists, "isic_input": isic_input, "isic_gt": isic_gt}
