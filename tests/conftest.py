import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()

# Test this checkout's package (and make the subprocesses the tests start do the same), whichever
# checkout the virtual environment was installed from: git worktrees share one .venv.
sys.path.insert(0, str(REPO / "src"))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)

# Two cores, often two pytest workers: one intra-op thread per worker avoids oversubscription.
torch.set_num_threads(int(os.environ.get("UGPCL_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def acdc_dir() -> Path:
    path = SHARED_DATA / "ACDC"
    assert path.is_dir(), f"real ACDC data expected at {path} (../shared/data beside the repo)"
    return path


@pytest.fixture(scope="session")
def isic_dir() -> Path:
    path = SHARED_DATA / "ISIC2018-mini"
    assert path.is_dir(), f"real ISIC data expected at {path} (../shared/data beside the repo)"
    return path


def make_tiny_acdc(acdc_dir: Path, out: Path, size: int = 64, n_slices: int = 8, n_unlabeled: int = 8) -> Path:
    """A small prepared file from real ACDC training slices: `n_slices` labeled slices that are also
    the validation cases (with their original-resolution labels), plus `n_unlabeled` unlabeled ones."""
    import cv2
    import h5py
    import numpy as np

    from ugpcl.data.prepared import write_prepared

    names = (acdc_dir / "train_slices.list").read_text().split()
    # mid-ventricular slices of the first patients: every class present
    chosen = [n for n in names if n.endswith(("_slice_4", "_slice_5"))][: n_slices + n_unlabeled]
    images, labels, originals = [], [], {}
    for name in chosen:
        with h5py.File(acdc_dir / "data" / "slices" / f"{name}.h5", "r") as f:
            img, lab = f["image"][()], f["label"][()]
        images.append(cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR))
        labels.append(cv2.resize(lab, (size, size), interpolation=cv2.INTER_NEAREST_EXACT))
        originals[name] = lab
    images = np.stack(images)[:, None].astype(np.float32)
    labels = np.stack(labels).astype(np.uint8)
    val = slice(0, n_slices)
    return write_prepared(
        out,
        dataset="acdc",
        class_names=["background", "RV", "Myo", "LV"],
        train_images=images,
        train_labels=labels,
        train_names=chosen,
        train_groups=[n.split("_")[0] for n in chosen],
        labeled={"tiny": np.arange(n_slices)},
        val_images=images[val],
        val_labels=labels[val],
        val_names=chosen[val],
        val_cases=chosen[val],
        val_original={n: originals[n] for n in chosen[val]},
        source="test",
    )


@pytest.fixture(scope="session")
def tiny_acdc(acdc_dir, tmp_path_factory) -> Path:
    return make_tiny_acdc(acdc_dir, tmp_path_factory.mktemp("tiny") / "acdc.h5")


@pytest.fixture(scope="session")
def acdc_batch(acdc_dir):
    """4 real ACDC slices of one volume at 64 px: 2 labeled, then 2 unlabeled (a methods.base.Batch)."""
    import h5py
    import numpy as np
    import torch.nn.functional as F

    from ugpcl.methods.base import Batch

    SIZE = 64
    images, labels = [], []
    for k in (6, 7, 5, 8):
        with h5py.File(acdc_dir / "data" / "slices" / f"patient099_frame01_slice_{k}.h5", "r") as f:
            images.append(torch.from_numpy(f["image"][()]))
            labels.append(torch.from_numpy(f["label"][()].astype(np.int64)))
    image = F.interpolate(torch.stack(images)[:, None], size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    label = F.interpolate(torch.stack(labels)[:, None].float(), size=(SIZE, SIZE), mode="nearest")[:, 0].long()
    assert (label[:2] > 0).any(), "the labeled slices should contain heart structures"
    return Batch(image, label[:2], 2)


def pytest_configure(config):
    config.addinivalue_line("markers", "workflow: the demo study end to end through Snakemake and DVC (slow)")


# No test ordering here. Under `make test` (pytest -n 2 --dist loadfile) xdist hands out the files
# with the most tests first, so the demo workflow file (five tests, about seven minutes) runs near
# the end, mostly alone, and its Snakemake jobs get both cores. Started first, beside the offline
# installs, it ran slower and so did they: suite 14:10 against 13:39 (2026-12-07, fresh clone, with
# `--no-loadscope-reorder` and the slowest files first). The hook that stood here, sorting the
# workflow tests first, was all but undone by that reordering by number of tests.
