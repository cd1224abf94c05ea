"""The folder kind on real data: ISIC laid out differently prepares to the ISIC arrays; ACDC volumes
as NIfTI files prepare with patient-disjoint splits and score per volume; user lists and
fractions; `ugpcl inspect`; and the README's example, prepared and trained as written."""

import csv
import json
import re
import shutil

import cv2
import h5py
import nibabel as nib
import numpy as np
import pytest
import yaml
from data_helpers import config, folder_config, isic_pngs, nifti_volumes, read_h5, readme_example

from ugpcl import config as config_module
from ugpcl.cli import main
from ugpcl.config import DEFAULT_CONFIG, deep_merge, load_config
from ugpcl.data import stage
from ugpcl.data.layout import ISIC_GT_FOLDER as GT_FOLDER, ISIC_INPUT_FOLDER as INPUT_FOLDER
from ugpcl.data.prepared import load_prepared
from ugpcl.data.split import batch_fit
from ugpcl.data.survey import describe
from ugpcl.errors import UserError
from ugpcl.metrics import score_cases, summarise
from ugpcl.study import distinct_runs

SIZE = 64
ACDC_CLASSES = {0: "background", 1: "RV", 2: "Myo", 3: "LV"}


def entry(**kw) -> dict:
    base = {"kind": "folder", "classes": {0: "background", 255: "lesion"}, "split": [1, 1], "seed": 0,
            "regimes": {"1": 1}}
    return {**base, **kw}


# ---------------------------------------------------------------- ISIC, laid out differently


def test_mixed_8_and_16_bit_images_are_stored_as_the_warning_says(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        image = rng.integers(20, 200, (32, 32), dtype=np.uint8)
        if i % 2:
            image = image.astype(np.uint16) * 100   # 2000..19900: min-max scaled to 0..255
        cv2.imwrite(str(tmp_path / f"c{i}.png"), image)
        cv2.imwrite(str(tmp_path / f"c{i}_m.png"), np.where(np.arange(32)[:, None] < 16, 255, 0).astype(np.uint8)
                    * np.ones((1, 32), np.uint8))
    mine = entry(images=str(tmp_path), image_pattern="{id}.png", mask_pattern="{id}_m.png", split=[1, 1])
    out = tmp_path / "out" / "mine.h5"
    summary = stage.prepare(folder_config("mine", mine, "data.image_size=32"), "mine", out)
    warning = next(w for w in summary["warnings"] if w.startswith("mixed pixel types"))
    assert "8-bit images are kept as they are (0..255)" in warning and "min-max normalised per file" in warning
    assert "float32" not in warning
    prepared = load_prepared(out)
    for split in (prepared.train, prepared.val):
        for name, stored in zip(split.names, split.images):
            read = cv2.imread(str(tmp_path / f"{name}.png"), cv2.IMREAD_UNCHANGED)
            if read.dtype == np.uint8:
                assert np.array_equal(stored[0], read)
            else:
                assert stored.min() == 0 and stored.max() == 255
                assert np.abs(stored[0] - (read - read.min()) / (read.max() - read.min()) * 255).max() <= 0.5


def test_isic_laid_out_as_a_folder_prepares_to_the_isic_arrays(isic_dir, tmp_path):
    regimes = {"5": 5, "10": 10}
    isic_cfg = config(f"data.image_size={SIZE}", "data.isic.source=local", f"data.isic.local_dir={isic_dir}",
                      f"data.isic.regimes={json.dumps(regimes)}")
    isic = load_prepared(stage.prepare(isic_cfg, "isic", tmp_path / "isic" / "isic.h5")["out"])

    # the same pictures as PNG files in one folder per case, the 0/255 masks under other names
    for jpg in sorted((isic_dir / INPUT_FOLDER).glob("ISIC_*.jpg")):
        id_ = jpg.stem.removeprefix("ISIC_")
        (tmp_path / "scans" / id_).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "scans" / id_ / "dermoscopy.png"), cv2.imread(str(jpg), cv2.IMREAD_UNCHANGED))
        (tmp_path / "truth").mkdir(exist_ok=True)
        shutil.copy(isic_dir / GT_FOLDER / f"{jpg.stem}_segmentation.png", tmp_path / "truth" / f"lesion-{id_}.png")
    mine = entry(images=str(tmp_path / "scans"), masks=str(tmp_path / "truth"), image_pattern="{id}/dermoscopy.png",
                 mask_pattern="lesion-{id}.png", split=[1815, 779], seed=2022, regimes=regimes)
    cfg = folder_config("skin", mine, f"data.image_size={SIZE}")
    summary = stage.prepare(cfg, "skin", tmp_path / "skin" / "skin.h5")
    folder = load_prepared(summary["out"])

    assert (folder.dataset, folder.class_names, folder.in_channels) == ("skin", isic.class_names, 3)
    for split in ("train", "val"):
        ours, theirs = getattr(folder, split), getattr(isic, split)
        assert ours.names == [n.removeprefix("ISIC_") for n in theirs.names]
        assert ours.images.dtype == theirs.images.dtype == np.uint8
        assert np.array_equal(ours.images, theirs.images) and np.array_equal(ours.labels, theirs.labels)
    assert {r: i.tolist() for r, i in folder.labeled.items()} == {r: i.tolist() for r, i in isic.labeled.items()}
    assert summary["train"] == "42 images" and summary["labeled"] == {"5": "5 images", "10": "10 images"}
    assert set(summary["classes"]) == {"background", "lesion"} and sum(summary["classes"].values()) == pytest.approx(1)
    assert any("not square" in w for w in summary["warnings"])
    rows = list(csv.DictReader((tmp_path / "skin" / "skin_split.csv").open()))
    assert len(rows) == 60 and {r["case"] for r in rows if r["split"] == "val"} == set(folder.val.names)


