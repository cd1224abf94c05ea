"""ISIC 2018 Task 1: the two official zips (or their unzipped folders) -> the prepared HDF5 file.

An image `ISIC_<id>.jpg` pairs with the mask `ISIC_<id>_segmentation.png`. The split is a
pure function of the ids and `split_seed`, so it does not depend on the order files are listed
in: ids ordered by sha256(f"{seed}:{id}"), the first round(n * a / (a + b)) train. A labeled
regime of k images is the first k train ids ordered by sha256(f"{seed}:labeled:{id}"), so a
smaller regime is always a subset of a larger one.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np

from ..config import raw_dir, resolve_path
from ..errors import UserError
from ..fileio import write_text
from .archive import extract_folder, is_extracted
from .download import download
from .imageio import read_image
from .layout import ISIC_GT_FOLDER, ISIC_INPUT_FOLDER
from .parallel import progress_map
from .prepared import write_prepared

CLASS_NAMES = ["background", "lesion"]
INPUT_FOLDER, GT_FOLDER = ISIC_INPUT_FOLDER, ISIC_GT_FOLDER
IMAGE_RE = re.compile(r"ISIC_(\d+)\.jpg")
MASK_RE = re.compile(r"ISIC_(\d+)_segmentation\.png")
WORKERS = 4  # JPEG/PNG decoding and resizing release the GIL


def image_path(input_dir: Path, id_: str) -> Path:
    return input_dir / f"ISIC_{id_}.jpg"


def mask_path(gt_dir: Path, id_: str) -> Path:
    return gt_dir / f"ISIC_{id_}_segmentation.png"


def pair_ids(input_dir: Path, gt_dir: Path) -> list[str]:
    """The sorted ids that have both an image and a mask; any unpaired file is a UserError."""
    for folder in (input_dir, gt_dir):
        if not folder.is_dir():
            raise UserError("folder not found", path=folder, fix="fetch the ISIC data or correct data.isic.local_dir")
    images = {m[1] for p in input_dir.iterdir() if (m := IMAGE_RE.fullmatch(p.name))}
    masks = {m[1] for p in gt_dir.iterdir() if (m := MASK_RE.fullmatch(p.name))}
    for folder, unpaired, other, file in ((input_dir, images - masks, "mask", image_path),
                                          (gt_dir, masks - images, "image", mask_path)):
        if unpaired:
            shown = ", ".join(file(folder, i).name for i in sorted(unpaired)[:10])
            raise UserError(
                f"{len(unpaired)} files have no {other}: {shown}{' ...' if len(unpaired) > 10 else ''}",
                path=folder,
                fix=f"add the missing {other}s or remove these files",
            )
    if len(images) < 2:
        raise UserError("fewer than 2 image/mask pairs", path=input_dir,
                        fix="point the config at the ISIC training data")
    return sorted(images)


def _rank(ids: list[str], salt: str) -> list[str]:
    return sorted(ids, key=lambda i: hashlib.sha256(f"{salt}:{i}".encode()).hexdigest())


def split_ids(ids: list[str], split: list[int], seed: int) -> tuple[list[str], list[str]]:
    """(train ids, val ids), each sorted."""
    a, b = split
    n_train = round(len(ids) * a / (a + b))
    ranked = _rank(ids, str(seed))
    return sorted(ranked[:n_train]), sorted(ranked[n_train:])


def labeled_ids(train: list[str], regimes: dict[str, int], seed: int) -> dict[str, list[str]]:
    ranked = _rank(train, f"{seed}:labeled")
    for regime, k in regimes.items():
        if k > len(train):
            raise UserError(
                f"regime {regime!r} asks for {k} labeled images but the split has {len(train)} training images",
                fix="lower data.isic.regimes (or use the full ISIC set)",
            )
    return {regime: sorted(ranked[:k]) for regime, k in regimes.items()}


def load_pair(input_dir: Path, gt_dir: Path, id_: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image as C x S x S uint8 RGB, mask as S x S uint8 in {0, 1}."""
    img_file, mask_file = image_path(input_dir, id_), mask_path(gt_dir, id_)
    image = read_image(img_file, "color")
    mask = read_image(mask_file, "grey")
    if mask.shape != image.shape[:2]:
        raise UserError(f"mask size {mask.shape} differs from its image's {image.shape[:2]}", path=mask_file,
                        fix="the mask must have the pixel grid of its image")
    bad = (mask != 0) & (mask != 255)
    if bad.any():
        raise UserError(f"mask values other than 0 and 255: {np.unique(mask[bad])[:5].tolist()}", path=mask_file,
                        fix="masks must be binary 0/255 (the official ground truth is)")
    image = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), (size, size), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return image.transpose(2, 0, 1), (mask > 127).astype(np.uint8)


