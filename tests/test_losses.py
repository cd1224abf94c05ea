"""Shared losses and schedules against hand-computed values."""

import math

import pytest
import torch
import torch.nn.functional as F

from ugpcl.config import load_config
from ugpcl.losses import ce_dice, cross_entropy, dice_loss, ramp_position, ramp_weight, sigmoid_rampup


def test_ugpcl_consistency_ramp_code_schedule_at_first_middle_and_last_iteration():
    """ramp_schedule code: lambda_t = 0.01 * exp(-5 (1 - min(t // 100, 100) / 100)^2), METHODS §3.3."""
    hp = load_config()["methods"]["ugpcl"]
    ramp = lambda t: ramp_weight(t, hp["consistency"], hp["ramp_epoch"], hp["ramp_length"])  # noqa: E731
    assert ramp(0) == pytest.approx(0.01 * math.exp(-5))
    assert ramp(5000) == pytest.approx(0.01 * math.exp(-5 * 0.5**2))
    assert ramp(9999) == pytest.approx(0.01 * math.exp(-5 * 0.01**2))
    assert ramp(10000) == pytest.approx(0.01) and ramp(20000) == pytest.approx(0.01)
    # with the paper's 6000 iterations the code's literal ramp peaks below the paper's 0.01
    assert ramp(5999) == pytest.approx(0.01 * math.exp(-5 * 0.41**2))


@pytest.mark.parametrize("total", [6000, 30000, 101, 2])
def test_run_schedule_spans_the_run_and_ends_on_its_last_iteration(total):
    """ramp_schedule run: epoch floor(t L / (T - 1)), so full weight exactly at t = T - 1, whatever T."""
    for length in (100, 200):
        assert ramp_position(total - 1, 150, length, total) == length
        assert ramp_weight(total - 1, 0.1, 150, length, total) == 0.1
        assert ramp_weight(0, 0.1, 150, length, total) == pytest.approx(0.1 * math.exp(-5))
        assert ramp_position(total // 2, 150, length, total) == total // 2 * length // (total - 1)
        positions = [ramp_position(t, 150, length, total) for t in range(0, total - 1, max(total // 50, 1))]
        assert positions == sorted(positions) and positions[-1] < length  # monotone, full only at the end
    assert ramp_weight(0, 0.1, 150, 200, 1) == 0.1  # a one-iteration run gets the full weight at once


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


def test_rotation_classes_match_the_applied_quarter_turns():
    from ugpcl.geometry import random_turns

    image = torch.arange(8 * 32 * 32, dtype=torch.float32).view(8, 1, 32, 32) / (8 * 32 * 32)
    label = (image[:4, 0] * 4).long().clamp(max=3)
    torch.manual_seed(3)
    for mode in ("nearest", "bilinear"):  # quarter turns only (max_deg 0), so the check is exact
        rotated, rotated_label, k = random_turns(image, label, 0.0, mode)
        assert len(set(k.tolist())) > 1
        for i in range(8):
            assert torch.allclose(rotated[i], torch.rot90(image[i], int(k[i]), dims=(-2, -1)), atol=1e-6)
        for i in range(4):
            assert torch.equal(rotated_label[i], torch.rot90(label[i], int(k[i]), dims=(-2, -1)))


def test_nearest_rotation_keeps_image_values_bilinear_blends_them():
    from ugpcl.geometry import random_turns

    image = torch.randint(0, 5, (6, 1, 32, 32)).float()
    label = image[:3, 0].long()
    torch.manual_seed(0)
    near, near_label, _ = random_turns(image, label, 20.0, "nearest")
    assert set(near.unique().tolist()) <= set(range(5))  # only values of the input (and the 0 fill)
    assert torch.equal(near_label, near[:3, 0].long())  # image and label resampled at the same points
    torch.manual_seed(0)
    blended, _, _ = random_turns(image, label, 20.0, "bilinear")
    assert not set(blended.unique().tolist()) <= set(range(5))


def test_turns_inside_the_training_steps_autocast_sample_where_float32_does():
    """UGPCL turns its batch inside train_step's bf16 autocast (CPU autocast stands in for CUDA's):
    the sampling grid stays float32, so images and labels come out as without autocast. With the
    grid built under autocast, about a fifth of the pixels moved (up to 0.9 px off at 224)."""
    from ugpcl.geometry import random_turns

    torch.manual_seed(0)
    image, label = torch.rand(4, 1, 224, 224), torch.randint(0, 4, (2, 224, 224), dtype=torch.uint8)
    torch.manual_seed(1)
    plain, plain_label, plain_k = random_turns(image, label, 20.0, "nearest")
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, mixed_label, mixed_k = random_turns(image, label, 20.0, "nearest")
    assert mixed.dtype == torch.float32 and mixed_label.dtype == torch.uint8
    assert torch.equal(mixed_k, plain_k)
    assert torch.equal(mixed, plain) and torch.equal(mixed_label, plain_label)


def test_cross_entropy_is_torchs_mean_over_the_pixels_not_ignored():
    """losses.cross_entropy takes the mean itself (nll_loss2d's own is atomic on CUDA): same value
    and gradient as torch's mean reduction, ignored pixels left out, NaN when all are ignored."""
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 5, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 4, (2, 6, 5))
    target[0, :3] = -1
    ours = cross_entropy(logits, target)
    theirs = F.cross_entropy(logits.float(), target, ignore_index=-1)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    (g_ours,) = torch.autograd.grad(ours, logits)
    (g_theirs,) = torch.autograd.grad(theirs, logits)
    assert torch.allclose(g_ours, g_theirs.double(), atol=1e-7)
    assert g_ours[0, :, :3].abs().max() == 0  # ignored pixels get no gradient
    assert torch.isnan(cross_entropy(logits, torch.full_like(target, -1)))
