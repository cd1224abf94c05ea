"""ISIC 2018 Task 1: the two official zips (or their unzipped folders) -> the prepared HDF5 file.

Once fetched, ISIC is a dataset of the folder kind (`folder.py`): the image `ISIC_<id>.jpg`
pairs with the mask `ISIC_<id>_segmentation.png` (0 background, 255 lesion), each image its own
group keyed by its numeric id. The split and the labeled subsets are `split.py`'s: a pure
function of the ids and `split_seed`, the first round(n * a / (a + b)) ids of a seeded hash order
train (1815 / 779 of the 2594 images), and a regime of k images the first k train ids of
another seeded order, so the 91 are a subset of the 181. `isic_split.csv` beside the prepared
file lists where every image went.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from ..config import dataset_config, raw_dir, resolve_path
from ..errors import UserError
from .archive import extract_folder, is_extracted
from .download import download
from .folder import inspect_spec, prepare_spec
from .folder_files import FolderSpec
from .layout import ISIC_GT_FOLDER, ISIC_INPUT_FOLDER

CLASSES = {0: "background", 255: "lesion"}
INPUT_FOLDER, GT_FOLDER = ISIC_INPUT_FOLDER, ISIC_GT_FOLDER


def _archive_name(url: str) -> str:
    return Path(urlparse(url).path).name


def fetch_folders(cfg: dict, name: str) -> tuple[Path, Path, dict]:
    """Make sure the configured raw ISIC folders exist; returns (input dir, gt dir, provenance)."""
    isic = dataset_config(cfg, name)
    source = isic["source"]
    if source == "local":
        if not isic["local_dir"]:
            raise UserError(f"data.{name}.source is local but data.{name}.local_dir is not set",
                            fix=f"set data.{name}.local_dir to the folder holding {INPUT_FOLDER}/ and {GT_FOLDER}/")
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


def spec(cfg: dict, name: str, input_dir: Path, gt_dir: Path) -> FolderSpec:
    """ISIC as a folder dataset."""
    isic = dataset_config(cfg, name)
    return FolderSpec(
        name=name, images=input_dir, masks=gt_dir, image_pattern="{id}.jpg", mask_pattern="{id}_segmentation.png",
        classes=CLASSES, split=list(isic["split"]), seed=isic["split_seed"], regimes=dict(isic["regimes"]),
        group=r"^ISIC_(\d+)$",
        folder_key={"images": f"data.{name}.local_dir", "masks": f"data.{name}.local_dir",
                    "split": f"data.{name}.split"},
        mask_fix="masks must be binary 0/255 (the official ground truth is)",
    )


def fetch(cfg: dict, name: str) -> list[Path]:
    input_dir, gt_dir, _ = fetch_folders(cfg, name)
    return [input_dir, gt_dir]


def prepare(cfg: dict, name: str, out: str | Path) -> dict:
    """Fetch if needed, then convert into `out` and write `<name>_split.csv` beside it."""
    input_dir, gt_dir, provenance = fetch_folders(cfg, name)
    return prepare_spec(spec(cfg, name, input_dir, gt_dir), out, cfg["data"]["image_size"],
                        source=provenance["source"], provenance=provenance, train_cfg=cfg["train"])


def inspect(cfg: dict, name: str) -> dict:
    """Fetch if needed, then survey the folders (see folder.inspect_spec)."""
    input_dir, gt_dir, _ = fetch_folders(cfg, name)
    return inspect_spec(spec(cfg, name, input_dir, gt_dir), cfg["data"]["image_size"], cfg["train"])