# ---------------------------------------------------------------- ACDC volumes as NIfTI


@pytest.fixture(scope="module")
def nifti_scans(acdc_dir, tmp_path_factory):
    """12 real ACDC validation volumes (6 patients, ED and ES) as NIfTI files in one folder."""
    cases = (acdc_dir / "val.list").read_text().split()[:12]
    assert len({c[:10] for c in cases}) == 6
    return nifti_volumes(acdc_dir, tmp_path_factory.mktemp("nifti") / "scans", cases), cases


def nifti_entry(folder, **kw):
    return entry(images=str(folder), image_pattern="{id}.nii.gz", mask_pattern="{id}_gt.nii.gz",
                 classes=ACDC_CLASSES, **kw)


def test_nifti_volumes_split_by_patient_and_scored_per_volume(nifti_scans, acdc_dir, tmp_path):
    folder, cases = nifti_scans
    cfg = folder_config("heart", nifti_entry(folder, group=r"^(patient\d+)_", regimes={"1": 1, "2": 2}),
                        f"data.image_size={SIZE}")
    summary = stage.prepare(cfg, "heart", tmp_path / "heart.h5")
    p = load_prepared(summary["out"])
    assert (p.num_classes, p.in_channels, p.train.images.dtype) == (4, 1, np.uint8)  # 8-bit storage

    val_cases = list(p.case_slices())
    train_patients, val_patients = set(p.train_groups), {c[:10] for c in val_cases}
    assert len(train_patients) == len(val_patients) == 3 and not train_patients & val_patients
    train_cases = {n.rsplit("_slice_", 1)[0] for n in p.train.names}
    assert sorted(train_cases | set(val_cases)) == sorted(cases)   # both frames of a patient on one side
    assert summary["train"].endswith("/ 6 volumes / 3 groups") and summary["val"].endswith("/ 6 volumes / 3 groups")
    one, two = ({p.train_groups[i] for i in p.labeled_indices(r)} for r in ("1", "2"))
    assert len(one) == 1 and len(two) == 2 and one < two
    assert len(p.labeled_indices("1")) == sum(g in one for g in p.train_groups)  # every slice of the patient

    for case in val_cases:
        image, label = read_h5(acdc_dir / "data" / f"{case}.h5")
        assert np.array_equal(p.val_original[case], label)
        index = p.case_slices()[case]
        assert [p.val.names[i] for i in index] == [f"{case}_slice_{k}" for k in range(len(label))]
        k = len(label) // 2
        expected = cv2.resize(image[k], (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(p.val.images[index[k], 0] / 255, expected, atol=0.5 / 255 + 1e-6)

    # per volume: the prepared truth, resized back, scored in 3D against the original labels
    per_case = score_cases(p.val.labels, p)
    assert sorted(per_case["case"].unique()) == sorted(val_cases) and len(per_case) == 3 * len(val_cases)
    assert per_case["dice"].min() > 0.6 and per_case["dice"].mean() > 0.8   # 64 px and back: not exact
    assert summarise(per_case, p.class_names)["n_cases"] == len(val_cases)


def test_without_a_group_each_volume_is_its_own(nifti_scans, tmp_path):
    folder, cases = nifti_scans
    cfg = folder_config("heart", nifti_entry(folder, split=[2, 1], seed=3), f"data.image_size={SIZE}")
    p = load_prepared(stage.prepare(cfg, "heart", tmp_path / "heart.h5")["out"])
    val_cases = set(p.case_slices())
    assert len(val_cases) == 4 and set(p.train_groups) == set(cases) - val_cases


def test_hdf5_volumes_holding_image_and_label_with_their_spacing(acdc_dir, tmp_path):
    """SSL4MIS's own ACDC volumes (`image` and `label` in one .h5 file) as a folder dataset: the same
    slices and labels as the files hold; a `spacing` attribute (of `image`, or of the file) is the voxel
    size in mm of that volume, so distances are in mm; one that is not one size per axis names the file."""
    from ugpcl.metrics import distance_unit

    cases = (acdc_dir / "val.list").read_text().split()[:4]
    folder = tmp_path / "volumes"
    folder.mkdir()
    for i, case in enumerate(cases):
        shutil.copy(acdc_dir / "data" / f"{case}.h5", folder)
        with h5py.File(folder / f"{case}.h5", "a") as f:
            (f["image"].attrs if i % 2 else f.attrs)["spacing"] = [10.0, 1.25 + i, 1.5]
    mine = entry(images=str(folder), image_pattern="{id}.h5", mask_pattern="{id}.h5", classes=ACDC_CLASSES,
                 group=r"^(patient\d+)_")
    cfg = folder_config("heart", mine, f"data.image_size={SIZE}")
    p = load_prepared(stage.prepare(cfg, "heart", tmp_path / "heart.h5")["out"])
    assert set(p.case_slices()) | {n.rsplit("_slice_", 1)[0] for n in p.train.names} == set(cases)
    for case in p.case_slices():
        assert np.array_equal(p.val_original[case], read_h5(acdc_dir / "data" / f"{case}.h5")[1])
        assert p.val_spacing[case] == pytest.approx((10.0, 1.25 + cases.index(case), 1.5))
    assert distance_unit(p, "volume") == "mm"
    surveyed = stage.inspect(cfg, "heart")  # inspect says the unit before anything is prepared
    assert surveyed["voxel_sizes"]["unit"] == "mm" and not any("voxel size" in w for w in surveyed["warnings"])
    assert "distances (HD95, ASD): in mm; all 2 validation volumes give a voxel size" in describe(surveyed)

    shown = sorted(p.case_slices())[0]
    with h5py.File(folder / f"{shown}.h5", "a") as f:   # both given: the image's wins
        f["image"].attrs["spacing"], f.attrs["spacing"] = [5.0, 1.0, 1.0], [9.0, 9.0, 9.0]
    assert load_prepared(stage.prepare(cfg, "heart", tmp_path / "both.h5")["out"]).val_spacing[shown] == (5, 1, 1)
    with h5py.File(folder / f"{shown}.h5", "a") as f:   # one validation volume without: voxels for all, said
        del f["image"].attrs["spacing"], f.attrs["spacing"]
    summary = stage.prepare(cfg, "heart", tmp_path / "mixed.h5")
    mixed = load_prepared(summary["out"])
    assert mixed.val_spacing == {} and distance_unit(mixed, "volume") == "voxel"
    said = f"1 of the 2 validation volumes give a voxel size and 1 do not (e.g. {shown})"
    assert any(said in w for w in summary["warnings"]), summary["warnings"]
    surveyed = stage.inspect(cfg, "heart")  # and inspect, the same
    assert any(said in w for w in surveyed["warnings"]) and surveyed["voxel_sizes"]["unit"] == "voxel"
    assert "in voxels; 1 of the 2 validation volumes give none (see the warnings)" in describe(surveyed)
    for case in p.case_slices():
        with h5py.File(folder / f"{case}.h5", "a") as f:
            f["image"].attrs.pop("spacing", None), f.attrs.pop("spacing", None)
    surveyed = stage.inspect(cfg, "heart")
    assert "in voxels; none of the 2 validation volumes gives a voxel size" in describe(surveyed)
    assert not any("voxel size" in w for w in surveyed["warnings"])

    with h5py.File(folder / f"{cases[0]}.h5", "a") as f:
        f.attrs["spacing"] = [1.5, 1.5]
        f["image"].attrs.pop("spacing", None)
    with pytest.raises(UserError, match=re.escape("does not give one positive size per axis of `image` (3)")) as err:
        stage.prepare(cfg, "heart", tmp_path / "again.h5")
    assert str(folder / f"{cases[0]}.h5") in str(err.value) and not (tmp_path / "again.h5").exists()


# ---------------------------------------------------------------- user lists, fractions


def test_user_lists_and_nested_fractions(isic_dir, tmp_path):
    ids = isic_pngs(isic_dir, tmp_path / "img", tmp_path / "img", 20, size=48)
    (tmp_path / "train.txt").write_text("# training cases\n" + "\n".join(ids[:14]) + "\n")
    (tmp_path / "val.txt").write_text("\n".join(ids[14:]) + "\n\n")
    mine = entry(images=str(tmp_path / "img"), image_pattern="{id}.png", mask_pattern="{id}_mask.png",
                 split={"train": str(tmp_path / "train.txt"), "val": str(tmp_path / "val.txt")},
                 regimes={"quarter": 0.25, "half": 0.5, "2": 2})
    p = load_prepared(stage.prepare(folder_config("mine", mine, "data.image_size=32"), "mine", tmp_path / "o.h5")["out"])
    assert p.train.names == ids[:14] and p.val.names == ids[14:]
    sets = {r: {p.train.names[i] for i in p.labeled_indices(r)} for r in ("2", "quarter", "half")}
    assert [len(s) for s in sets.values()] == [2, 4, 7]   # round(0.25 * 14) = 4 (banker's 3.5 -> 4), 7
    assert sets["2"] < sets["quarter"] < sets["half"]
    again = load_prepared(stage.prepare(folder_config("mine", mine, "data.image_size=32"), "mine",
                                        tmp_path / "again.h5")["out"])
    assert {r: i.tolist() for r, i in again.labeled.items()} == {r: i.tolist() for r, i in p.labeled.items()}


# ---------------------------------------------------------------- inspect


def test_inspect_counts_fractions_and_problems(isic_dir, tmp_path, capsys):
    images = tmp_path / "data"
    ids = isic_pngs(isic_dir, images / "a", images / "a", 6, size=40, image_name="{id}.png", mask_name="{id}_m.png")
    isic_pngs(isic_dir, images / "b", images / "b", 1, size=40, image_name="{id}.png", mask_name="{id}_m.png")
    bad_value, bad_size = images / "a" / f"{ids[1]}_m.png", images / "a" / f"{ids[2]}_m.png"
    mask = cv2.imread(str(bad_value), cv2.IMREAD_GRAYSCALE)
    mask[:2, :2] = 7
    cv2.imwrite(str(bad_value), mask)
    cv2.imwrite(str(bad_size), cv2.imread(str(bad_size), cv2.IMREAD_GRAYSCALE)[:-2])
    mine = entry(images=str(images), image_pattern="*/{id}.png", mask_pattern="*/{id}_m.png",
                 classes={0: "background", 100: "hair", 255: "lesion"})
    cfg = folder_config("mine", mine, "data.image_size=32")

    report = stage.inspect(cfg, "mine")
    errors = "\n".join(report["errors"])
    assert f"duplicate id {ids[0]!r}" in errors                           # a/<id>.png and b/<id>.png
    assert str(bad_value) in errors and "mask values other than 0, 100 and 255: [7]" in errors
    assert str(bad_size) in errors and "differs from its image" in errors
    warnings = "\n".join(report["warnings"])
    assert "class 'hair' (mask value 100) appears in no mask" in warnings and "are upsampled" in warnings
    assert report["cases"] == 6 and report["classes"]["hair"]["fraction"] == 0

    out = tmp_path / "out" / "mine.h5"
    with pytest.raises(UserError, match="duplicate id"):
        stage.prepare(cfg, "mine", out)
    assert not out.parent.exists()

    params = tmp_path / "params.yaml"
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["data"]["mine"] = mine
    params.write_text(yaml.safe_dump(raw))
    assert main(["inspect", "mine", "--config", str(params)]) == 1
    text = capsys.readouterr().out
    assert "errors (prepare would stop)" in text and "hair (100): 0.00%, 0 cases" in text
    assert main(["inspect", "mine", "--config", str(params), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["classes"]["lesion"]["value"] == 255


def test_no_progress_bar_for_work_of_under_a_second(capsys):
    from ugpcl.data.parallel import progress_map

    assert progress_map(lambda x: 2 * x, [1, 2, 3], 2, "cases") == [2, 4, 6]
    assert capsys.readouterr().err == ""


def test_inspect_of_a_clean_folder(isic_dir, tmp_path):
    ids = isic_pngs(isic_dir, tmp_path / "i", tmp_path / "m", 8, size=40)
    cfg = folder_config("mine", entry(images=str(tmp_path / "i"), masks=str(tmp_path / "m"), image_pattern="{id}.png",
                                      mask_pattern="{id}_mask.png"), "data.image_size=32")
    report = stage.inspect(cfg, "mine")
    assert report["errors"] == [] and report["cases"] == 8 and report["channels"] == {"grey": 0, "RGB": 8}
    masks = np.concatenate([cv2.imread(str(tmp_path / "m" / f"{i}_mask.png"), 0).ravel() for i in ids])
    assert report["classes"]["lesion"]["fraction"] == pytest.approx((masks == 255).mean(), abs=1e-6)
    assert report["split"]["train"] == "4 images" and report["split"]["labeled"] == {"1": "1 image"}
    assert report["value_range"][1] <= 255 and report["dtypes"] == {"uint8": 8}
    assert "voxel_sizes" not in report and "distances" not in describe(report)  # images, not volumes
    with pytest.raises(UserError, match="surveys folders"):
        stage.inspect(load_config(), "acdc")


# ---------------------------------------------------------------- the experiment matrix


def test_matrix_names_configured_datasets_only(tmp_path):
    with pytest.raises(UserError, match="dataset 'nosuch', which has no entry under data:"):
        distinct_runs(load_config(overrides=['experiments.table1.datasets={nosuch: ["1"]}']))
    mine = entry(images=str(tmp_path), image_pattern="{id}.png", mask_pattern="{id}_m.png", regimes={"23": 1, "3": 1})
    cfg = load_config(overrides=[f"data.d1={json.dumps(mine)}", f"data.d12={json.dumps(mine)}",
                                 'experiments.table1.datasets={d1: ["23"], d12: ["3"]}'])
    with pytest.raises(UserError, match="give the same run id 'd123_supervised'"):
        distinct_runs(cfg)
    with pytest.raises(UserError, match=r"no dataset 'nosuch' under data: \(configured: acdc, isic\)"):
        stage.prepare(load_config(), "nosuch")


def test_a_regime_the_dataset_lacks_names_both_places_to_fix_it(tmp_path):
    mine = entry(images=str(tmp_path), image_pattern="{id}.png", mask_pattern="{id}_m.png", regimes={"23": 1})
    cfg = load_config(overrides=[f"data.mydata={json.dumps(mine)}", 'experiments.table1.datasets={mydata: ["136"]}',
                                 "experiments.table2.dataset=mydata", 'experiments.table2.regime="136"'])
    with pytest.raises(UserError, match=r"regime '136' of mydata, which data.mydata.regimes lacks \(it has '23'\)") \
            as err:
        distinct_runs(cfg)
    assert "add '136' under data.mydata.regimes" in err.value.fix
    assert "experiments.table1.datasets.mydata and experiments.table2.regime" in err.value.fix


# ---------------------------------------------------------------- the README's example


def test_readme_example_prepares_and_trains_as_written(isic_dir, tmp_path, monkeypatch, capsys):
    example = readme_example()
    assert example["data"]["mydata"]["kind"] == "folder"
    # the repository root moved to tmp_path: the example's relative paths, results and runs land there
    monkeypatch.setattr(config_module, "REPO_ROOT", tmp_path)
    folder = example["data"]["mydata"]
    isic_pngs(isic_dir, tmp_path / folder["images"], tmp_path / folder["masks"], 12, size=96,
              image_name=folder["image_pattern"], mask_name=folder["mask_pattern"])
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["data"].update(example["data"])
    raw["experiments"]["table1"]["datasets"] = example["experiments"]["table1"]["datasets"]
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))

    base = ["--config", str(params), "--profile", "demo"]
    assert main(["inspect", "mydata", *base]) == 0
    assert main(["prepare", "mydata", *base]) == 0
    out = capsys.readouterr().out
    assert "mydata: train 8 images (labeled 4: 4 images, 50pct: 4 images); val 4 images" in out
    prepared = load_prepared(tmp_path / "results" / "demo" / "data" / "mydata.h5")
    assert (prepared.image_size, prepared.in_channels, prepared.class_names) == (64, 3, ["background", "lesion"])
    assert (tmp_path / "results" / "demo" / "data" / "mydata_split.csv").is_file()

    train = ["train", "--run", "mydata4_supervised", *base, "--set", "train.iterations=4", "--set", "train.val_every=2",
             "--no-progress"]
    assert main(["runs", *base]) == 0
    listed = capsys.readouterr().out
    assert "mydata50pct_ugpcl" in listed   # and which profile's runs these are, where
    assert f"seed(s) of profile demo in {tmp_path / 'results' / 'demo' / 'runs'} (--profile NAME" in listed
    assert main(train) == 0
    run_dir = tmp_path / "results" / "demo" / "runs" / "mydata4_supervised" / "seed1337"
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    assert summary["n_cases"] == 4 and summary["dataset"] == "mydata"
    assert json.loads((run_dir / "run.json").read_text())["data_source"] == "folder"
    cfg = deep_merge(load_config(params, "demo"), {})
    assert cfg["data"]["mydata"]["classes"] == {0: "background", 255: "lesion"}


def test_nifti_voxel_size_makes_distances_millimetres(acdc_dir, tmp_path):
    """The NIfTI header's voxel size (here 1.5 x 1.25 x 10 mm, and a header in metres) is kept per
    validation volume, so HD95 and ASD come out in mm as for ACDC's Creatis files."""
    from ugpcl.metrics import distance_unit

    cases = (acdc_dir / "val.list").read_text().split()[:4]
    folder = nifti_volumes(acdc_dir, tmp_path / "scans", cases)
    for i, case in enumerate(cases):
        for name in (f"{case}.nii.gz", f"{case}_gt.nii.gz"):
            img = nib.load(str(folder / name))
            data = np.asanyarray(img.dataobj)
            scale = 1000 if i == 0 else 1
            scaled = nib.Nifti1Image(data, np.diag([1.5 / scale, 1.25 / scale, 10.0 / scale, 1.0]))
            scaled.header.set_xyzt_units("meter" if i == 0 else "mm")
            nib.save(scaled, str(folder / name))
    cfg = folder_config("heart", nifti_entry(folder, group=r"^(patient\d+)_", split=[1, 1], regimes={"1": 1}),
                        f"data.image_size={SIZE}")
    p = load_prepared(stage.prepare(cfg, "heart", tmp_path / "heart.h5")["out"])
    assert p.val_spacing and set(p.val_spacing) == set(p.case_slices())
    for spacing in p.val_spacing.values():
        assert spacing == pytest.approx((10.0, 1.25, 1.5))
    assert distance_unit(p, "volume") == "mm"


def test_inspect_and_prepare_name_regimes_whose_runs_would_stop_and_regimes_labeling_the_same(isic_dir, tmp_path):
    """`inspect` said "no problems found" for regimes training then refused: one labeling every training
    image (no unlabeled half of a batch), one below train.labeled_bs; and two regimes with one labeled set."""
    isic_pngs(isic_dir, tmp_path / "img", tmp_path / "img", 8, size=40)
    mine = entry(images=str(tmp_path / "img"), image_pattern="{id}.png", mask_pattern="{id}_mask.png",
                 regimes={"all": 4, "whole": 1.0, "one": 1, "2": 2})
    cfg = folder_config("mine", mine, "data.image_size=32", "train.batch_size=4", "train.labeled_bs=2")
    report = stage.inspect(cfg, "mine")
    assert report["errors"] == [] and report["split"]["labeled"] == {"all": "4 images", "whole": "4 images",
                                                                     "one": "1 image", "2": "2 images"}
    said = [w for w in report["warnings"] if "regime" in w]
    assert said == [
        "regime 'all' of mine labels 4 of the 4 images for training, leaving 0 unlabeled for the unlabeled part of a "
        "batch (train.batch_size - train.labeled_bs: 2): its runs would stop at once (fix: lower "
        "data.mine.regimes.all until at least 2 images stay unlabeled (then `ugpcl prepare mine` again); the "
        "supervised baseline with methods.supervised.batch_norm_unlabeled: false needs none)",
        said[1],
        "regimes 'all' and 'whole' of mine label the same 4 images: every method would train twice on the same data",
        "regime 'one' of mine has 1 image labeled, fewer than the labeled part of a batch (train.labeled_bs: 2): its "
        "runs would stop at once (fix: raise data.mine.regimes.one until it labels at least 2 images (then `ugpcl "
        "prepare mine` again), or lower train.labeled_bs)"]
    assert said[1].startswith("regime 'whole' of mine labels 4 of the 4 images")
    summary = stage.prepare(cfg, "mine", tmp_path / "mine.h5")   # prepare writes the file and says the same
    assert [w for w in summary["warnings"] if "regime" in w] == said
    # a training split too small for any regime: that, once, not "at least 4" and "at most 1" labeled
    [(problem, fix)] = batch_fit("d", "r", 3, 5, 4, 4)
    assert problem == "d has 5 images for training, fewer than a batch of 8 (train.batch_size)"
    assert fix == "lower train.batch_size and train.labeled_bs, or give the training split more images"


def test_binary_masks_saved_as_0_255_with_classes_0_1_get_the_classes_to_write(isic_dir, tmp_path):
    """The usual slip: masks 0/255 (ISIC's own), classes {0: background, 1: lesion}. Every mask has it:
    `inspect` says it once, naming how many files and the first five, not once per mask."""
    images = tmp_path / "data"
    ids = isic_pngs(isic_dir, images, images, 7, size=40, image_name="{id}.png", mask_name="{id}_mask.png")
    cfg = folder_config("mine", entry(images=str(images), image_pattern="{id}.png", mask_pattern="{id}_mask.png",
                                      classes={0: "background", 1: "lesion"}), "data.image_size=32")
    [error] = stage.inspect(cfg, "mine")["errors"]
    named = ", ".join(f"{i}_mask.png" for i in sorted(ids)[:5])
    assert error.startswith(f"7 files in {images} ({named} and 2 more): mask values other than 0 and 1: [255]. Fix: ")
    assert "the masks look binary 0/255: write data.mine.classes as {0: background, 255: lesion}" in error
