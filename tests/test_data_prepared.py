"""The prepared file's format 2: 8-bit images behind a lossless predictor, compressed; exact labels;
older files refused with the fix."""

import cv2
import h5py
import numpy as np
import pytest
from conftest import make_tiny_acdc
from data_helpers import read_h5, run_cli

from ugpcl.data.prepared import (FORMAT_VERSION, IMAGE_ENCODING, decode_images, encode_images, load_prepared,
                                 quantize)
from ugpcl.errors import UserError


def test_predictor_roundtrip_is_exact_through_wraparound():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 2, 9, 7), dtype=np.uint8)
    images[0, 0] = np.indices((9, 7)).sum(0) % 2 * 255  # a checkerboard of 0 and 255: every residual wraps
    assert np.array_equal(decode_images(encode_images(images)), images)
    assert encode_images(images).dtype == np.uint8 and not np.shares_memory(encode_images(images), images)


def test_predictor_residual_is_left_plus_up_minus_upper_left():
    image = np.array([[10, 12, 15], [11, 14, 20], [9, 9, 250]], dtype=np.uint8)
    expected = np.array([[10, 2, 3], [1, 1, 3], [-2, -3, 235]]) % 256  # x - (left + up - upper left)
    assert np.array_equal(encode_images(image[None]), expected[None].astype(np.uint8))
    ramp = np.add.outer(np.arange(6), 2 * np.arange(8)).astype(np.uint8)  # a plane: predicted exactly
    residual = encode_images(ramp[None])[0]
    assert residual[0, 0] == 0 and (residual[1:, 1:] == 0).all()


def test_quantize_rounds_to_grey_levels_and_refuses_what_is_not_an_image():
    levels = np.arange(256) / 255
    assert np.array_equal(quantize(levels.astype(np.float32)), np.arange(256))
    assert quantize(np.array([0.49 / 255, 0.51 / 255, 1 + 1e-7, -1e-7], np.float32)).tolist() == [0, 1, 255, 0]
    data = np.arange(6, dtype=np.uint8)
    assert quantize(data) is data
    for bad in (np.array([0.5, 1.1]), np.array([-0.1, 0.5]), np.array([np.nan, 0.5]), np.array([1, 2], np.int16)):
        with pytest.raises(ValueError):
            quantize(bad)


def test_written_compressed_and_read_back(acdc_dir, tmp_path):
    path = make_tiny_acdc(acdc_dir, tmp_path / "tiny.h5", size=32, n_slices=4, n_unlabeled=2)
    p = load_prepared(path)
    assert p.train.images.dtype == np.uint8 and p.train.images.shape == (6, 1, 32, 32)
    with h5py.File(path) as f:
        assert f.attrs["format_version"] == FORMAT_VERSION == 3
        for split in ("train", "val"):
            images, labels = f[f"{split}/images"], f[f"{split}/labels"]
            assert images.attrs["encoding"] == IMAGE_ENCODING and images.dtype == np.uint8
            assert images.chunks == (1, 1, 32, 32) and images.compression == "gzip"
            assert labels.chunks == (1, 32, 32) and labels.compression == "gzip"
            assert np.array_equal(images[()], encode_images(getattr(p, split).images))  # the documented layout
    # the images are the float slices to half a grey level; the labels are exact
    for i, name in enumerate(p.train.names):
        image, label = read_h5(acdc_dir / "data" / "slices" / f"{name}.h5")
        resized = cv2.resize(image, (32, 32), interpolation=cv2.INTER_LINEAR)
        assert np.abs(p.train.images[i, 0] / 255 - resized).max() <= 0.5 / 255 + 1e-6
        assert np.array_equal(p.train.labels[i], cv2.resize(label, (32, 32), interpolation=cv2.INTER_NEAREST_EXACT))
    for name, original in p.val_original.items():
        assert np.array_equal(original, read_h5(acdc_dir / "data" / "slices" / f"{name}.h5")[1])


@pytest.mark.parametrize("version, says", [(1, "prepared by an older ugpcl (format_version 1"),
                                           (2, "format_version 2; this one reads 3: nearest resizing on the "
                                               "pixel-centre grid"),
                                           (4, "format_version 4: not written by this version")])
def test_other_format_versions_refused_with_the_fix(acdc_dir, tmp_path, version, says):
    path = make_tiny_acdc(acdc_dir, tmp_path / "acdc.h5", size=16, n_slices=2, n_unlabeled=0)
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = version
    with pytest.raises(UserError) as info:
        load_prepared(path)
    assert says in str(info.value) and "`ugpcl prepare acdc`" in str(info.value) and str(path) in str(info.value)


def test_unknown_image_encoding_is_an_unreadable_file(acdc_dir, tmp_path):
    path = make_tiny_acdc(acdc_dir, tmp_path / "acdc.h5", size=16, n_slices=2, n_unlabeled=0)
    with h5py.File(path, "a") as f:
        f["val/images"].attrs["encoding"] = "raw"
    with pytest.raises(UserError, match="image encoding 'raw'"):
        load_prepared(path)


def test_real_acdc_at_224_is_under_60_mb(acdc_dir, tmp_path):
    """The issue's target: the whole of ACDC at 224 px (478 MB as float32 in format 1)."""
    out = tmp_path / "acdc.h5"
    run_cli("prepare", "acdc", "--out", str(out), "--set", "data.acdc.source=local",
            "--set", f"data.acdc.local_dir={acdc_dir}")
    assert out.stat().st_size < 60e6
    p = load_prepared(out)
    assert p.train.images.shape == (1312, 1, 224, 224) and p.val.images.shape == (590, 1, 224, 224)


def test_a_regime_the_file_lacks_names_the_dataset_key_and_preparing_again(tiny_acdc):
    with pytest.raises(UserError, match=r"labeled regime '5' not in this file \(has tiny\)") as err:
        load_prepared(tiny_acdc).labeled_indices("5")
    assert "data.acdc.regimes" in err.value.fix and "`ugpcl prepare acdc`" in err.value.fix
    assert "<dataset>" not in err.value.fix


def test_a_missing_prepared_file_names_the_command_that_writes_it(tmp_path):
    from test_engine import INFO, tiny_cfg

    from ugpcl.engine.trainer import Trainer

    cfg = tiny_cfg()
    cfg["paths"]["results"] = str(tmp_path)
    with pytest.raises(UserError, match="prepared data file not found") as err:
        Trainer(cfg, INFO, tmp_path / "run")
    assert str(tmp_path / "demo" / "data" / "acdc.h5") in str(err.value)
    assert "`ugpcl prepare acdc --profile demo`" in err.value.fix
    with pytest.raises(UserError, match="prepared data file not found") as err:
        load_prepared(tmp_path / "elsewhere.h5")
    assert "ugpcl prepare <dataset> --profile <profile>" in err.value.fix
