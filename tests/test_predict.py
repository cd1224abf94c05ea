import cv2
import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from test_evaluation import run_cli, save_run
from torch import nn

from ugpcl import predict
from ugpcl.commands import predict as predict_command
from ugpcl.data.resize import Resizing
from ugpcl.errors import UserError
from ugpcl.predict import predict_files

SIZE = 32  # network image_size in these tests


def threshold_net(in_channels: int = 1) -> nn.Module:
    """Class 1 where the mean input channel exceeds 0.5, else 0: outputs are known exactly."""
    conv = nn.Conv2d(in_channels, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1).expand(2, in_channels, 1, 1) / in_channels)
        conv.bias.copy_(torch.tensor([0.5, -0.5]))
    return conv


def blocky(shape, seed=0):
    """A random 0/1 pattern made of 2 x 2 blocks: resizing it 2x down (bilinear) and up (nearest) is exact."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 2, [*shape[:-2], shape[-2] // 2, shape[-1] // 2])
    return np.kron(small, np.ones((2, 2), np.int64)).astype(np.uint8)


def test_outputs_match_the_network_in_each_format_and_orientation(tmp_path):
    net = threshold_net()
    grey = blocky((SIZE, 2 * SIZE)) * 255                       # non-square, resized 2x along W
    cv2.imwrite(str(tmp_path / "grey.png"), grey.astype(np.uint8))
    vol_xyz = blocky((3, SIZE, 2 * SIZE), 1).transpose(2, 1, 0)  # NIfTI X x Y x Z from a Z x Y x X pattern
    affine = np.diag([1.5, 1.2, 8.0, 1.0])
    nib.save(nib.Nifti1Image((vol_xyz * 100 + 7).astype(np.int16), affine), str(tmp_path / "vol.nii.gz"))
    stack = blocky((2, 2 * SIZE, SIZE), 2).astype(np.float32)
    with h5py.File(tmp_path / "stack.h5", "w") as f:
        f["image"] = stack

    outputs = predict_files(net, [tmp_path / "grey.png", tmp_path / "vol.nii.gz", tmp_path / "stack.h5"],
                            tmp_path / "out", SIZE)
    out = tmp_path / "out"
    assert [p.name for p in outputs] == ["grey_mask.png", "grey_overlay.png", "vol_pred.nii.gz", "vol_overlay.png",
                                         "stack_pred.h5", "stack_pred.nii.gz", "stack_overlay.png"]

    mask = cv2.imread(str(out / "grey_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.dtype == np.uint8 and mask.shape == grey.shape
    np.testing.assert_array_equal(mask, (grey > 127) * 255)        # two classes: ISIC's 0/255
    over = cv2.imread(str(out / "grey_overlay.png"))
    assert over.shape == (*grey.shape, 3)
    np.testing.assert_array_equal(over[mask == 0], 0)              # background keeps the (black) image
    assert (over[mask == 255] != 255).any(axis=-1).all()           # lesion pixels are tinted

    assert (out / "vol_pred.nii.gz").read_bytes()[:2] == b"\x1f\x8b"  # gzip, as its name says
    pred = nib.load(str(out / "vol_pred.nii.gz"))
    np.testing.assert_array_equal(pred.affine, nib.load(str(tmp_path / "vol.nii.gz")).affine)
    np.testing.assert_allclose(pred.affine, affine, rtol=1e-6)
    assert pred.get_data_dtype() == np.uint8 and pred.shape == vol_xyz.shape
    np.testing.assert_array_equal(np.asanyarray(pred.dataobj), vol_xyz)   # class indices, not 0/255

    with h5py.File(out / "stack_pred.h5") as f:
        assert f["pred"].dtype == np.uint8
        np.testing.assert_array_equal(f["pred"][()], stack)
    as_nifti = nib.load(str(out / "stack_pred.nii.gz"))            # the HDF5 volume as NIfTI too, X x Y x Z
    np.testing.assert_array_equal(np.asanyarray(as_nifti.dataobj).transpose(2, 1, 0), stack)
    np.testing.assert_array_equal(as_nifti.header.get_zooms(), (1, 1, 1))   # no spacing in the file
    # a volume's overlay: its slices in a grid, 2 px apart (3 slices of 32 x 64: 2 x 2; 2 of 64 x 32: 1 x 2)
    assert cv2.imread(str(out / "vol_overlay.png")).shape == (2 * SIZE + 2, 4 * SIZE + 2, 3)
    assert cv2.imread(str(out / "stack_overlay.png")).shape == (2 * SIZE, 2 * SIZE + 2, 3)


def test_folders_as_input_and_hdf5_spacing_in_the_nifti(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    stack = blocky((3, SIZE, SIZE), 4).astype(np.float32)
    with h5py.File(folder / "b.h5", "w") as f:
        f["image"] = stack
        f["image"].attrs["spacing"] = [10.0, 1.5, 1.25]               # z, y, x as the array's axes
    cv2.imwrite(str(folder / "a.png"), (blocky((SIZE, SIZE), 5) * 255).astype(np.uint8))
    (folder / "notes.txt").write_text("not an image: skipped")
    (folder / ".hidden.png").write_bytes(b"skipped")
    (folder / "sub").mkdir()
    cv2.imwrite(str(folder / "sub" / "c.png"), np.zeros((8, 8), np.uint8))   # not searched

    outputs = predict_files(threshold_net(), [folder], tmp_path / "out", SIZE)
    assert [p.name for p in outputs] == ["a_mask.png", "a_overlay.png", "b_pred.h5", "b_pred.nii.gz",
                                         "b_overlay.png"]
    nifti = nib.load(str(tmp_path / "out" / "b_pred.nii.gz"))
    np.testing.assert_allclose(nifti.header.get_zooms(), (1.25, 1.5, 10.0))   # x, y, z
    np.testing.assert_array_equal(np.asanyarray(nifti.dataobj).transpose(2, 1, 0), stack)

    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image, NIfTI or HDF5 file in this folder") as info:
        predict_files(threshold_net(), [tmp_path / "empty"], tmp_path / "out2", SIZE)
    assert "empty" in str(info.value)
    with h5py.File(folder / "b.h5", "a") as f:
        f["image"].attrs["spacing"] = [1.0, 0.0]
    with pytest.raises(UserError, match="spacing"):
        predict_files(threshold_net(), [folder / "b.h5"], tmp_path / "out3", SIZE)


def test_colour_input_to_grey_network_and_grey_to_rgb_network(tmp_path):
    rgb = blocky((SIZE, SIZE), 3) * 200
    cv2.imwrite(str(tmp_path / "rgb.png"), np.repeat(rgb[..., None], 3, axis=2).astype(np.uint8))
    predict_files(threshold_net(1), [tmp_path / "rgb.png"], tmp_path / "a", SIZE)
    predict_files(threshold_net(3), [tmp_path / "rgb.png"], tmp_path / "b", SIZE)
    for folder in ("a", "b"):
        mask = cv2.imread(str(tmp_path / folder / "rgb_mask.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(mask, (rgb > 0) * 255)


@pytest.fixture(scope="module")
def acdc_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "acdc"
    return run_dir, save_run(run_dir, num_classes=4, in_channels=1, image_size=SIZE)


def test_cli_with_tiny_unet_on_real_acdc_volume_and_nifti(tmp_path, acdc_run, acdc_dir):
    run_dir, net = acdc_run
    src = acdc_dir / "data" / "patient001_frame01.h5"
    with h5py.File(src) as f:
        image = f["image"][()]
    with h5py.File(tmp_path / "p1.h5", "w") as f:
        f["image"] = image[:3]
    nib.save(nib.Nifti1Image(image[:3].transpose(2, 1, 0) * 900, np.eye(4)), str(tmp_path / "p1n.nii"))

    assert run_cli(predict_command, ["predict", "--run-dir", str(run_dir), str(tmp_path / "p1.h5"),
                             str(tmp_path / "p1n.nii"), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    with h5py.File(tmp_path / "out" / "p1_pred.h5") as f:
        pred = f["pred"][()]
    assert pred.shape == (3, 256, 216) and pred.dtype == np.uint8 and pred.max() < 4
    nifti = np.asanyarray(nib.load(str(tmp_path / "out" / "p1n_pred.nii")).dataobj)
    np.testing.assert_array_equal(nifti.transpose(2, 1, 0), pred)  # same slices, same orientation
    as_nifti = np.asanyarray(nib.load(str(tmp_path / "out" / "p1_pred.nii.gz")).dataobj)
    np.testing.assert_array_equal(as_nifti.transpose(2, 1, 0), pred)   # four classes: indices 0..3
    assert cv2.imread(str(tmp_path / "out" / "p1_overlay.png")).shape[2] == 3

    # the CLI's result is the network's own prediction (via --checkpoint this time), its slices
    # resized as the run's dataset was prepared (acdc: nearest, data.acdc.interpolation)
    assert run_cli(predict_command, ["predict", "--checkpoint", str(run_dir / "checkpoints" / "best.pt"),
                             str(tmp_path / "p1.h5"), "--out", str(tmp_path / "again"), "--device", "cpu"]) == 0
    for rule, same in ((Resizing("nearest", "nearest"), True), (Resizing(), False)):
        direct = predict_files(net, [tmp_path / "p1.h5"], tmp_path / f"direct-{same}", SIZE, resizing=rule)[0]
        with h5py.File(tmp_path / "again" / "p1_pred.h5") as a, h5py.File(direct) as b:
            assert np.array_equal(a["pred"][()], b["pred"][()]) == same


def test_tiny_unet_on_real_isic_jpeg(tmp_path, isic_dir):
    net = save_run(tmp_path / "run", num_classes=2, in_channels=3, image_size=SIZE, dataset="isic")
    jpg = sorted((isic_dir / "ISIC2018_Task1-2_Training_Input").glob("*.jpg"))[0]
    predict_files(net, [jpg], tmp_path / "out", SIZE)
    mask = cv2.imread(str(tmp_path / "out" / f"{jpg.stem}_mask.png"), cv2.IMREAD_UNCHANGED)
    over = cv2.imread(str(tmp_path / "out" / f"{jpg.stem}_overlay.png"))
    assert mask.shape == cv2.imread(str(jpg)).shape[:2] and over.shape == cv2.imread(str(jpg)).shape
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}   # ISIC's own mask format


def write_bad_inputs(d):
    (d / "noise.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.float32), np.eye(4)), str(d / "cut.nii.gz"))
    (d / "cut.nii.gz").write_bytes((d / "cut.nii.gz").read_bytes()[:60])
    (d / "text.h5").write_text("not hdf5")
    with h5py.File(d / "nolabel.h5", "w") as f:
        f["label"] = np.zeros((4, 4), np.uint8)
    with h5py.File(d / "raw.h5", "w") as f:
        f["image"] = np.full((4, 4), 900.0)
    nib.save(nib.Nifti1Image(np.ones((4, 4, 2, 3), np.float32), np.eye(4)), str(d / "series.nii"))
    (d / "notes.txt").write_text("hello")


@pytest.mark.parametrize("name, message", [
    ("noise.png", "truncated PNG"),
    ("cut.nii.gz", "cannot read this NIfTI"),
    ("text.h5", "cannot read this HDF5"),
    ("nolabel.h5", "no `image` dataset"),
    ("raw.h5", "expected \\[0, 1\\]"),
    ("series.nii", "not 2D or 3D"),
    ("notes.txt", "unsupported input type"),
    ("missing.png", "not found"),
])
def test_bad_inputs_are_user_errors_naming_the_file(tmp_path, name, message):
    write_bad_inputs(tmp_path)
    with pytest.raises(UserError, match=message) as info:
        predict_files(threshold_net(), [tmp_path / name], tmp_path / "out", SIZE)
    assert name in str(info.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_same_stem_twice_is_refused_before_any_work(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        cv2.imwrite(str(tmp_path / sub / "x.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(UserError, match="would both write x_mask.png"):
        predict_files(threshold_net(), [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"], tmp_path / "out", SIZE)
    assert not (tmp_path / "out").exists()


def test_checkpoint_best_or_last_as_in_evaluate_points_to_run_dir_and_which(tmp_path, monkeypatch):
    """`--checkpoint` names a file in `predict` and best|last in `evaluate` (where `--which` is the
    same option): `predict --checkpoint last` says how to write it, before reading any input."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="no file 'last'") as info:
        run_cli(predict_command, ["predict", "--checkpoint", "last", str(tmp_path / "missing.png")])
    assert "--run-dir RUN_DIR --which last" in info.value.fix


def test_out_defaults_under_results_of_the_runs_profile(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "x.png"), (blocky((SIZE, SIZE), 6) * 255).astype(np.uint8))
    results = tmp_path / "results"
    save_run(tmp_path / "run", num_classes=2, in_channels=1, image_size=SIZE, dataset="isic",
             overrides=[f"paths.results={results}"])
    assert run_cli(predict_command, ["predict", "--run-dir", str(tmp_path / "run"), str(tmp_path / "x.png"),
                                     "--device", "cpu"]) == 0
    out = results / "demo" / "predictions" / "test-run" / "seed1" / "best"
    assert sorted(p.name for p in out.iterdir()) == [predict.MANIFEST, "x_mask.png", "x_overlay.png"]
    assert capsys.readouterr().out.split() == [str(out / "x_mask.png"), str(out / "x_overlay.png")]
