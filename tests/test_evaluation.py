import argparse
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from ugpcl import metrics
from ugpcl.commands import evaluate as evaluate_command
from ugpcl.config import load_config
from ugpcl.data.prepared import load_prepared, write_prepared
from ugpcl.errors import UserError
from ugpcl.metrics import (
    evaluate_network,
    predict_slices,
    resize_labels,
    score_cases,
    score_volume,
    summarise,
    validation_dice,
    write_evaluation,
)
from ugpcl.engine.checkpoint import save_method
from ugpcl.methods import build_method

ACDC_CLASSES = ["background", "RV", "Myo", "LV"]
S = 16  # prepared image size in these tests


class LabelNet(nn.Module):
    """Reads the label encoded in the image (label / (C - 1)) and returns large logits for it."""

    def __init__(self, num_classes: int = 4, shift: int = 0):
        super().__init__()
        self.num_classes = num_classes
        self.shift = shift  # roll the prediction along W to get imperfect but known outputs
        self.scale = nn.Parameter(torch.ones(()))  # gives the module a device and a train flag to restore

    def forward(self, x):
        label = torch.round(x[:, 0] * (self.num_classes - 1)).long().roll(self.shift, dims=-1)
        return 20.0 * self.scale * nn.functional.one_hot(label, self.num_classes).permute(0, 3, 1, 2).float()


def square(size=32, top=8, left=8, side=8, value=1):
    m = np.zeros((size, size), np.uint8)
    m[top : top + side, left : left + side] = value
    return m


