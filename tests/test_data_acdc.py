"""ACDC preparation on the real SSL4MIS data (source local) and through the official zip path."""

import json

import cv2
import numpy as np
import pytest
from data_helpers import fake_acdc_zip, read_h5, run_cli, sha256, write_lists

from ugpcl.data.prepared import load_prepared


@pytest.fixture(scope="session")
def acdc_prepared(acdc_dir, tmp_path_factory):
    """The real ACDC prepared once (at 64 px to stay fast; the zip test below uses 224 px)."""
    out = tmp_path_factory.mktemp("acdc") / "acdc.h5"
    run_cli("prepare", "acdc", "--out", str(out), "--set", f"data.image_size={SIZE}",
            "--set", "data.acdc.source=local", "--set", f"data.acdc.local_dir={acdc_dir}")
    return load_prepared(out)


SIZE = 64


def patients(names):
    return {n[:10] for n in names}


def test_split_counts_and_regimes(acdc_prepared, acdc_dir):
    p = acdc_prepared
    assert (p.dataset, p.num_classes, p.class_names) == ("acdc", 4, ["background", "RV", "Myo", "LV"])
    assert len(p.train) == 1312 and len(patients(p.train.names)) == 70
    assert p.train.names == (acdc_dir / "train_slices.list").read_text().split()
    assert p.train_groups == [n[:10] for n in p.train.names]
    for regime, n_slices, n_patients in (("68", 68, 3), ("136", 136, 7)):
        idx = p.labeled_indices(regime)
        assert np.array_equal(idx, np.arange(n_slices))
        labeled = patients(p.train.names[i] for i in idx)
        assert len(labeled) == n_patients
        unlabeled = patients(p.train.names[i] for i in p.unlabeled_indices(regime))
        assert not labeled & unlabeled, "a labeled patient must have all its slices labeled"


def test_validation_volumes(acdc_prepared, acdc_dir):
    p = acdc_prepared
    expected = (acdc_dir / "val.list").read_text().split() + (acdc_dir / "test.list").read_text().split()
    slices = p.case_slices()
    assert list(slices) == expected and len(expected) == 60
    assert len(patients(expected)) == 30
    assert not patients(expected) & patients(p.train.names)
    for case in expected[::7]:
        image, label = read_h5(acdc_dir / "data" / f"{case}.h5")
        assert np.array_equal(p.val_original[case], label)
        assert len(slices[case]) == len(label)
        assert [p.val.names[i] for i in slices[case]] == [f"{case}_slice_{k}" for k in range(len(label))]
        k = len(label) // 2  # images resized nearest by default, as both reference codes (zoom order 0)
        resized = cv2.resize(image[k], (SIZE, SIZE), interpolation=cv2.INTER_NEAREST_EXACT)
        # stored as round(255 x): within half a grey level of the float slice
        np.testing.assert_allclose(p.val.images[slices[case][k], 0] / 255, resized, atol=0.5 / 255 + 1e-6)
    assert p.val_spacing == {}  # the SSL4MIS h5 files hold no voxel size: distances stay in voxels
    assert json.loads(p.attrs["provenance"])["interpolation"] == "nearest"


@pytest.mark.parametrize("size, least", [(224, 0.99), (96, 0.93)])
def test_labels_resized_down_and_back_keep_their_dice(acdc_dir, size, least):
    """Evaluation resizes a prediction at image_size back to the volume's resolution: a perfect one
    (the labels as prepared) must score close to 1 there. With OpenCV's corner-pixel nearest on
    the way down and centred nearest on the way back, these volumes scored 0.953 at 224, 0.891 at 96."""
    from ugpcl.data.resize import resize_slices
    from ugpcl.metrics import resize_labels

    cases = (acdc_dir / "val.list").read_text().split()[:12]
    dice = []
    for case in cases:
        label = read_h5(acdc_dir / "data" / f"{case}.h5")[1]
        back = resize_labels(resize_slices(label, size, "nearest"), label.shape[1:])
        dice += [2 * ((back == c) & (label == c)).sum() / ((back == c).sum() + (label == c).sum()) for c in (1, 2, 3)]
    assert np.mean(dice) >= least


def test_arrays_at_image_size(acdc_prepared):
    p = acdc_prepared
    assert p.image_size == SIZE and p.in_channels == 1
    assert p.train.images.shape == (1312, 1, SIZE, SIZE) and p.train.images.dtype == np.uint8
    assert p.train.labels.shape == (1312, SIZE, SIZE) and p.train.labels.dtype == np.uint8
    assert p.val.images.shape[1:] == (1, SIZE, SIZE) and len(p.val) == p.val.labels.shape[0] == 590
    for split in (p.train, p.val):
        assert split.images.min() == 0 and split.images.max() == 255  # every volume is min-max scaled
        assert set(np.unique(split.labels)) == {0, 1, 2, 3}


def test_class_fractions_match_source(acdc_prepared, acdc_dir):
    p = acdc_prepared
    every = slice(None, None, 3)  # a third of the slices reads fast and is plenty for the check
    counts = np.zeros(4)
    for name in p.train.names[every]:
        counts += np.bincount(read_h5(acdc_dir / "data" / "slices" / f"{name}.h5")[1].ravel(), minlength=4)
    source = counts / counts.sum()
    prepared = np.bincount(p.train.labels[every].ravel(), minlength=4) / p.train.labels[every].size
    # nearest resizing to a square changes fractions only through the aspect ratio and rounding
    np.testing.assert_allclose(prepared, source, rtol=0.05)


