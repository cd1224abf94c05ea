"""UGPCL end to end: it learns real ACDC slices, every ablation switch trains, and the CLI runs."""

import json
import subprocess
import sys

import pytest
import torch

from ugpcl.config import load_config
from ugpcl.engine.trainer import Trainer
from ugpcl.methods import build_method
from ugpcl.metrics import validation_dice
from ugpcl.methods.base import Batch

INFO = {"run_id": "learn", "method": "ugpcl", "dataset": "acdc", "regime": "tiny", "seed": 1,
        "profile": "demo", "overrides": {}}


def test_ugpcl_learns_real_acdc_slices(tiny_acdc, tmp_path):
    """8 labeled + 8 unlabeled real slices at 64 px, width-8 encoder, 400 CPU steps (about 2 min)."""
    cfg = load_config(profile="demo", overrides=[
        "train.iterations=400", "model.width=8", "train.lr=0.1", "train.min_lr=0.1",
        "train.batch_size=8", "train.labeled_bs=4", "train.val_every=50", "train.checkpoint_every=1000",
        "train.augment.crop_scale=[1.0,1.0]", "train.augment.hflip_p=0.0", "train.augment.color_jitter_p=0.0",
        "methods.ugpcl.contrast_start=20", "methods.ugpcl.memory_size=16",
    ])
    trainer = Trainer(cfg, INFO, tmp_path, data=tiny_acdc)
    assert trainer.fit(progress=False)
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert {"sup", "sup_tf", "con", "rot", "contrast", "threshold"} <= logged[-1].keys()
    assert trainer.best >= 0.8, f"best mean foreground Dice {trainer.best:.3f} on the training slices"
    # the checkpointed best network scores what validation saw
    from ugpcl.engine.checkpoint import load_run

    best = load_run(tmp_path, "best")
    assert validation_dice(best.net, trainer.data, 8, "cpu") == pytest.approx(trainer.best, abs=1e-6)


@pytest.mark.parametrize("overrides, expected, absent", [
    ({"consistency_loss": False, "contrast": "none"}, {"sup", "sup_tf", "rot"}, {"con", "contrast"}),
    ({"equivariance_loss": False, "contrast": "none"}, {"sup", "con"}, {"rot", "contrast"}),
    ({"contrast": "sup"}, {"contrast", "con", "rot"}, set()),
    ({"contrast": "pseudo"}, {"contrast"}, set()),
    ({"contrast": "ugpcl", "embed_stage": "conv4"}, {"contrast", "threshold"}, set()),
    ({"equivariance_turns": "all", "contrast": "none"}, {"sup", "con", "rot"}, {"contrast"}),
])
def test_every_ablation_switch_trains(overrides, expected, absent):
    cfg = load_config(profile="demo", overrides=["methods.ugpcl.contrast_start=0"] +
                      [f"methods.ugpcl.{k}={json.dumps(v)}" for k, v in overrides.items()])
    torch.manual_seed(0)
    method = build_method(cfg, "ugpcl", 4, 1)
    method.train()
    batch = Batch(torch.rand(4, 1, 64, 64), torch.randint(0, 4, (2, 64, 64)), 2)
    loss, logs = method.compute_loss(batch, t=5)
    loss.backward()
    method.after_step(5)
    assert expected <= logs.keys() and not (absent & logs.keys())
    assert torch.isfinite(loss)
    has_rotation = method.model.rotation_head is not None
    assert has_rotation == cfg["methods"]["ugpcl"]["equivariance_loss"]


@pytest.mark.parametrize("equivariance, rotate_anyway, rotates", [
    (True, False, True), (False, True, True), (False, False, False)])
def test_rotation_follows_the_equivariance_switch_and_its_option(equivariance, rotate_anyway, rotates):
    """The authors rotate only when cls_weight >= 0: without l_e, cls_weight 0 rotates, -1 does not."""
    cfg = load_config(profile="demo", overrides=[
        f"methods.ugpcl.equivariance_loss={json.dumps(equivariance)}",
        f"methods.ugpcl.rotate_without_equivariance={json.dumps(rotate_anyway)}", "methods.ugpcl.contrast=none"])
    method = build_method(cfg, "ugpcl", 4, 1)
    seen = []
    method.model.forward_heads = lambda x, inner=method.model.forward_heads: (seen.append(x), inner(x))[1]
    image = torch.zeros(3, 1, 64, 64)
    image[:, :, 5:20, 40:60] = 1.0
    torch.manual_seed(1)
    method.compute_loss(Batch(image, (image[:2, 0] > 0.5).long() * 3, 2), t=0)
    assert torch.equal(seen[0], image) != rotates


