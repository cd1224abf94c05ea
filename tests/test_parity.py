"""Parity with the authors' own code, and with METHODS.md where no recorded outputs exist.

`../shared/reference/authors_reference.pt` holds outputs of taovv/UGPCL (commit 5980405) run
unmodified on CPU (its README says what each value is). Each test feeds the same inputs to our
functions, or to our UGPCL step with a stub network returning the recorded tensors, and
compares: 1e-5 relative for float32 results, exact for labels and float64 schedules.
"""

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from ugpcl.config import load_config
from ugpcl.contrast import MemoryQueue, certainty_pseudo_labels, pixel_contrast_loss, uncertainty_threshold
from ugpcl.engine.step import train_step
from ugpcl.losses import ce_dice, cross_entropy, dice_loss, dice_per_class, ramp_weight, sigmoid_rampup
from ugpcl.methods import build_method, get_method, parse_hparams, setup_from_config
from ugpcl.methods.base import Batch

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "authors_reference.pt"
REL = 1e-5


@pytest.fixture(scope="module")
def ref() -> dict:
    assert REFERENCE.is_file(), f"the authors' reference outputs are expected at {REFERENCE}"
    return torch.load(REFERENCE, weights_only=True)


def close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Equal to REL relative to the reference's scale (elementwise relative error is meaningless
    for the near-zero entries of a gradient)."""
    scale = theirs.abs().max().item()
    torch.testing.assert_close(ours, theirs, rtol=REL, atol=REL * scale)


# --- contrast loss and its gradient ---------------------------------------------------------------
def queue_keys(ref) -> tuple[torch.Tensor, torch.Tensor]:
    """Our contrast set from the recorded class-major queue (as MemoryQueue.keys builds it)."""
    memory = MemoryQueue(4, 50, 256)
    memory.queue.copy_(ref["contrast/queue"])
    return memory.keys()


def test_contrast_set_is_the_authors(ref):
    keys, labels = queue_keys(ref)
    assert torch.equal(keys, ref["contrast/sample_negative_X"])
    assert torch.equal(labels.float(), ref["contrast/sample_negative_y"][:, 0])


def contrast(ref, case: str, self_mask: bool, temperature: float = 0.07,
             padded: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Our loss and d loss / d X_anchor for one recorded case of `PixelContrastLoss._contrastive`.
    padded: as `sample_anchors` returns them, fixed-size rows with a `chosen` mask; here a row that
    is not an anchor (class 1, constant 0.1) before each anchor."""
    anchors_key, labels_key = {"queue": ("X_anchor", "y_anchor"), "no_queue": ("X_anchor", "y_anchor"),
                               "queue_fg": ("X_anchor", "y_anchor_fg"),
                               "queue_2view": ("X_anchor_2view", "y_anchor_2view")}[case]
    x = ref[f"contrast/{anchors_key}"].clone().requires_grad_()
    views = x.shape[1]
    anchors = torch.cat(torch.unbind(x, dim=1))                 # view-major, as the code stacks views
    labels = ref[f"contrast/{labels_key}"].long().repeat(views)
    keys, key_labels = (anchors, labels) if case == "no_queue" else queue_keys(ref)
    chosen = None
    if padded:
        anchors = torch.stack([torch.full_like(anchors, 0.1), anchors], dim=1).flatten(0, 1)
        labels = torch.stack([torch.ones_like(labels), labels], dim=1).flatten()
        chosen = torch.tensor([False, True]).repeat(len(labels) // 2)
    loss = pixel_contrast_loss(anchors, labels, keys, key_labels, temperature, 0.07, self_mask=self_mask, chosen=chosen)
    loss.backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("case", ["queue", "no_queue", "queue_fg", "queue_2view"])
def test_contrast_loss_and_gradient_match_the_authors_with_the_quirk(ref, case):
    loss, grad = contrast(ref, case, self_mask=True)
    assert loss.item() == pytest.approx(ref[f"contrast/loss_{case}"], rel=REL)
    close(grad, ref[f"contrast/grad_X_anchor_{case}"])


@pytest.mark.parametrize("case", ["queue", "queue_fg", "queue_2view"])
def test_fixed_size_anchor_rows_give_the_authors_loss_with_the_quirk(ref, case):
    """The rows that are not anchors change nothing, and the quirk zeroes (i, index of row i among
    the anchors): zeroing (i, i) by row number, another key, fails."""
    loss, grad = contrast(ref, case, self_mask=True, padded=True)
    assert loss.item() == pytest.approx(ref[f"contrast/loss_{case}"], rel=REL)
    close(grad, ref[f"contrast/grad_X_anchor_{case}"])


def test_contrast_temperature_is_a_parameter_as_in_the_code(ref):
    loss, _ = contrast(ref, "queue", self_mask=True, temperature=0.1)
    assert loss.item() == pytest.approx(ref["contrast/loss_queue_T0.1"], rel=REL)
    assert (ref["contrast/temperature"], ref["contrast/base_temperature"]) == (0.07, 0.07)
    hp = get_method("ugpcl").HParams()
    assert (hp.temperature, hp.base_temperature) == (0.07, 0.07)


def test_without_the_quirk_only_the_documented_anchors_change(ref):
    """The quirk drops key row i from anchor i's positives; against the queue that matters only for
    anchors of class 1 at index < 50 (rows 0..49 are class 1): anchors 1, 5 and 9. The reference
    README gives the loss without it: 5.363595."""
    loss, grad = contrast(ref, "queue", self_mask=False)
    assert loss.item() == pytest.approx(5.363595, rel=REL)
    theirs = ref["contrast/grad_X_anchor_queue"]
    labels = ref["contrast/y_anchor"].long()
    changed = (labels == 1) & (torch.arange(len(labels)) < 50)
    assert changed.tolist() == [i in (1, 5, 9) for i in range(12)]
    close(grad[~changed], theirs[~changed])
    differs = (grad[changed] - theirs[changed]).flatten(1).abs().amax(1)
    assert (differs > 1e-4 * theirs.abs().max()).all()
    # every anchor's loss is its own: each changed anchor's gap equals what one positive fewer gives
    assert not get_method("ugpcl").HParams().self_mask_quirk  # off by default


# --- Dice, CE, the supervised total --------------------------------------------------------------
def test_dice_and_ce_with_the_config_weights(ref):
    logits, logits_tf, label = ref["seg/logits"], ref["seg/logits_tf"], ref["seg/label"][:, 0]
    assert json.loads(ref["loss/dice_cfg_kwargs"]) == {"weight": 0.5, "n_classes": 4, "class_weight": [0, 1, 1, 1]}
    assert json.loads(ref["loss/ce_cfg_kwargs"]) == {"weight": 0.5}
    close(dice_per_class(logits, label), ref["loss/dice_per_class"])
    assert 0.5 * dice_loss(logits, label).item() == pytest.approx(ref["loss/dice_cfg"], rel=REL)
    assert 0.5 * dice_loss(logits, label.to(torch.uint8)).item() == pytest.approx(ref["loss/dice_cfg_uint8_label"],
                                                                                   rel=REL)
    assert dice_loss(logits, label, include_background=True).item() == pytest.approx(ref["loss/dice_plain"], rel=REL)
    assert 0.5 * cross_entropy(logits, label).item() == pytest.approx(ref["loss/ce_cfg"], rel=REL)
    assert cross_entropy(logits, label).item() == pytest.approx(ref["loss/ce_plain"], rel=REL)
    assert 0.5 * dice_loss(logits_tf, label).item() == pytest.approx(ref["loss/dice_cfg_tf"], rel=REL)
    assert 0.5 * cross_entropy(logits_tf, label).item() == pytest.approx(ref["loss/ce_cfg_tf"], rel=REL)
    tf_weight = get_method("ugpcl").HParams().tf_weight
    total = ce_dice(logits, label) + tf_weight * ce_dice(logits_tf, label)
    assert total.item() == pytest.approx(ref["loss/supervised_cfg"], rel=REL)


# --- schedules ------------------------------------------------------------------------------------
def test_sigmoid_rampup_matches_the_authors(ref):
    for length in (100, 60, 40):
        ours = torch.tensor([sigmoid_rampup(float(x), length) for x in ref["ramp/points"]], dtype=torch.float64)
        torch.testing.assert_close(ours, ref[f"ramp/sigmoid_rampup_L{length}"], rtol=1e-12, atol=0)


def test_uncertainty_threshold_matches_the_authors(ref):
    for total in (6000, 10000):
        ours = torch.tensor([uncertainty_threshold(int(t), total) for t in ref["threshold/steps"]], dtype=torch.float64)
        torch.testing.assert_close(ours, ref[f"threshold/max_iter{total}"], rtol=1e-12, atol=0)


def test_consistency_weight_with_the_code_schedule_matches_the_authors(ref):
    hp = get_method("ugpcl").HParams()
    assert (hp.consistency, hp.ramp_length) == (ref["consistency/consistency"], ref["consistency/rampup"])
    cfg = load_config(profile="demo", overrides=["methods.ugpcl.ramp_schedule=code", "train.iterations=10000"])
    method = build_method(cfg, "ugpcl", 4, 1)
    for t, theirs in zip(ref["consistency/steps"].tolist(), ref["consistency/weight"].tolist()):
        assert ramp_weight(int(t), hp.consistency, hp.ramp_epoch, hp.ramp_length) == pytest.approx(theirs, rel=1e-12)
        assert method.ramp(int(t)) == pytest.approx(theirs, rel=1e-12)


# --- one full UGPCL step with a stub network ------------------------------------------------------
class RecordedHeads(nn.Module):
    """A stand-in for the UNet-R50 that returns the recorded heads, whatever the input."""

    def __init__(self, ref):
        super().__init__()
        self.seg, self.seg_tf, self.embed = (nn.Parameter(ref[f"step/{k}"].clone()) for k in ("seg", "seg_tf", "embed"))

    def forward_heads(self, image):
        return {"seg": self.seg * 1.0, "seg_tf": self.seg_tf * 1.0, "embed": self.embed * 1.0, "rot": None}


def test_ugpcl_step_with_a_stub_network_matches_the_authors(ref):
    """The authors' step at t = 1500 of 6000 with cls_weight -1 (no rotation, no rotation loss),
    labeled_bs 2 and the code's ramp constants: pseudo labels, uncertainty rate, every loss term,
    the consistency weight and the queue after the enqueue."""
    t, total, labeled_bs = ref["step/step"], ref["step/max_iter"], ref["step/labeled_bs"]
    cfg = load_config(profile="paper", overrides=[
        f"train.iterations={total}", "methods.ugpcl.ramp_schedule=code", "methods.ugpcl.equivariance_loss=false",
        "methods.ugpcl.rotate_without_equivariance=false"])
    torch.manual_seed(2)  # the authors seed their random initial queue with 2 before building the trainer
    method = get_method("ugpcl")(setup_from_config(cfg, 4, 3), parse_hparams(cfg, "ugpcl"), model=RecordedHeads(ref))
    assert torch.equal(method.queue.queue[:, :8], ref["step/segment_queue_before_first8"])

    label = ref["step/label"][:, 0]
    seg, seg_tf = ref["step/seg"], ref["step/seg_tf"]
    batch = Batch(torch.zeros(4, 3, 16, 16), label[:labeled_bs].long(), labeled_bs)
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.01)
    loss, logs = train_step(method, optimizer, batch, t)

    # pseudo labels (argmax of the mean, -1 where uncertain, ground truth on labeled images) and preds
    targets, _ = certainty_pseudo_labels(seg, seg_tf, label[:labeled_bs], t, total, "ugpcl")
    assert torch.equal(targets.float(), ref["step/certainty_pseudo"][:, 0])
    assert torch.equal(seg.argmax(1).float(), ref["step/preds"][:, 0])
    assert float(logs["uncertainty_rate"]) == pytest.approx(ref["step/uncertainty_rate"], rel=REL)
    assert logs["threshold"] == pytest.approx(uncertainty_threshold(t, total), rel=1e-12)

    # each loss term: per criterion as the code logs them, and as the method sums them
    nl = labeled_bs
    dice_term = 0.5 * dice_loss(seg[:nl], label[:nl]) + 0.4 * 0.5 * dice_loss(seg_tf[:nl], label[:nl])
    ce_term = 0.5 * cross_entropy(seg[:nl], label[:nl]) + 0.4 * 0.5 * cross_entropy(seg_tf[:nl], label[:nl])
    assert dice_term.item() == pytest.approx(ref["step/loss_dice_term"], rel=REL)
    assert ce_term.item() == pytest.approx(ref["step/loss_ce_term"], rel=REL)
    supervised = float(logs["sup"]) + method.hp.tf_weight * float(logs["sup_tf"])
    assert supervised == pytest.approx(ref["step/loss_dice_term"] + ref["step/loss_ce_term"], rel=REL)
    assert float(logs["con"]) == pytest.approx(ref["step/loss_consistency"], rel=REL)
    assert logs["weight"] == pytest.approx(ref["step/consistency_weight"], rel=1e-9)
    before_contrast = loss.item() - method.hp.contrast_weight * float(logs["contrast"])
    assert before_contrast == pytest.approx(ref["step/log_loss_before_contrast"], abs=6e-6)  # logged to 5 decimals
    assert "rot" not in logs and math.isfinite(float(logs["contrast"]))

    # the queue after the step's enqueue (train_step ran after_step)
    close(method.queue.queue[:, :8], ref["step/segment_queue_after_first8"])
    assert torch.equal(method.queue.ptr, ref["step/segment_queue_ptr_after"])