def test_official_zip_matches_ssl4mis_orientation(acdc_dir, tmp_path):
    """Real volumes written as Creatis NIfTI (X, Y, Z) come out as the SSL4MIS (Z, Y, X) arrays."""
    cases = (acdc_dir / "test.list").read_text().split()[:6]   # 3 patients, ED and ES
    volumes = {c: read_h5(acdc_dir / "data" / f"{c}.h5") for c in cases}
    scaled = {c: (img * 700 + 13, lab) for c, (img, lab) in volumes.items()}  # raw scanner-like units
    archive = fake_acdc_zip(tmp_path / "ACDC.zip", scaled, extra={"ACDC/database/testing/README": b"x"},
                            zooms=(1.5, 1.25, 10.0))
    train_slices = [f"{c}_slice_{k}" for c in cases[:4] for k in reversed(range(1, len(volumes[c][0]) + 1))]
    lists = write_lists(tmp_path / "lists", train_slices, cases[4:5], cases[5:])
    out = tmp_path / "acdc.h5"
    run_cli("prepare", "acdc", "--out", str(out), "--set", "data.image_size=224",
            "--set", f"data.acdc.archive={archive}", "--set", f"data.acdc.sha256='{sha256(archive)}'",
            "--set", f"data.acdc.lists={lists}", "--set", 'data.acdc.regimes={"1": 1}',
            "--set", "data.acdc.interpolation=bilinear")
    p = load_prepared(out)
    provenance = json.loads(p.attrs["provenance"])
    assert p.attrs["source"] == "official" and provenance["archive"] == str(archive)
    assert p.train.names == train_slices
    assert np.array_equal(p.labeled_indices("1"), np.arange(len(volumes[cases[0]][0]) * 2))
    for i, name in enumerate(p.train.names):
        case, k = name.rsplit("_slice_", 1)
        image, label = volumes[case]
        np.testing.assert_allclose(p.train.images[i, 0] / 255, cv2.resize(image[int(k) - 1], (224, 224)),
                                   atol=0.5 / 255 + 1e-5)
        assert np.array_equal(p.train.labels[i],
                              cv2.resize(label[int(k) - 1], (224, 224), interpolation=cv2.INTER_NEAREST_EXACT))
    assert p.train.images.shape[1:] == (1, 224, 224) and p.val.labels.shape[1:] == (224, 224)
    for case in cases[4:]:
        assert np.array_equal(p.val_original[case], volumes[case][1])
        assert p.val_spacing[case] == (10.0, 1.25, 1.5)  # the NIfTI voxel size, as (z, y, x) like the arrays


def test_creatis_zip_and_ssl4mis_folder_prepare_the_same_file(acdc_dir, tmp_path):
    """The shipped lists name cases and slices as SSL4MIS's data: frame01/frame02 for ED/ES, which
    the Creatis zip names by their cine frame numbers (Info.cfg), and slices counted from 1. Two
    real training patients, rebuilt as whole volumes from their slices 1..depth (which cover each
    volume: 1312 + the validation volumes' 590 = ACDC's 1902 slices), and two validation volumes,
    written as the Creatis zip, prepare to the same arrays as from the SSL4MIS folder."""
    from data_helpers import mini_acdc_folder

    folder, lists = mini_acdc_folder(acdc_dir, tmp_path / "ssl4mis", train_patients=2, val_cases=2)
    names = (lists / "train_slices.list").read_text().split()
    volumes = {}
    for case in dict.fromkeys(n.rsplit("_slice_", 1)[0] for n in names):
        depth = sum(n.startswith(case + "_slice_") for n in names)
        pairs = [read_h5(folder / "data" / "slices" / f"{case}_slice_{k}.h5") for k in range(1, depth + 1)]
        volumes[case] = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    for list_name in ("val.list", "test.list"):
        for case in (lists / list_name).read_text().split():
            volumes[case] = read_h5(folder / "data" / f"{case}.h5")
    assert {c[-7:] for c in volumes} == {"frame01", "frame02"}
    archive = fake_acdc_zip(tmp_path / "ACDC.zip", volumes)
    common = ["--set", "data.image_size=64", "--set", f"data.acdc.lists={lists}", "--set", 'data.acdc.regimes={"1": 1}']
    run_cli("prepare", "acdc", "--out", str(tmp_path / "zip.h5"), *common, "--set", f"data.acdc.archive={archive}",
            "--set", f"data.acdc.sha256='{sha256(archive)}'")
    run_cli("prepare", "acdc", "--out", str(tmp_path / "folder.h5"), *common, "--set", "data.acdc.source=local",
            "--set", f"data.acdc.local_dir={folder}")
    z, f = load_prepared(tmp_path / "zip.h5"), load_prepared(tmp_path / "folder.h5")
    assert z.attrs["source"] == "official" and f.attrs["source"] == "local"
    assert z.train.names == f.train.names == names
    assert np.array_equal(z.train.images, f.train.images) and np.array_equal(z.train.labels, f.train.labels)
    assert z.val.names == f.val.names
    assert np.array_equal(z.val.images, f.val.images) and np.array_equal(z.val.labels, f.val.labels)
    for case in z.val_original:
        assert np.array_equal(z.val_original[case], f.val_original[case])
