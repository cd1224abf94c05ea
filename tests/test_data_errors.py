"""Bad input: each case is a corrupted copy in tmp_path. Every failure is a UserError naming the
file at fault, and leaves the output folder exactly as it was (earlier output byte-identical,
no partial or temporary files)."""

import hashlib
import re
import shutil
import zipfile

import cv2
import numpy as np
import pytest
import yaml
from data_helpers import (config, fails_cleanly, fake_acdc_zip, folder_config, folder_state, http_server, isic_pngs,
                          mini_acdc_folder, mini_isic, read_h5, sha256, write_h5, write_lists, zip_folder)

from ugpcl.config import DEFAULT_CONFIG, load_config
from ugpcl.data import stage
from ugpcl.data.download import download
from ugpcl.data.layout import ISIC_GT_FOLDER as GT_FOLDER, ISIC_INPUT_FOLDER as INPUT_FOLDER
from ugpcl.errors import UserError


# ---------------------------------------------------------------- ACDC, SSL4MIS folder


@pytest.fixture
def mini_acdc(acdc_dir, tmp_path):
    folder, lists = mini_acdc_folder(acdc_dir, tmp_path / "ACDC")
    cfg = config("data.image_size=32", "data.acdc.source=local", f"data.acdc.local_dir={folder}",
                 f"data.acdc.lists={lists}", 'data.acdc.regimes={"1": 1}')
    return folder, lists, cfg, tmp_path / "out" / "acdc.h5"


def test_mini_acdc_is_valid(mini_acdc):
    _, _, cfg, out = mini_acdc
    assert stage.prepare(cfg, "acdc", out)["train"].endswith("/ 2 patients")


def _first_slice(folder, lists):
    name = (lists / "train_slices.list").read_text().split()[0]
    return folder / "data" / "slices" / f"{name}.h5"


