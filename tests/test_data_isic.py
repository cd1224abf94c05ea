"""ISIC preparation on the real mini set (source local), through the official zips served over
HTTP, and the resumable downloader itself."""

import csv
import hashlib
import random

import cv2
import numpy as np
import pytest
from data_helpers import http_server, mini_isic, run_cli, sha256, zip_folder

from ugpcl.data.download import download
from ugpcl.data.isic import GT_FOLDER, INPUT_FOLDER
from ugpcl.data.split import labeled_ids, split_ids
from ugpcl.data.prepared import load_prepared
from ugpcl.errors import UserError

SMALL = ["data.image_size=64", 'data.isic.regimes={"5": 5, "10": 10}']


def prepare_local(folder, out, *extra):
    args = ["prepare", "isic", "--out", str(out), "--set", "data.isic.source=local",
            "--set", f"data.isic.local_dir={folder}"]
    for item in [*SMALL, *extra]:
        args += ["--set", item]
    run_cli(*args)
    return load_prepared(out)


@pytest.fixture(scope="module")
def isic_prepared(isic_dir, tmp_path_factory):
    return prepare_local(isic_dir, tmp_path_factory.mktemp("isic") / "isic.h5")


def test_every_pair_prepared(isic_prepared, isic_dir):
    p = isic_prepared
    ids = sorted(f.stem for f in (isic_dir / INPUT_FOLDER).glob("ISIC_*.jpg"))
    assert sorted(p.train.names + p.val.names) == ids and len(ids) == 60
    assert (len(p.train), len(p.val)) == (42, 18)          # round(60 * 1815 / 2594) = 42
    assert p.val_cases == p.val.names and not p.val_original
    assert p.train_groups == [n.removeprefix("ISIC_") for n in p.train.names]  # an image is its own group
    assert (p.num_classes, p.in_channels, p.class_names) == (2, 3, ["background", "lesion"])
    assert p.train.images.shape == (42, 3, 64, 64) and p.train.images.dtype == np.uint8
    assert p.val.labels.shape == (18, 64, 64) and set(np.unique(p.val.labels)) == {0, 1}


def test_pixels_follow_the_source(isic_prepared, isic_dir):
    p = isic_prepared
    for i in range(0, len(p.train), 10):
        name = p.train.names[i]
        mask = cv2.imread(str(isic_dir / GT_FOLDER / f"{name}_segmentation.png"), cv2.IMREAD_GRAYSCALE)
        assert abs(p.train.labels[i].mean() - (mask > 0).mean()) < 0.02
    red, green, blue = p.train.images.reshape(len(p.train), 3, -1).mean(axis=(0, 2))
    assert red > green and red > blue, "channels must be RGB (skin is red), not OpenCV's BGR"


def test_split_reproducible_and_nested(isic_prepared, isic_dir, tmp_path):
    again = prepare_local(isic_dir, tmp_path / "again.h5")
    assert again.train.names == isic_prepared.train.names and again.val.names == isic_prepared.val.names
    assert np.array_equal(again.train.images, isic_prepared.train.images)
    small, large = (set(isic_prepared.train.names[i] for i in isic_prepared.labeled_indices(r)) for r in ("5", "10"))
    assert len(small) == 5 and len(large) == 10 and small < large

    other_seed = prepare_local(isic_dir, tmp_path / "seed.h5", "data.isic.split_seed=7")
    assert other_seed.train.names != isic_prepared.train.names

    rows = list(csv.DictReader((tmp_path / "isic_split.csv").open()))
    assert {r["case"] for r in rows if r["split"] == "train"} == set(other_seed.train.names)
    assert {r["case"] for r in rows if r["labeled_5"] == "1"} == {
        other_seed.train.names[i] for i in other_seed.labeled_indices("5")}


def test_split_is_independent_of_listing_order_and_full_size_counts():
    ids = [f"{i:07d}" for i in random.Random(0).sample(range(10**6), 2594)]
    train, val = split_ids(ids, [1815, 779], 2022)
    shuffled = random.Random(1).sample(ids, len(ids))
    assert split_ids(shuffled, [1815, 779], 2022) == (train, val)
    assert (len(train), len(val)) == (1815, 779) and not set(train) & set(val)
    labeled = labeled_ids(train, {"91": 91, "181": 181}, 2022)
    assert labeled == labeled_ids(random.Random(2).sample(train, len(train)), {"91": 91, "181": 181}, 2022)
    assert len(labeled["91"]) == 91 and set(labeled["91"]) < set(labeled["181"]) <= set(train)


def test_official_zips_downloaded_and_prepared(isic_dir, tmp_path):
    folder = mini_isic(isic_dir, tmp_path / "mini", 12)
    zips = {f"{name}.zip": zip_folder(folder / name, tmp_path / f"{name}.zip").read_bytes()
            for name in (INPUT_FOLDER, GT_FOLDER)}
    raw, out = tmp_path / "raw", tmp_path / "out" / "isic.h5"
    with http_server(zips) as (url, server):
        overrides = [f"paths.raw={raw}", *SMALL, 'data.isic.regimes={"2": 2}']
        for key, name in (("input", INPUT_FOLDER), ("gt", GT_FOLDER)):
            data = zips[f"{name}.zip"]
            overrides += [f"data.isic.{key}_url={url}/{name}.zip", f"data.isic.{key}_bytes={len(data)}",
                          f"data.isic.{key}_sha256='{sha256(tmp_path / f'{name}.zip')}'"]
        args = [a for o in overrides for a in ("--set", o)]
        run_cli("prepare", "isic", "--out", str(out), *args)
        assert len(server.ranges_seen) == 2
        run_cli("fetch", "isic", *args)
        assert len(server.ranges_seen) == 2, "verified archives are not downloaded again"
    official = load_prepared(out)
    local = prepare_local(folder, tmp_path / "local.h5", 'data.isic.regimes={"2": 2}')
    assert official.attrs["source"] == "official"
    assert official.train.names == local.train.names and official.val.names == local.val.names
    assert np.array_equal(official.train.images, local.train.images)
    assert np.array_equal(official.val.labels, local.val.labels)
    assert (raw / "isic" / f"{INPUT_FOLDER}.zip.verified").is_file()
    assert not list((raw / "isic").glob("*.part"))


def test_download_resumes_after_a_dropped_connection(tmp_path):
    data = np.random.default_rng(0).bytes(300_000)
    digest = hashlib.sha256(data).hexdigest()
    dest = tmp_path / "big.zip"
    with http_server({"big.zip": data}, drop_after=100_000) as (url, server):
        with pytest.raises(UserError, match="resume"):
            download(f"{url}/big.zip", dest, sha256=digest, size=len(data))
        part = tmp_path / "big.zip.part"
        kept = part.stat().st_size
        assert 0 < kept <= 100_000 and part.read_bytes() == data[:kept] and not dest.exists()
        download(f"{url}/big.zip", dest, sha256=digest, size=len(data))
        assert server.ranges_seen == [None, f"bytes={kept}-"]
    assert dest.read_bytes() == data and not part.exists()


def test_download_restarts_when_the_server_ignores_ranges(tmp_path):
    data = np.random.default_rng(1).bytes(50_000)
    digest = hashlib.sha256(data).hexdigest()
    (tmp_path / "f.zip.part").write_bytes(data[:20_000])
    with http_server({"f.zip": data}, honour_range=False) as (url, server):
        download(f"{url}/f.zip", tmp_path / "f.zip", sha256=digest)
        assert server.ranges_seen == ["bytes=20000-"]
    assert (tmp_path / "f.zip").read_bytes() == data