@pytest.mark.parametrize("turns", ["one", "all"])
def test_equivariance_loss_is_one_turn_or_eq_12s_mean_over_all_four(turns, monkeypatch):
    """`one` (both codes): the CE of each image's own turn k; `all`: eq. 12's mean over the four turns,
    k + j for j = 0..3, computed here image by image with torch.rot90 (eval mode: no dropout)."""
    import torch.nn.functional as F
    import ugpcl.methods.ugpcl as module

    cfg = load_config(profile="demo", overrides=[f"methods.ugpcl.equivariance_turns={turns}",
                                                 "methods.ugpcl.contrast=none"])
    torch.manual_seed(0)
    method = build_method(cfg, "ugpcl", 4, 1)
    method.eval()
    drawn, draw = [], module.random_turns
    monkeypatch.setattr(module, "random_turns", lambda *a: drawn.append(draw(*a)) or drawn[-1])
    image = torch.rand(4, 1, 64, 64)
    _, logs = method.compute_loss(Batch(image, torch.randint(0, 4, (2, 64, 64)), 2), t=5)
    turned, _, k = drawn[0]
    net = method.model
    terms = []
    with torch.no_grad():
        for j in range(4 if turns == "all" else 1):
            logits = net.rotation_head(net.encode(torch.rot90(turned, j, dims=(-2, -1)))[5])
            terms.append(F.cross_entropy(logits, (k + j) % 4))
    assert len(set(k.tolist())) > 1
    assert logs["rot"].item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)


@pytest.mark.parametrize("augment_rotation", [False, True])
def test_ugpcl_trains_without_the_baselines_turns_unless_asked(tiny_acdc, tmp_path, augment_rotation):
    """The authors' baseline configs turn images in their data loader (p_flip = p_rot = 0.5); their
    UGPCL config sets both 0 ("Remove random rotation"), as its step turns every image itself."""
    cfg = load_config(profile="demo", overrides=["train.augment.rot90_flip_p=0.5", "train.augment.rotate_p=0.5",
                                                 f"methods.ugpcl.augment_rotation={json.dumps(augment_rotation)}"])
    shared = cfg["train"]["augment"]
    for name in ("supervised", "mt", "cps"):
        assert build_method(cfg, name, 4, 1).augmentation(shared) == shared
    trainer = Trainer(cfg, INFO, tmp_path, data=tiny_acdc)  # what its batches get
    if augment_rotation:
        assert trainer.augment == shared
    else:
        assert trainer.augment == {**shared, "rot90_flip_p": 0.0, "rotate_p": 0.0}
    assert shared["rot90_flip_p"] == 0.5  # params.yaml untouched


def test_rotation_turns_labels_with_images():
    from ugpcl.geometry import random_turns

    image = torch.zeros(3, 1, 64, 64)
    image[:, :, 5:20, 40:60] = 1.0           # a bright block; the label marks the same block
    label = (image[:2, 0] > 0.5).long() * 3
    torch.manual_seed(1)
    rotated, rotated_label, k = random_turns(image, label, 20.0, "nearest")
    assert k.shape == (3,) and set(k.tolist()) <= {0, 1, 2, 3}
    # wherever the turned label says LV, the turned image is bright (nearest rotation of both)
    inside = rotated_label == 3
    assert inside.any() and (rotated[:2, 0][inside] > 0.5).all()


def test_train_and_evaluate_commands_on_demo_data(tmp_path):
    """`ugpcl prepare`, `ugpcl train` and `ugpcl evaluate` through the console entry point."""
    def ugpcl(*args):
        out = subprocess.run([sys.executable, "-m", "ugpcl.cli", *args], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    common = ["--profile", "demo", "--set", f"paths.raw={tmp_path / 'raw'}", "--set", f"paths.results={tmp_path / 'res'}",
              "--set", "train.iterations=6", "--set", "train.val_every=3"]
    ugpcl("prepare", "acdc", *common)
    run_dir = tmp_path / "run"
    ugpcl("train", *common, "--run", "acdc136_ugpcl", "--out", str(run_dir), "--no-progress")
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())
    assert summary["method"] == "ugpcl" and summary["n_cases"] == 8 and 0 <= summary["dice"] <= 1
    assert summary["distance_unit"] == "mm"  # the demo NIfTI files carry a voxel size
    last = json.loads((run_dir / "eval-last" / "summary.json").read_text())
    assert (summary["checkpoint"], last["checkpoint"], last["iteration"]) == ("best", "last", 6)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "finished" and (run["dice_best"], run["dice_last"]) == (summary["dice"], last["dice"])
    assert run["dice"] == run["dice_best"] and run["choices"]["methods.*.ramp_schedule"]["ugpcl"] == "run"
    weights = [json.loads(line).get("weight") for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert weights[-1] == 0.01  # lambda on the last iteration
    ugpcl("evaluate", "--run-dir", str(run_dir), "--which", "last", "--out", str(tmp_path / "again"))
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["checkpoint"] == "last"
    assert "already holds a finished run" in ugpcl("train", *common, "--run", "acdc136_ugpcl", "--out", str(run_dir))