def _archive_name(url: str) -> str:
    return Path(urlparse(url).path).name


def fetch(cfg: dict) -> tuple[Path, Path, dict]:
    """Make sure the configured raw ISIC folders exist; returns (input dir, gt dir, provenance)."""
    isic = cfg["data"]["isic"]
    source = isic["source"]
    if source == "local":
        if not isic["local_dir"]:
            raise UserError("data.isic.source is local but data.isic.local_dir is not set",
                            fix=f"set data.isic.local_dir to the folder holding {INPUT_FOLDER}/ and {GT_FOLDER}/")
        root = resolve_path(isic["local_dir"])
        return root / INPUT_FOLDER, root / GT_FOLDER, {"source": source, "local_dir": str(root)}
    if source == "demo":
        from .demo import ensure_demo_isic

        root = raw_dir(cfg) / "demo" / "isic"
        zips = dict(zip((INPUT_FOLDER, GT_FOLDER), ensure_demo_isic(root, cfg["data"]["demo"])))
        provenance = {"demo": cfg["data"]["demo"]}
    else:
        root = raw_dir(cfg) / "isic"
        zips = {}
        for folder, key in ((INPUT_FOLDER, "input"), (GT_FOLDER, "gt")):
            url, sha, size = isic[f"{key}_url"], isic[f"{key}_sha256"], isic[f"{key}_bytes"]
            archive = root / _archive_name(url)
            if archive.exists() or not (root / folder).is_dir():  # a kept zip is re-checked (cheap: stamped)
                zips[folder] = download(url, archive, sha256=sha, size=size)
        provenance = {"input_url": isic["input_url"], "input_sha256": isic["input_sha256"],
                      "gt_url": isic["gt_url"], "gt_sha256": isic["gt_sha256"]}
    for folder, archive in zips.items():
        if not is_extracted(archive, root / folder):
            extract_folder(archive, folder, root)
    provenance.update(source=source, root=str(root))
    return root / INPUT_FOLDER, root / GT_FOLDER, provenance


def prepare(cfg: dict, out: str | Path) -> dict:
    """Convert the configured ISIC source into `out` and write `isic_split.csv` beside it."""
    input_dir, gt_dir, provenance = fetch(cfg)
    isic, size = cfg["data"]["isic"], cfg["data"]["image_size"]
    ids = pair_ids(input_dir, gt_dir)
    train, val = split_ids(ids, isic["split"], isic["split_seed"])
    labeled = labeled_ids(train, isic["regimes"], isic["split_seed"])

    pairs = progress_map(lambda i: load_pair(input_dir, gt_dir, i, size), train + val, WORKERS, "isic images")
    images = np.stack([p[0] for p in pairs])
    masks = np.stack([p[1] for p in pairs])
    position = {id_: n for n, id_ in enumerate(train)}
    names = [f"ISIC_{i}" for i in train + val]
    n = len(train)
    out = Path(out)
    write_prepared(
        out,
        dataset="isic",
        class_names=CLASS_NAMES,
        train_images=images[:n],
        train_labels=masks[:n],
        train_names=names[:n],
        train_groups=names[:n],
        labeled={r: np.array([position[i] for i in chosen], dtype=np.int64) for r, chosen in labeled.items()},
        val_images=images[n:],
        val_labels=masks[n:],
        val_names=names[n:],
        val_cases=names[n:],
        source=provenance["source"],
        provenance=provenance,
    )
    regimes = sorted(labeled, key=int)
    member = {r: set(labeled[r]) for r in regimes}
    rows = ["id,image,split," + ",".join(f"labeled_{r}" for r in regimes)]
    for split, group in (("train", train), ("val", val)):
        rows += [f"{i},ISIC_{i},{split}," + ",".join(str(int(i in member[r])) for r in regimes) for i in group]
    write_text(out.parent / "isic_split.csv", "\n".join(rows) + "\n")
    return {
        "dataset": "isic",
        "out": str(out),
        "train": f"{len(train)} images",
        "labeled": {r: f"{len(labeled[r])} images" for r in regimes},
        "val": f"{len(val)} images",
    }
