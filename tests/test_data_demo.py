"""The synthetic demo data: deterministic, in the official raw layouts, prepared by the same code."""

import time

import numpy as np
import pytest
from data_helpers import config, folder_state, run_cli

from ugpcl.data import stage
from ugpcl.data.layout import ISIC_GT_FOLDER as GT_FOLDER, ISIC_INPUT_FOLDER as INPUT_FOLDER
from ugpcl.data.prepared import load_prepared


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Both demo datasets prepared with the demo profile; returns (config, acdc, isic, seconds)."""
    raw = tmp_path_factory.mktemp("raw")
    cfg = config(f"paths.raw={raw}", f"paths.results={raw.parent / 'results'}", profile="demo")
    start = time.perf_counter()
    acdc_summary = stage.prepare(cfg, "acdc")
    isic_summary = stage.prepare(cfg, "isic")
    seconds = time.perf_counter() - start
    return cfg, load_prepared(acdc_summary["out"]), load_prepared(isic_summary["out"]), seconds


def centroid_x(labels, cls):
    ys, xs = np.nonzero(labels == cls)
    return xs.mean()


def test_demo_acdc_prepared(demo):
    cfg, p, _, _ = demo
    d = cfg["data"]["demo"]
    assert str(p.path).endswith("results/demo/data/acdc.h5")
    assert len(p.train) == d["acdc_train_patients"] * 2 * d["acdc_slices"]
    assert len({n[:10] for n in p.train.names}) == d["acdc_train_patients"]
    assert len(p.val_original) == 2 * d["acdc_val_patients"] and len(p.val) == len(p.val_original) * d["acdc_slices"]
    assert not {n[:10] for n in p.train.names} & {c[:10] for c in p.val_cases}
    for regime, patients in cfg["data"]["acdc"]["regimes"].items():
        idx = p.labeled_indices(regime)
        assert np.array_equal(idx, np.arange(patients * 2 * d["acdc_slices"]))
    assert p.train.images.shape[1:] == (1, 64, 64) and p.train.images.dtype == np.uint8
    for split in (p.train, p.val):
        fractions = np.bincount(split.labels.ravel(), minlength=4) / split.labels.size
        assert fractions[0] > 0.7 and (fractions[1:] > 0.005).all()
    for volume in p.val_original.values():
        assert volume.shape[:2] == (d["acdc_slices"], d["acdc_size"]) and volume.shape[2] <= d["acdc_size"]
    for spacing in p.val_spacing.values():  # the demo NIfTI's voxel size (1.4, 1.4, 10) mm, as (z, y, x)
        assert spacing == pytest.approx((10.0, 1.4, 1.4))
    assert set(p.val_spacing) == set(p.val_original)


def test_demo_acdc_anatomy_and_orientation(demo):
    _, p, _, _ = demo
    base = [i for i, n in enumerate(p.train.names) if n.endswith("_slice_0")]
    for i in base[:6]:
        labels, image = p.train.labels[i], p.train.images[i, 0]
        # the phantom puts the RV to the image left of the LV; a transposed volume would not
        assert centroid_x(labels, 1) < centroid_x(labels, 3)
        means = [image[labels == c].mean() for c in range(4)]
        assert means[3] > means[2] and means[1] > means[2], "blood pools bright, myocardium dark"


def test_demo_isic_prepared(demo):
    cfg, _, p, _ = demo
    n = cfg["data"]["demo"]["isic_images"]
    assert len(p.train) + len(p.val) == n and len(p.train) == round(n * 1815 / 2594)
    assert p.train.images.shape[1:] == (3, 64, 64) and p.train.images.dtype == np.uint8
    small, large = (set(p.labeled_indices(r)) for r in ("91", "181"))
    assert (len(small), len(large)) == (4, 8) and small < large
    lesion = p.train.labels.astype(bool)
    assert 0.02 < lesion.mean() < 0.4 and lesion.reshape(len(p.train), -1).any(1).all()
    brightness = p.train.images.mean(1)
    assert brightness[lesion].mean() < brightness[~lesion].mean() - 30, "lesions are darker than skin"
    csv = (p.path.parent / "isic_split.csv").read_text().splitlines()
    assert csv[0] == "case,group,split,labeled_91,labeled_181" and len(csv) == n + 1


def test_demo_preparation_is_fast(demo):
    assert demo[3] < 20  # a few seconds on an idle machine; generous for a loaded CI runner


def test_demo_data_is_deterministic(tmp_path):
    run_cli("demo-data", "--out", str(tmp_path / "a"), "--profile", "demo")
    run_cli("demo-data", "--out", str(tmp_path / "b"), "--profile", "demo")
    run_cli("demo-data", "--out", str(tmp_path / "c"), "--profile", "demo", "--seed", "5")
    a, b, c = (folder_state(tmp_path / x) for x in "abc")
    assert sorted(a) == sorted(c) == [
        "acdc/ACDC.zip", "acdc/demo.json", "acdc/lists/test.list", "acdc/lists/train.list",
        "acdc/lists/train_slices.list", "acdc/lists/val.list",
        "isic/ISIC2018_Task1-2_Training_Input.zip", "isic/ISIC2018_Task1_Training_GroundTruth.zip", "isic/demo.json"]
    assert a == b
    assert a["acdc/ACDC.zip"] != c["acdc/ACDC.zip"] and a["isic/demo.json"] != c["isic/demo.json"]


def test_demo_regenerated_when_its_settings_change(tmp_path):
    cfg = config(f"paths.raw={tmp_path}", profile="demo")
    first = stage.fetch(cfg, "isic")
    assert len(list(first[0].glob("ISIC_*.jpg"))) == cfg["data"]["demo"]["isic_images"]
    six = config(f"paths.raw={tmp_path}", "data.demo.isic_images=6", 'data.isic.regimes={"2": 2}', profile="demo")
    again = stage.fetch(six, "isic")
    assert again == first and len(list(again[0].glob("ISIC_*.jpg"))) == 6
    assert len(list((tmp_path / "demo" / "isic" / GT_FOLDER).glob("*.png"))) == 6
    assert (tmp_path / "demo" / "isic" / INPUT_FOLDER / "LICENSE.txt").exists()