@pytest.mark.parametrize("corruption, message", [
    ("label", "label values outside 0..3"),
    ("nan", "NaN"),
    ("shape", "image shape"),
    ("garbage", "not a readable SSL4MIS h5 file"),
])
def test_acdc_corrupt_slice(mini_acdc, corruption, message):
    folder, lists, cfg, out = mini_acdc
    path = _first_slice(folder, lists)
    image, label = read_h5(path)
    if corruption == "label":
        label[label.shape[0] // 2, :4] = 4
        write_h5(path, image, label)
    elif corruption == "nan":
        image[3, 3] = np.nan
        write_h5(path, image, label)
    elif corruption == "shape":
        write_h5(path, image, label[:-1])
    else:
        path.write_bytes(path.read_bytes()[:500])
    assert message in fails_cleanly(out, lambda: stage.prepare(cfg, "acdc", out), path)


@pytest.mark.parametrize("list_name", ["train_slices.list", "test.list"])
def test_acdc_list_naming_a_missing_file(mini_acdc, list_name):
    _, lists, cfg, out = mini_acdc
    with open(lists / list_name, "a") as f:
        f.write("patient100_frame01_slice_3\n" if list_name == "train_slices.list" else "patient100_frame01\n")
    text = fails_cleanly(out, lambda: stage.prepare(cfg, "acdc", out), lists / list_name)
    assert "patient100_frame01" in text


def test_acdc_lists_sharing_a_patient(mini_acdc):
    _, lists, cfg, out = mini_acdc
    train_case = (lists / "train_slices.list").read_text().split()[0].rsplit("_slice_", 1)[0]
    with open(lists / "val.list", "a") as f:
        f.write(f"{train_case}\n")
    assert "patient-disjoint" in fails_cleanly(out, lambda: stage.prepare(cfg, "acdc", out), lists)


# ---------------------------------------------------------------- ACDC, official zip


@pytest.fixture
def acdc_zip(acdc_dir, tmp_path):
    """Real volumes of 1 patient (train) + 1 (val, test) for a Creatis-layout zip, and its config."""
    cases = (acdc_dir / "test.list").read_text().split()[:4]
    volumes = {c: read_h5(acdc_dir / "data" / f"{c}.h5") for c in cases}
    train = [f"{c}_slice_{k}" for c in cases[:2] for k in range(1, len(volumes[c][0]) + 1)]  # from 1, as SSL4MIS
    lists = write_lists(tmp_path / "lists", train, cases[2:3], cases[3:])

    def configured(archive, digest=None):
        return config("data.image_size=32", f"data.acdc.archive={archive}", f"data.acdc.lists={lists}",
                      f"data.acdc.sha256='{digest or sha256(archive)}'", 'data.acdc.regimes={"1": 1}')

    return volumes, configured, tmp_path / "out" / "acdc.h5"


def test_acdc_archive_with_wrong_checksum_is_kept_and_refused(acdc_zip, tmp_path):
    volumes, configured, out = acdc_zip
    archive = fake_acdc_zip(tmp_path / "ACDC.zip", volumes)
    cfg = configured(archive, digest="0" * 64)
    fails_cleanly(out, lambda: stage.prepare(cfg, "acdc", out), archive, "0" * 64, sha256(archive))
    assert archive.exists(), "a file the user pointed at is never deleted"


@pytest.mark.parametrize("damage", ["truncated", "flipped byte"])
def test_acdc_corrupt_zip(acdc_zip, tmp_path, damage):
    volumes, configured, out = acdc_zip
    archive = fake_acdc_zip(tmp_path / "ACDC.zip", volumes)
    data = bytearray(archive.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:  # inside the first NIfTI member: the zip's CRC check must catch it
        with zipfile.ZipFile(archive) as zf:
            info = next(i for i in zf.infolist() if i.filename.endswith(".nii.gz"))
        data[info.header_offset + 30 + len(info.filename) + 100] ^= 0xFF
    archive.write_bytes(bytes(data))
    fails_cleanly(out, lambda: stage.prepare(configured(archive), "acdc", out), archive)


def test_acdc_zip_label_outside_range(acdc_zip, tmp_path):
    volumes, configured, out = acdc_zip
    case = list(volumes)[2]
    image, label = volumes[case]
    volumes[case] = image, np.where(label == 3, 7, label).astype(np.uint8)
    archive = fake_acdc_zip(tmp_path / "ACDC.zip", volumes)
    text = fails_cleanly(out, lambda: stage.prepare(configured(archive), "acdc", out), archive, f"{case}_gt.nii.gz")
    assert "label values outside 0..3: [7]" in text


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", "ACDC/../../evil.txt"])
def test_acdc_zip_unsafe_member_path(acdc_zip, tmp_path, member):
    volumes, configured, out = acdc_zip
    archive = fake_acdc_zip(tmp_path / "ACDC.zip", volumes, extra={member: b"pwned"})
    text = fails_cleanly(out, lambda: stage.prepare(configured(archive), "acdc", out), archive)
    assert "unsafe member path" in text and member in text


# ---------------------------------------------------------------- ISIC


@pytest.fixture
def mini(isic_dir, tmp_path):
    folder = mini_isic(isic_dir, tmp_path / "isic", 6)
    cfg = config("data.image_size=32", "data.isic.source=local", f"data.isic.local_dir={folder}",
                 'data.isic.regimes={"2": 2}')
    return folder, cfg, tmp_path / "out" / "isic.h5"


def test_isic_image_without_mask(mini):
    folder, cfg, out = mini
    mask = sorted((folder / GT_FOLDER).iterdir())[2]
    mask.unlink()
    image = mask.name.replace("_segmentation.png", ".jpg")
    text = fails_cleanly(out, lambda: stage.prepare(cfg, "isic", out), folder / INPUT_FOLDER, image)
    assert "have no mask" in text


def test_isic_mask_without_image(mini):
    folder, cfg, out = mini
    image = sorted((folder / INPUT_FOLDER).iterdir())[0]
    image.unlink()
    mask = f"{image.stem}_segmentation.png"
    assert "have no image" in fails_cleanly(out, lambda: stage.prepare(cfg, "isic", out), folder / GT_FOLDER, mask)


@pytest.mark.parametrize("corruption, message", [
    ("grey", "mask values other than 0 and 255: [128]"),
    ("size", "differs from its image"),
    ("garbage", "not a readable image"),
])
def test_isic_bad_mask(mini, corruption, message):
    folder, cfg, out = mini
    path = sorted((folder / GT_FOLDER).iterdir())[3]
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if corruption == "grey":
        mask[:5, :5] = 128
        cv2.imwrite(str(path), mask)
    elif corruption == "size":
        cv2.imwrite(str(path), mask[:-3])
    else:
        path.write_bytes(b"not a png")
    assert message in fails_cleanly(out, lambda: stage.prepare(cfg, "isic", out), path)


def _official_isic(tmp_path, input_zip, gt_zip):
    """Place the two zips as already-downloaded archives and configure their sizes and digests."""
    raw = tmp_path / "raw"
    (raw / "isic").mkdir(parents=True)
    overrides = [f"paths.raw={raw}", "data.image_size=32", 'data.isic.regimes={"2": 2}']
    for key, archive in (("input", input_zip), ("gt", gt_zip)):
        placed = raw / "isic" / archive.name
        placed.write_bytes(archive.read_bytes())
        overrides += [f"data.isic.{key}_sha256='{sha256(placed)}'", f"data.isic.{key}_bytes={placed.stat().st_size}"]
    return raw / "isic", config(*overrides)


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt"])
def test_isic_zip_unsafe_member_path(mini, tmp_path, member):
    folder, _, out = mini
    input_zip = zip_folder(folder / INPUT_FOLDER, tmp_path / f"{INPUT_FOLDER}.zip")
    with zipfile.ZipFile(input_zip, "a") as zf:
        zf.writestr(f"{INPUT_FOLDER}/{member}" if member.startswith("..") else member, b"pwned")
    gt_zip = zip_folder(folder / GT_FOLDER, tmp_path / f"{GT_FOLDER}.zip")
    raw_isic, cfg = _official_isic(tmp_path, input_zip, gt_zip)
    before = folder_state(raw_isic)
    fails_cleanly(out, lambda: stage.prepare(cfg, "isic", out), raw_isic / input_zip.name, "unsafe member path")
    assert {p.name for p in raw_isic.parent.iterdir()} == {"isic"} and not list(tmp_path.rglob("evil.txt"))
    assert {k for k in folder_state(raw_isic) if not k.endswith(".verified")} == set(before)


def test_isic_truncated_zip(mini, tmp_path):
    folder, _, out = mini
    input_zip = zip_folder(folder / INPUT_FOLDER, tmp_path / f"{INPUT_FOLDER}.zip")
    gt_zip = zip_folder(folder / GT_FOLDER, tmp_path / f"{GT_FOLDER}.zip")
    gt_zip.write_bytes(gt_zip.read_bytes()[:-200])
    raw_isic, cfg = _official_isic(tmp_path, input_zip, gt_zip)
    fails_cleanly(out, lambda: stage.prepare(cfg, "isic", out), raw_isic / gt_zip.name)
    assert not (raw_isic / GT_FOLDER).exists()
    assert not [p for p in raw_isic.iterdir() if p.name.startswith(".")], "no half-extracted temp folder"


# ---------------------------------------------------------------- folder kind


@pytest.fixture
def png_folder(isic_dir, tmp_path):
    """6 real ISIC pairs as images/<id>.png and masks/<id>_mask.png (0/255), and their dataset entry."""
    ids = isic_pngs(isic_dir, tmp_path / "images", tmp_path / "masks", 6, size=48)
    entry = {"kind": "folder", "images": str(tmp_path / "images"), "masks": str(tmp_path / "masks"),
             "image_pattern": "{id}.png", "mask_pattern": "{id}_mask.png", "classes": {0: "background", 255: "lesion"},
             "split": [1, 1], "seed": 0, "regimes": {"1": 1}}
    return tmp_path, ids, entry, tmp_path / "out" / "mine.h5"


def prepare_folder(entry, out, *overrides):
    return lambda: stage.prepare(folder_config("mine", entry, "data.image_size=32", *overrides), "mine", out)


def test_folder_is_valid(png_folder):
    _, _, entry, out = png_folder
    assert stage.prepare(folder_config("mine", entry, "data.image_size=32"), "mine", out)["train"] == "3 images"
    assert (out.parent / "mine_split.csv").is_file()


def test_folder_image_without_mask(png_folder):
    root, ids, entry, out = png_folder
    (root / "masks" / f"{ids[2]}_mask.png").unlink()
    text = fails_cleanly(out, prepare_folder(entry, out), root / "images", f"{ids[2]}.png",
                         root / "masks" / f"{ids[2]}_mask.png")
    assert "1 files have no mask" in text


@pytest.mark.parametrize("corruption, message", [
    ("value", "mask values other than 0 and 255: [128]"),
    ("size", "differs from its image"),
    ("colour", "colour mask"),
    ("truncated", "truncated PNG"),
])
def test_folder_bad_mask(png_folder, corruption, message):
    root, ids, entry, out = png_folder
    path = root / "masks" / f"{ids[3]}_mask.png"
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if corruption == "value":
        mask[:3, :3] = 128
        cv2.imwrite(str(path), mask)
    elif corruption == "size":
        cv2.imwrite(str(path), mask[:, :-2])
    elif corruption == "colour":
        colour = np.stack([mask, mask, mask], -1)
        colour[:3, :3, 0] = 7
        cv2.imwrite(str(path), colour)
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert message in fails_cleanly(out, prepare_folder(entry, out), path)


def test_masks_saved_as_jpeg_are_refused_with_png_as_the_fix(png_folder):
    root, ids, entry, out = png_folder
    for i in ids:
        png = root / "masks" / f"{i}_mask.png"
        mask = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
        mask[::7, ::5] = 255 - mask[::7, ::5]   # speckle: JPEG spreads it over many values
        cv2.imwrite(str(root / "masks" / f"{i}_mask.jpg"), mask, [cv2.IMWRITE_JPEG_QUALITY, 75])
        png.unlink()
    text = fails_cleanly(out, prepare_folder({**entry, "mask_pattern": "{id}_mask.jpg"}, out), "_mask.jpg")
    assert re.search(r"mask values other than 0 and 255: \[(\d+, ){5}\.\.\. \(\d+ in all\)\]", text)
    assert "JPEG's lossy compression changes a mask's values" in text
    assert "Fix: save the masks as PNG (lossless) and set data.mine.mask_pattern to match" in text


def test_folder_without_images(png_folder):
    root, _, entry, out = png_folder
    for image in (root / "images").iterdir():
        image.unlink()
    assert "no file matches image_pattern '{id}.png' (it holds no files)" in fails_cleanly(
        out, prepare_folder(entry, out), root / "images")
    missing = {**entry, "images": str(root / "nowhere")}
    assert "folder not found" in fails_cleanly(out, prepare_folder(missing, out), root / "nowhere", "data.mine.images")


def test_folder_duplicate_ids(png_folder):
    root, ids, entry, out = png_folder
    for image in (root / "images").glob("*.png"):   # one subfolder per scanner; ids[0] scanned twice
        (root / "images" / "a").mkdir(exist_ok=True)
        image.rename(root / "images" / "a" / image.name)
    (root / "images" / "b").mkdir()
    shutil.copy(root / "images" / "a" / f"{ids[0]}.png", root / "images" / "b")
    nested = {**entry, "image_pattern": "*/{id}.png"}
    text = fails_cleanly(out, prepare_folder(nested, out), root / "images" / "a" / f"{ids[0]}.png",
                         f"duplicate id '{ids[0]}'", f"b/{ids[0]}.png")
    assert "data.mine.image_pattern" in text


@pytest.mark.parametrize("pattern, message", [
    (r"^(patient\d+)_", "matches none of the 6 ids"),
    (r"^(000[0-6])", "ids do not match the group pattern"),
    ("(", "is not a regular expression"),
])
def test_folder_group_pattern(png_folder, pattern, message):
    _, _, entry, out = png_folder
    text = fails_cleanly(out, prepare_folder({**entry, "group": pattern}, out), "data.mine.group")
    assert message in text


def test_folder_split_lists(png_folder):
    root, ids, entry, out = png_folder
    train, val = root / "train.txt", root / "val.txt"
    listed = {**entry, "split": {"train": str(train), "val": str(val)}}
    train.write_text("\n".join(ids[:3]) + "\nno_such_case\n")
    val.write_text("\n".join(ids[3:]) + "\n")
    assert "have no image/mask pair: no_such_case" in fails_cleanly(out, prepare_folder(listed, out), train)
    train.write_text("\n".join(ids[:4]) + "\n")
    assert f"in both the train and the val list: {ids[3]}" in fails_cleanly(out, prepare_folder(listed, out), val)
    val.write_text("\n".join(ids[4:5]) + "\n")
    assert f"in neither list: {ids[5]}" in fails_cleanly(out, prepare_folder(listed, out), train)
    # ids 0001769, 0001852, 0001871 share the group 0001: two in train, one in val
    train.write_text("\n".join([ids[0], ids[1], ids[3]]) + "\n")
    val.write_text("\n".join([ids[2], ids[4], ids[5]]) + "\n")
    grouped = {**listed, "group": r"^(\d{4})"}
    assert "1 groups have cases in both lists: 0001" in fails_cleanly(out, prepare_folder(grouped, out), val)


def test_folder_regime_larger_than_the_training_split(png_folder):
    _, _, entry, out = png_folder
    text = fails_cleanly(out, prepare_folder({**entry, "regimes": {"9": 9}}, out), "data.mine.regimes.9")
    assert "asks for 9 labeled images but the training split has 3" in text


def test_folder_split_leaving_a_side_empty(png_folder):
    root, _, entry, out = png_folder
    text = fails_cleanly(out, prepare_folder({**entry, "split": [100, 1]}, out), root / "images")
    assert "leaves the validation set empty" in text


# ---------------------------------------------------------------- download and config


def test_download_with_wrong_checksum_removes_the_file(tmp_path):
    data = b"not the archive you are looking for" * 1000
    expected = hashlib.sha256(b"the real archive").hexdigest()
    dest = tmp_path / "ACDC.zip"
    with http_server({"ACDC.zip": data}) as (url, _):
        with pytest.raises(UserError) as info:
            download(f"{url}/ACDC.zip", dest, sha256=expected)
    text = str(info.value)
    assert str(dest) in text and expected in text and hashlib.sha256(data).hexdigest() in text
    assert list(tmp_path.iterdir()) == []


def test_download_with_wrong_size_is_refused(tmp_path):
    data = b"x" * 5000
    with http_server({"f.zip": data}) as (url, _):
        with pytest.raises(UserError, match="5000 bytes, expected 4000"):
            download(f"{url}/f.zip", tmp_path / "f.zip", sha256=hashlib.sha256(data).hexdigest(), size=4000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("edit, key", [
    (lambda p: p["data"]["acdc"].update(sorce="local"), "sorce"),
    (lambda p: p["data"].update(image_size="224"), "data.image_size"),
    (lambda p: p["data"]["isic"].update(input_sha256="not-a-digest"), "data.isic.input_sha256"),
])
def test_bad_config_key(tmp_path, edit, key):
    params = yaml.safe_load(DEFAULT_CONFIG.read_text())
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(UserError) as info:
        load_config(path)
    assert str(path) in str(info.value) and key in str(info.value)


def test_truncated_jpeg_or_png_is_an_error_naming_the_file(isic_dir, tmp_path):
    from ugpcl.data.imageio import read_image

    jpeg = sorted((isic_dir / INPUT_FOLDER).glob("*.jpg"))[0]
    png = sorted((isic_dir / GT_FOLDER).glob("*.png"))[0]
    assert read_image(jpeg, "color").ndim == 3 and read_image(png, "grey").ndim == 2
    for source in (jpeg, png):
        cut = tmp_path / source.name
        cut.write_bytes(source.read_bytes()[: source.stat().st_size * 2 // 3])
        with pytest.raises(UserError, match="truncated") as err:
            read_image(cut)
        assert str(cut) in str(err.value)


@pytest.mark.parametrize("error", [UserError("case 3: bad"), KeyboardInterrupt()])
def test_an_error_while_decoding_closes_the_progress_bar_before_it_propagates(capsys, monkeypatch, error):
    from tqdm import tqdm

    from ugpcl.data import parallel
    from ugpcl.data.parallel import progress_map

    monkeypatch.setattr(parallel, "BAR_DELAY", 0)   # drawn at once, as after a second of work

    def decode(x):
        if x == 3:
            raise error
        return x

    open_before = set(tqdm._instances)
    with pytest.raises(type(error)):
        progress_map(decode, list(range(6)), 2, "cases")
    assert set(tqdm._instances) <= open_before   # closed, not left to be redrawn after the message
    assert capsys.readouterr().err.endswith("\n")
    assert progress_map(decode, [0, 1], 2, "cases") == [0, 1]


def test_acdc_zip_info_cfg_without_phases(acdc_zip, tmp_path):
    """The zip's frames are matched to the lists' frame01/frame02 through Info.cfg's ED and ES."""
    volumes, configured, out = acdc_zip
    member = f"ACDC/database/training/{next(iter(volumes))[:10]}/Info.cfg"
    archive = fake_acdc_zip(tmp_path / "ACDC.zip", volumes)
    with zipfile.ZipFile(archive) as zf:
        kept = {i.filename: zf.read(i) for i in zf.infolist() if i.filename != member}
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in {**kept, member: b"ED: 1\nGroup: NOR\n"}.items():
            zf.writestr(name, data)
    text = fails_cleanly(out, lambda: stage.prepare(configured(archive), "acdc", out), f"{archive}::{member}")
    assert "no ED and ES frame numbers" in text


def test_acdc_list_naming_slice_0_is_refused(acdc_zip, tmp_path):
    """SSL4MIS's lists count slices from 1: a slice 0 (a list counting from 0) is named, not read."""
    volumes, configured, out = acdc_zip
    archive = fake_acdc_zip(tmp_path / "ACDC.zip", volumes)
    cfg = configured(archive)
    lists = tmp_path / "lists" / "train_slices.list"
    lists.write_text(lists.read_text().replace("_slice_1\n", "_slice_0\n", 1))
    text = fails_cleanly(out, lambda: stage.prepare(cfg, "acdc", out), archive, "the list names slice 0")
    assert "count slices from 1" in text
