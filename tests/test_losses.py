"""Shared losses and schedules against hand-computed values."""

import math

import pytest
import torch

from ugpcl.config import load_config
from ugpcl.losses import ce_dice, dice_loss, ramp_weight, sigmoid_rampup
from ugpcl.methods import build_method


def test_ugpcl_consistency_ramp_at_first_middle_and_last_iteration():
    """lambda_t = 0.01 * exp(-5 (1 - min(t // 100, 100) / 100)^2), METHODS §3.3."""
    hp = load_config()["methods"]["ugpcl"]
    ramp = lambda t: ramp_weight(t, hp["consistency"], hp["ramp_epoch"], hp["ramp_length"])  # noqa: E731
    assert ramp(0) == pytest.approx(0.01 * math.exp(-5))
    assert ramp(5000) == pytest.approx(0.01 * math.exp(-5 * 0.5**2))
    assert ramp(9999) == pytest.approx(0.01 * math.exp(-5 * 0.01**2))
    assert ramp(10000) == pytest.approx(0.01) and ramp(20000) == pytest.approx(0.01)
    # with the paper's 6000 iterations the code's ramp peaks below the paper's 0.01
    assert ramp(5999) == pytest.approx(0.01 * math.exp(-5 * 0.41**2))


def test_sigmoid_rampup_bounds():
    assert sigmoid_rampup(0, 0) == 1.0
    assert sigmoid_rampup(-3, 10) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(50, 10) == 1.0


def test_dice_loss_by_hand_with_and_without_background():
    # one 1x2 image, 2 classes; probabilities fixed by the logits
    logits = torch.log(torch.tensor([[[[0.8, 0.3]], [[0.2, 0.7]]]]))
    target = torch.tensor([[[0, 1]]])
    d0 = 1 - (2 * 0.8 + 1e-5) / ((0.8**2 + 0.3**2) + 1 + 1e-5)
    d1 = 1 - (2 * 0.7 + 1e-5) / ((0.2**2 + 0.7**2) + 1 + 1e-5)
    assert dice_loss(logits, target, include_background=True).item() == pytest.approx((d0 + d1) / 2, rel=1e-5)
    assert dice_loss(logits, target, include_background=False).item() == pytest.approx(d1 / 2, rel=1e-5)
    ce = -(math.log(0.8) + math.log(0.7)) / 2
    assert ce_dice(logits, target).item() == pytest.approx(0.5 * ce + 0.5 * d1 / 2, rel=1e-5)


def test_rotation_classes_match_the_applied_quarter_turns(monkeypatch):
    import ugpcl.methods.ugpcl as ugpcl_module
    from ugpcl.methods.base import Batch

    monkeypatch.setattr(ugpcl_module, "ROTATION_DEG", 0.0)  # quarter turns only, so the check is exact
    method = build_method(load_config(profile="demo"), "ugpcl", 4, 1)
    image = torch.arange(8 * 32 * 32, dtype=torch.float32).view(8, 1, 32, 32) / (8 * 32 * 32)
    label = (image[:4, 0] * 4).long().clamp(max=3)
    torch.manual_seed(3)
    rotated, rotated_label, k = method.rotate(Batch(image, label, 4))
    assert len(set(k.tolist())) > 1
    for i in range(8):
        assert torch.allclose(rotated[i], torch.rot90(image[i], int(k[i]), dims=(-2, -1)), atol=1e-6)
    for i in range(4):
        assert torch.equal(rotated_label[i], torch.rot90(label[i], int(k[i]), dims=(-2, -1)))