def make_acdc(tmp_path, shapes=((3, 32, 48), (2, 48, 32)), size=S):
    """A prepared ACDC-like file whose non-square originals are the size x size labels scaled up by whole blocks."""
    rng = np.random.default_rng(0)
    val_labels, originals, cases = [], {}, []
    for i, (d, h, w) in enumerate(shapes):
        small = np.zeros((d, S, S), np.uint8)
        small[:, 2:7, 3:9] = 1
        small[:, 8:13, 4:12] = 2
        small[1:, 6:10, 10:15] = 3
        small = resize_labels(small, (size, size))
        case = f"patient{i:03d}_frame01"
        originals[case] = np.stack([np.kron(s, np.ones((h // size, w // size), np.uint8)) for s in small])
        val_labels.append(small)
        cases += [case] * d
    val_labels = np.concatenate(val_labels)
    val_images = (val_labels / 3.0).astype(np.float32)[:, None]
    train_labels = rng.integers(0, 4, (4, size, size)).astype(np.uint8)
    path = write_prepared(
        tmp_path / "acdc.h5", dataset="acdc", class_names=ACDC_CLASSES,
        train_images=(train_labels / 3.0).astype(np.float32)[:, None], train_labels=train_labels,
        train_names=[f"t{i}" for i in range(4)], train_groups=["p"] * 4, labeled={"2": np.array([0, 1])},
        val_images=val_images, val_labels=val_labels, val_names=[f"v{i}" for i in range(len(cases))],
        val_cases=cases, val_original=originals,
    )
    return load_prepared(path)


def test_identical_prediction_scores_perfectly():
    truth = np.zeros((4, 20, 24), np.uint8)
    truth[1:3, 4:10, 5:12] = 1
    truth[:, 12:18, 2:8] = 2
    truth[0:2, 2:6, 15:22] = 3
    s = score_volume(truth.copy(), truth, 4)
    np.testing.assert_allclose(s["dice"], 1.0)
    np.testing.assert_allclose(s["jaccard"], 1.0)
    np.testing.assert_allclose(s["hd95"], 0.0)
    np.testing.assert_allclose(s["asd"], 0.0)


def test_shifted_square_matches_hand_computed_scores():
    # 8x8 square shifted by k = 2 columns: overlap 8x6 = 48 px.
    # Dice = 2*48 / (64 + 64) = 0.75; Jaccard = 48 / (64 + 64 - 48) = 0.6.
    # Boundary rings (28 px each): distances from one ring to the other are 0 (12 px), 1 (4 px)
    # and 2 (12 px), in both directions, so HD95 = 2 and ASD = (4*1 + 12*2) / 28 = 1.
    s = score_volume(square(left=10), square(left=8), 2)
    assert s["dice"][0] == pytest.approx(0.75)
    assert s["jaccard"][0] == pytest.approx(0.6)
    assert s["hd95"][0] == pytest.approx(2.0)
    assert s["asd"][0] == pytest.approx(1.0)
    assert s["pred_voxels"][0] == s["truth_voxels"][0] == 64


def test_hd95_medpy_pools_both_directions_monai_takes_the_larger():
    """A 10-px line; the prediction adds two stray pixels 4 rows below it. Every pixel of a 1-px
    structure is surface. prediction -> truth: 10 x 0 and 2 x 4; truth -> prediction: 10 x 0.
    MONAI: max(p95 of [0]*10 + [4, 4], p95 of [0]*10) = 4. medpy: p95 of the 22 pooled values
    (20 zeros, 2 fours) = 0 + 0.95 * 4 = 3.8 (linear interpolation at rank 19.95)."""
    truth = np.zeros((12, 14), np.uint8)
    truth[1, 1:11] = 1
    pred = truth.copy()
    pred[5, 1] = pred[5, 10] = 1
    s = score_volume(pred, truth, 2)
    assert s["hd95"][0] == pytest.approx(4.0) and s["hd95_medpy"][0] == pytest.approx(3.8)
    assert metrics.hd95_pooled(pred == 1, truth == 1) == pytest.approx(3.8)
    # 2 mm between rows, 1 mm between columns: the stray pixels lie 8 mm away
    s = score_volume(pred, truth, 2, spacing=(2.0, 1.0))
    assert s["hd95"][0] == pytest.approx(8.0) and s["hd95_medpy"][0] == pytest.approx(7.6)
    assert s["asd"][0] == pytest.approx(2 * 8.0 / 12)  # directed, prediction surface to truth surface


def test_hd95_definitions_share_monai_surfaces_on_random_blobs():
    """MONAI's HD95 equals the larger of the two directed 95th percentiles of `surface_distances`:
    the two definitions differ only in pooling, not in what a surface is."""
    rng = np.random.default_rng(3)
    for _ in range(5):
        from scipy import ndimage

        a = ndimage.binary_dilation(rng.random((6, 30, 30)) > 0.97, iterations=2)
        b = ndimage.binary_dilation(rng.random((6, 30, 30)) > 0.97, iterations=2)
        spacing = (5.0, 1.3, 0.9)
        s = score_volume(a.astype(np.uint8), b.astype(np.uint8), 2, spacing=spacing)
        ab, ba = metrics.surface_distances(a, b, spacing), metrics.surface_distances(b, a, spacing)
        assert s["hd95"][0] == pytest.approx(max(np.percentile(ab, 95), np.percentile(ba, 95)), rel=1e-5)
        assert s["hd95_medpy"][0] == pytest.approx(np.percentile(np.concatenate([ab, ba]), 95), rel=1e-9)
        assert s["asd"][0] == pytest.approx(ab.mean(), rel=1e-5)


def test_distances_in_mm_where_the_prepared_file_has_spacing(tmp_path):
    prepared = make_acdc(tmp_path)
    shifted = np.roll(prepared.val.labels, 1, axis=-1)
    assert metrics.distance_unit(prepared) == "voxel" and metrics.distance_unit(prepared, "slices") is None
    voxels = score_cases(shifted, prepared).set_index(["case", "class"])
    prepared.val_spacing = {case: (2.0, 2.0, 2.0) for case in prepared.val_original}
    assert metrics.distance_unit(prepared) == "mm"
    mm = score_cases(shifted, prepared).set_index(["case", "class"])
    for key in ("hd95", "hd95_medpy", "asd"):  # 2 mm voxels: every distance doubles
        np.testing.assert_allclose(mm[key], 2.0 * voxels[key])
    _, summary = evaluate_network(LabelNet(), prepared, batch_size=4)
    assert summary["distance_unit"] == "mm"


def test_edge_cases_absent_empty_and_spurious():
    truth = square(value=1)
    truth[20:26, 20:26] = 2
    pred = np.zeros_like(truth)
    pred[0:4, 0:4] = 3  # class 1 and 2 missed entirely; class 3 predicted but absent from truth
    s = score_volume(pred, truth, 5)  # class 4 absent from both
    np.testing.assert_array_equal(s["dice"][:3], [0, 0, 0])
    np.testing.assert_array_equal(s["jaccard"][:3], [0, 0, 0])
    assert np.isnan(s["hd95"]).all() and np.isnan(s["asd"]).all()  # never the optimistic 0
    assert math.isnan(s["dice"][3]) and math.isnan(s["jaccard"][3])


def test_summary_excludes_absent_classes_and_counts_empty_predictions():
    per_case = pd.DataFrame({
        "case": ["a", "a", "b", "b"],
        "class": ["RV", "LV", "RV", "LV"],
        "dice": [0.8, np.nan, 0.0, 0.6],       # LV absent from both in case a
        "jaccard": [0.7, np.nan, 0.0, 0.5],
        "hd95": [2.0, np.nan, np.nan, 4.0],     # RV empty prediction in case b
        "hd95_medpy": [1.5, np.nan, np.nan, 3.0],
        "asd": [1.0, np.nan, np.nan, 3.0],
        "pred_voxels": [10, 0, 0, 7],
        "truth_voxels": [12, 0, 9, 8],
    })
    s = summarise(per_case, ["background", "RV", "LV"])
    assert s["per_class"]["RV"]["dice"] == pytest.approx(0.4)   # (0.8 + 0) / 2: the miss counts as 0
    assert s["per_class"]["LV"]["dice"] == pytest.approx(0.6)   # case a excluded, not 0 and not 1
    assert s["dice"] == pytest.approx(0.5)
    assert s["hd95"] == pytest.approx(3.0)                      # (2 + 4) / 2
    assert s["hd95_medpy"] == pytest.approx(2.25)
    assert s["empty_predictions"] == 1 and s["per_class"]["RV"]["empty_predictions"] == 1
    assert s["n_cases"] == 2
    assert list(s["per_class"]) == ["RV", "LV"]


def test_resize_labels_nearest_keeps_whole_blocks():
    small = np.array([[[0, 1], [2, 3]]], np.uint8)
    big = resize_labels(small, (4, 6))
    np.testing.assert_array_equal(big[0], np.kron(small[0], np.ones((2, 3), np.uint8)))


def test_acdc_scored_at_original_resolution(tmp_path):
    prepared = make_acdc(tmp_path)
    per_case = score_cases(prepared.val.labels.copy(), prepared)
    assert len(per_case) == 2 * 3 and set(per_case["class"]) == {"RV", "Myo", "LV"}
    np.testing.assert_allclose(per_case["dice"], 1.0)
    np.testing.assert_allclose(per_case["hd95"], 0.0)
    for case, original in prepared.val_original.items():
        rows = per_case[per_case["case"] == case].set_index("class")
        assert rows.loc["LV", "truth_voxels"] == (original == 3).sum()
        assert rows.loc["LV", "truth_voxels"] != (prepared.val.labels[np.array(prepared.val_cases) == case] == 3).sum()

    # Moving the 16 px prediction one column moves it 3 original px in the 32 x 48 volume
    # (3 px per column) and 2 px in the 48 x 32 one: HD95 is measured at original resolution.
    shifted = np.roll(prepared.val.labels, 1, axis=-1)
    per_case = score_cases(shifted, prepared).set_index(["case", "class"])
    assert per_case.loc[("patient000_frame01", "RV"), "hd95"] == pytest.approx(3.0)
    assert per_case.loc[("patient001_frame01", "RV"), "hd95"] == pytest.approx(2.0)


def test_evaluate_network_with_label_reading_net_gives_dice_one(tmp_path):
    prepared = make_acdc(tmp_path)
    net = LabelNet().train()
    per_case, summary = evaluate_network(net, prepared, batch_size=2)
    assert net.training  # mode restored
    assert summary["dice"] == pytest.approx(1.0) and summary["jaccard"] == pytest.approx(1.0)
    assert summary["hd95"] == pytest.approx(0.0) and summary["asd"] == pytest.approx(0.0)
    assert summary["n_cases"] == 2 and summary["empty_predictions"] == 0
    assert set(summary["per_class"]) == {"RV", "Myo", "LV"}

    write_evaluation(tmp_path / "eval", per_case, summary)
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["dice"] == pytest.approx(1.0)
    assert len(pd.read_csv(tmp_path / "eval" / "per_case.csv")) == 6


def test_predict_slices_uint8_and_float_agree_and_restore_eval_mode():
    labels = np.random.default_rng(1).integers(0, 2, (5, 8, 8)).astype(np.uint8)
    net = LabelNet(num_classes=2).eval()
    as_float = predict_slices(net, labels[:, None].astype(np.float32), batch_size=2)
    as_uint8 = predict_slices(net, (labels[:, None] * 255).astype(np.uint8), batch_size=3)
    np.testing.assert_array_equal(as_float, labels)
    np.testing.assert_array_equal(as_uint8, labels)
    assert as_float.dtype == np.uint8 and not net.training


def test_validation_dice_matches_monai_per_case_scores(tmp_path):
    prepared = make_acdc(tmp_path)
    assert validation_dice(LabelNet(), prepared, batch_size=2) == pytest.approx(1.0)

    net = LabelNet(shift=2)
    pred = predict_slices(net, prepared.val.images, 4)
    per_class = []
    for _, index in prepared.case_slices().items():
        per_class.append(score_volume(pred[index], prepared.val.labels[index], 4)["dice"])
    expected = np.nanmean(np.stack(per_class), axis=0).mean()
    assert 0.2 < expected < 0.95
    assert validation_dice(net, prepared, batch_size=3) == pytest.approx(expected)


def test_selection_score_follows_the_protocol(tmp_path):
    """Best-checkpoint selection scores the very cases, and with `slices` the very metric, of evaluation."""
    prepared = make_acdc(tmp_path, shapes=((12, 32, 32), (2, 32, 32), (6, 32, 32)))  # batches mix cases
    net = LabelNet(shift=2)
    slices = validation_dice(net, prepared, batch_size=4, protocol="slices")
    assert slices == pytest.approx(evaluate_network(net, prepared, 4, protocol="slices")[1]["dice"])
    assert slices != pytest.approx(validation_dice(net, prepared, batch_size=4), abs=1e-3)


def test_isic_scored_per_image_at_image_size(tmp_path):
    labels = np.stack([square(16, 4, 4, 6), square(16, 2, 3, 5), np.zeros((16, 16), np.uint8)])
    images = np.repeat((labels * 255)[:, None], 3, axis=1).astype(np.uint8)
    path = write_prepared(
        tmp_path / "isic.h5", dataset="isic", class_names=["background", "lesion"], train_images=images,
        train_labels=labels, train_names=list("abc"), train_groups=list("abc"), labeled={"1": np.array([0])},
        val_images=images, val_labels=labels, val_names=list("abc"), val_cases=list("abc"),
    )
    prepared = load_prepared(path)
    per_case, summary = evaluate_network(LabelNet(num_classes=2), prepared)
    assert list(per_case["case"]) == list("abc") and list(per_case["truth_voxels"]) == [36, 25, 0]
    assert summary["per_class"]["lesion"]["dice"] == pytest.approx(1.0)
    assert math.isnan(per_case["dice"][2])  # lesion absent from both: excluded
    assert summary["n_cases"] == 3


def save_run(run_dir, num_classes, in_channels, image_size, dataset="acdc", method="supervised", overrides=()):
    """A run directory in the engine's checkpoint format, holding an untrained tiny UNet; returns its net."""
    cfg = load_config(profile="demo", overrides=[f"data.image_size={image_size}", *overrides])
    info = {"method": method, "dataset": dataset, "regime": "2", "seed": 1, "run_id": "test-run",
            "profile": "demo", "num_classes": num_classes, "in_channels": in_channels}
    torch.manual_seed(0)
    model = build_method(cfg, method, num_classes, in_channels)
    save_method(run_dir / "checkpoints" / "best.pt", model, cfg, info, 7)
    (run_dir / "run.json").write_text(json.dumps(info))
    return model.model.eval()


def run_cli(module, argv):
    """Parse and run one subcommand of `module` alone (the full CLI imports every stage)."""
    parser = argparse.ArgumentParser()
    module.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_evaluate_writes_summary_with_run_description(tmp_path):
    prepared = make_acdc(tmp_path, shapes=((2, 64, 96),), size=32)
    net = save_run(tmp_path / "run", 4, 1, 32)
    assert run_cli(evaluate_command, ["evaluate", "--run-dir", str(tmp_path / "run"), "--data", str(prepared.path),
                                "--device", "cpu"]) == 0
    out = tmp_path / "run" / "evaluations" / "best-volume"  # never over the training's own eval/
    summary = json.loads((out / "summary.json").read_text())
    assert {k: summary[k] for k in ("method", "dataset", "regime", "seed", "checkpoint", "iteration", "protocol")} == {
        "method": "supervised", "dataset": "acdc", "regime": "2", "seed": 1, "checkpoint": "best", "iteration": 7,
        "protocol": "volume"}
    _, expected = evaluate_network(net, prepared)
    for key in ("dice", "jaccard", "empty_predictions", "n_cases"):
        assert summary[key] == pytest.approx(expected[key], nan_ok=True)
    per_case = pd.read_csv(out / "per_case.csv")
    assert list(per_case.columns[:7]) == ["case", "class", "dice", "jaccard", "hd95", "hd95_medpy", "asd"]
    assert set(per_case["network"]) == {"model"} and list(summary["networks"]) == ["model"]


def test_cli_evaluate_of_a_workflow_run_writes_beside_the_runs_never_into_them(tmp_path):
    """results/<profile>/runs/ are Snakemake's outputs and DVC's: `dvc repro` would restore them."""
    prepared = make_acdc(tmp_path, shapes=((2, 64, 96),), size=32)
    results = tmp_path / "results"
    run_dir = results / "demo" / "runs" / "acdc2_supervised" / "seed1"
    save_run(run_dir, 4, 1, 32, overrides=[f"paths.results={results}"])
    args = ["evaluate", "--run-dir", str(run_dir), "--data", str(prepared.path), "--device", "cpu"]
    assert run_cli(evaluate_command, [*args, "--checkpoint", "best", "--protocol", "slices"]) == 0
    out = results / "demo" / "evaluations" / "acdc2_supervised" / "seed1" / "best-slices"
    assert json.loads((out / "summary.json").read_text())["protocol"] == "slices"
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "run.json"]   # untouched
    with pytest.raises(UserError, match="lies in a run directory of the workflows") as err:
        run_cli(evaluate_command, [*args, "--out", str(run_dir / "eval-mine")])
    assert str(out.parent / "best-volume") in str(err.value) and not (run_dir / "eval-mine").exists()


def test_cli_evaluate_missing_run_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        run_cli(evaluate_command, ["evaluate", "--run-dir", str(tmp_path / "nope"), "--device", "cpu"])


def test_slices_protocol_pools_dice_per_batch_of_16(tmp_path):
    """The authors' protocol: Dice pooled over each batch of 16 slices, then averaged over batches."""
    prepared = make_acdc(tmp_path, shapes=((16, 32, 32), (4, 32, 32)))
    pred = prepared.val.labels.copy()
    pred[:16][pred[:16] == 3] = 0                 # batch 0: LV missed entirely
    pred[16:18][pred[16:18] == 1] = 0             # batch 1: RV missed in 2 of its 4 slices
    rows = metrics.score_batches(pred, prepared)
    assert list(rows["case"].unique()) == ["batch0000", "batch0001"]
    lv = rows[rows["class"] == "LV"].set_index("case")["dice"]
    rv = rows[rows["class"] == "RV"].set_index("case")["dice"]
    assert lv["batch0000"] == 0 and lv["batch0001"] == 1
    # RV is the same in every slice: 2 of 4 slices found -> 2*2n / (2n + 4n) = 2/3, pooled over the batch
    assert rv["batch0001"] == pytest.approx(2 / 3)
    summary = metrics.summarise(rows, ACDC_CLASSES)
    assert summary["per_class"]["LV"]["dice"] == pytest.approx(0.5)
    assert summary["per_class"]["RV"]["dice"] == pytest.approx((1 + 2 / 3) / 2)
    assert summary["hd95"] is None