# --- baselines: no recorded outputs, so METHODS.md and the ramp rule are the reference ---------------
BASELINES = ("mt", "uamt", "em", "dct", "cct", "cps")


def weight_at(name: str, t: int, iterations: int, schedule: str = "run") -> float:
    """The consistency weight the method logs at iteration t of a run of `iterations`."""
    overrides = [f"train.iterations={iterations}", f"methods.{name}.ramp_schedule={schedule}"]
    cfg = load_config(profile="demo", overrides=overrides)  # the demo's small network, for speed,
    cfg["methods"] = load_config(profile="paper", overrides=overrides)["methods"]  # the paper's hyper-parameters
    torch.manual_seed(0)
    method = build_method(cfg, name, 4, 1)
    image = torch.rand(4, 1, 64, 64)
    with torch.no_grad():
        return method.compute_loss(Batch(image, (image[:2, 0] * 4).long().clamp(max=3), 2), t)[1]["weight"]


def ssl4mis(t: int, gate: bool) -> float:
    """METHODS §1: w(t) = 0.1 exp(-5 (1 - min(t // 150, 200) / 200)^2); MT: 0 while t < 1000 (§2)."""
    return 0.0 if gate and t < 1000 else 0.1 * math.exp(-5 * (1 - min(t // 150, 200) / 200) ** 2)


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_weight_at_first_middle_and_last_iteration(name):
    gate = name == "mt"
    for total in (6000, 30000):
        first, middle, last = 0, total // 2, total - 1
        # run schedule (default): the ramp spans the run; full weight on the last iteration
        assert weight_at(name, first, total) == (0.0 if gate else pytest.approx(0.1 * math.exp(-5)))
        assert weight_at(name, middle, total) == pytest.approx(0.1 * math.exp(-5 * 0.5**2))  # epoch 100 of 200
        assert weight_at(name, last, total) == 0.1
        # code schedule: SSL4MIS's literal constants
        for t in (first, middle, last):
            assert weight_at(name, t, total, "code") == pytest.approx(ssl4mis(t, gate), rel=1e-12)


def test_literal_ssl4mis_ramp_values_of_methods_md():
    """METHODS §1: 6.7e-4 at t = 0 and full weight only at 30000; at 6000 iterations the literal ramp
    leaves the baselines at 3.9% of lambda (the issue this option documents); MT's gate (§2)."""
    assert weight_at("em", 0, 6000, "code") == pytest.approx(6.7379e-4, rel=1e-4)
    assert weight_at("cps", 5999, 6000, "code") == pytest.approx(0.0039, abs=5e-5)
    assert weight_at("cct", 29999, 30000, "code") == pytest.approx(0.1 * math.exp(-5 / 200**2))
    assert weight_at("mt", 999, 6000, "code") == 0.0
    assert weight_at("mt", 1000, 6000, "code") == pytest.approx(0.1 * math.exp(-5 * (1 - 6 / 200) ** 2))
    assert weight_at("uamt", 999, 6000, "code") == pytest.approx(0.1 * math.exp(-5 * (1 - 6 / 200) ** 2))


@pytest.mark.parametrize("name", [*BASELINES, "ugpcl"])
def test_every_method_reaches_its_lambda_on_the_last_of_6000_iterations(name):
    lam = load_config()["methods"][name]["consistency"]
    assert weight_at(name, 5999, 6000) == lam
    assert weight_at(name, 5998, 6000) < lam
