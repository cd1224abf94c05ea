"""The supervised baseline and the six SSL baselines (METHODS.md §1-§2) on the shared Method API."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ugpcl.config import load_config
from ugpcl.ema import ema_update, make_teacher
from ugpcl.engine.step import train_step
from ugpcl.losses import cross_entropy
from ugpcl.methods import build_method
from ugpcl.methods.base import Batch
from ugpcl.methods.cct import feature_drop, feature_dropout, feature_noise
from ugpcl.methods.dct import rotation_consistency
from ugpcl.methods.em import normalised_entropy
from ugpcl.methods.uamt import certain_mask, masked_mse

BASELINES = ("supervised", "mt", "uamt", "em", "dct", "cct", "cps")
SIZE = 64
CLASSES = 4


def make_cfg(*overrides: str) -> dict:
    """The demo profile (width 16, 64 px) with every consistency weight at its maximum from t = 1
    (the code schedule, epoch 1 of length 1), so a few steps exercise the unsupervised terms."""
    ramps = [f"methods.{m}.{k}=1" for m in BASELINES[1:] for k in ("ramp_epoch", "ramp_length")]
    ramps += [f"methods.{m}.ramp_schedule=code" for m in BASELINES[1:]]
    return load_config(profile="demo", overrides=[*ramps, "methods.mt.gate_iterations=0", *overrides])


def build(name: str, *overrides: str):
    torch.manual_seed(0)
    return build_method(make_cfg(*overrides), name, CLASSES, 1)


def sgd_step(method, optimizer, batch: Batch, t: int) -> tuple[float, dict]:
    """One iteration through the engine's own step function."""
    loss, logs = train_step(method, optimizer, batch, t)
    return loss.item(), logs


class FixedLogits(nn.Module):
    """A fake network whose output is a learnable tensor, whatever the input."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits * 1.0


# --- supervised ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bn_unlabeled", [True, False])
def test_supervised_loss_is_on_labeled_images_and_bn_sees_what_the_authors_baseline_sees(acdc_batch, bn_unlabeled):
    """The authors' unet_r50 forwards the whole two-stream batch (BN over labeled and unlabeled
    images) and takes the loss on the labeled ones; `false` forwards the labeled ones only."""
    method = build("supervised", f"methods.supervised.batch_norm_unlabeled={str(bn_unlabeled).lower()}")
    assert method.uses_unlabeled is bn_unlabeled  # what the engine's sampler hands it
    seen = []
    method.model.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    batch = acdc_batch if bn_unlabeled else Batch(acdc_batch.labeled, acdc_batch.label, acdc_batch.labeled_bs)
    loss, _ = method.compute_loss(batch, 0)
    assert seen == [len(batch.image)]
    logits = method.model(batch.image)  # the same batch statistics: the loss is the labeled part's
    torch.testing.assert_close(loss, method.supervised_loss(logits[: batch.labeled_bs], batch.label))
    if bn_unlabeled:  # other unlabeled images change the normalisation, hence the labeled outputs
        other = Batch(torch.cat([batch.labeled, batch.unlabeled.flip(-1) * 0.5]), batch.label, batch.labeled_bs)
        assert not torch.allclose(method.compute_loss(other, 0)[0], loss)


# --- EMA teacher (MT, UA-MT) -----------------------------------------------------------------


def test_ema_teacher_is_the_alpha_average_of_the_student_and_gets_no_gradient(acdc_batch):
    method = build("mt")
    student, teacher = method.model, method.teacher
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(id(p) not in {id(q) for q in method.trainable_parameters()} for p in teacher.parameters())
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=0.05, momentum=0.9)
    method.train()
    for t in range(6):
        before = [p.detach().clone() for p in teacher.parameters()]
        loss, logs = method.compute_loss(acdc_batch, t)
        assert logs["weight"] > 0  # the consistency term is on, so a leak into the teacher would show
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        assert all(p.grad is None for p in teacher.parameters())
        optimizer.step()
        method.after_step(t)
        alpha = 1 - 1 / (t + 1)  # below ema_decay 0.99 for t < 99
        if t in (0, 5):
            for old, new, s in zip(before, teacher.parameters(), student.parameters()):
                torch.testing.assert_close(new, alpha * old + (1 - alpha) * s.detach(), rtol=1e-5, atol=1e-6)
    assert teacher.training, "the teacher stays in train mode (SSL4MIS)"


def test_mt_teacher_sees_clamped_noisy_unlabeled_images_and_consistency_is_gated(acdc_batch):
    method = build("mt", "methods.mt.gate_iterations=1000", "methods.mt.ramp_epoch=150", "methods.mt.ramp_length=200")
    inputs = []
    method.teacher.register_forward_hook(lambda mod, args, out: inputs.append(args[0].clone()))
    method.train()
    assert method.compute_loss(acdc_batch, 999)[1]["weight"] == 0.0
    noise = inputs[0] - acdc_batch.unlabeled
    assert noise.abs().max().item() == pytest.approx(0.2) and noise.std().item() == pytest.approx(0.1, rel=0.1)
    assert method.compute_loss(acdc_batch, 1000)[1]["weight"] == pytest.approx(0.1 * math.exp(-5 * (1 - 6 / 200) ** 2))


def test_ema_update_caps_alpha_at_decay_and_leaves_bn_buffers_alone():
    student = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    teacher = make_teacher(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
        student[1].running_mean.fill_(5.0)
    before = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, decay=0.99, t=1000)
    for old, new, s in zip(before, teacher.parameters(), student.parameters()):
        torch.testing.assert_close(new, 0.99 * old + 0.01 * s)
    assert torch.equal(teacher[1].running_mean, torch.zeros(2))


# --- UA-MT ---------------------------------------------------------------------------------------


def test_uamt_threshold_follows_the_schedule():
    method = build("uamt")
    total = method.setup.iterations
    for t in (0, total // 2, total):
        expected = (0.75 + 0.25 * math.exp(-5 * (1 - t / total) ** 2)) * math.log(2)
        assert method.threshold(t) == pytest.approx(expected)
    assert method.threshold(0) == pytest.approx(0.5210, abs=1e-4)
    assert method.threshold(total) == pytest.approx(math.log(2))


def test_uamt_mask_removes_high_entropy_pixels():
    method = build("uamt")
    # pixel entropies: 0.17 (confident), 1.386 (uniform), 0.611 (between the start and end thresholds)
    probs = torch.tensor([[0.97, 0.01, 0.01, 0.01], [0.25, 0.25, 0.25, 0.25], [0.7, 0.3, 0.0, 0.0]])
    mean_probs = probs.T.reshape(1, CLASSES, 1, 3)
    early = certain_mask(mean_probs, method.threshold(0))
    late = certain_mask(mean_probs, method.threshold(method.setup.iterations))
    assert early.shape == (1, 1, 1, 3)
    assert early.flatten().tolist() == [1.0, 0.0, 0.0]
    assert late.flatten().tolist() == [1.0, 0.0, 1.0]

    student = torch.rand(1, CLASSES, 1, 3)
    teacher = torch.rand(1, CLASSES, 1, 3)
    sq = ((student - teacher) ** 2).sum(1).flatten()  # per-pixel sum over classes
    assert masked_mse(student, teacher, late).item() == pytest.approx((sq[0] + sq[2]).item() / 4)


def test_uamt_averages_mc_passes_of_x_u_twice_with_fresh_noise(acdc_batch):
    method = build("uamt", "methods.uamt.mc_passes=4")
    inputs = []
    method.teacher.register_forward_hook(lambda mod, args, out: inputs.append(args[0].clone()))
    method.train()
    _, logs = method.compute_loss(acdc_batch, 0)
    unlabeled = acdc_batch.unlabeled
    # one noisy pass for the consistency target, then mc_passes / 2 passes on x_u repeated twice
    assert [len(x) for x in inputs] == [2, 4, 4]
    for x in inputs[1:]:
        assert (x - unlabeled.repeat(2, 1, 1, 1)).abs().max() <= 0.2 + 1e-6
    assert not torch.equal(inputs[1], inputs[2]) and not torch.equal(inputs[1][:2], inputs[1][2:])
    assert 0.0 <= logs["certain"] <= 1.0 and logs["threshold"] == pytest.approx(method.threshold(0))


# --- EM ------------------------------------------------------------------------------------------


def test_em_loss_is_the_normalised_entropy_over_all_images():
    logits = torch.tensor([[[[2.0]], [[0.0]], [[-1.0]]], [[[0.5]], [[0.5]], [[0.5]]]])  # 2 x 3 x 1 x 1
    by_hand = []
    for row in ([2.0, 0.0, -1.0], [0.5, 0.5, 0.5]):
        z = sum(math.exp(v) for v in row)
        p = [math.exp(v) / z for v in row]
        by_hand.append(-sum(q * math.log(q + 1e-6) for q in p) / math.log(3))
    assert normalised_entropy(logits).item() == pytest.approx(sum(by_hand) / 2, rel=1e-5)

    method = build("em")
    fixed = torch.randn(4, CLASSES, 8, 8)
    method.model = FixedLogits(fixed)
    batch = Batch(torch.zeros(4, 1, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long), 2)
    _, logs = method.compute_loss(batch, 10)
    # labeled images count too (SSL4MIS), so the term differs from the unlabeled-only entropy
    assert logs["unsup"] == pytest.approx(normalised_entropy(fixed).item(), rel=1e-5)
    assert logs["unsup"] != pytest.approx(normalised_entropy(fixed[2:]).item(), rel=1e-3)


# --- DCT -----------------------------------------------------------------------------------------


def test_dct_aligns_the_rotated_view_before_comparing():
    torch.manual_seed(0)
    equivariant = nn.Conv2d(1, CLASSES, 1)  # a pointwise net commutes with rot90
    image = torch.rand(2, 1, 8, 8)
    logits = equivariant(image)
    for k in range(4):
        assert rotation_consistency(equivariant, image, logits, k).item() < 1e-12
    for k in (1, 2, 3):  # comparing without rotating the plain view back would not vanish
        unaligned = F.mse_loss(equivariant(image.rot90(k, (2, 3))).softmax(1), logits.softmax(1))
        assert unaligned.item() > 1e-4

    # a net that is not equivariant: the loss is the mean squared gap between the aligned views
    position_bias = torch.randn(1, CLASSES, 8, 8)
    biased = lambda x: equivariant(x) + position_bias  # noqa: E731
    for k in (1, 3):
        expected = F.mse_loss(biased(image.rot90(k, (2, 3))).softmax(1), biased(image).softmax(1).rot90(k, (2, 3)))
        got = rotation_consistency(biased, image, biased(image), k)
        assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_dct_consistency_reaches_both_views_and_its_rotation_replays_from_torch_rng(acdc_batch):
    torch.manual_seed(0)
    conv = nn.Conv2d(1, CLASSES, 3, padding=1)
    image = torch.rand(2, 1, 8, 8)
    logits_u = conv(image).detach().requires_grad_(True)  # plain view; the rotated view runs through conv
    rotation_consistency(conv, image, logits_u, 1).backward()
    assert logits_u.grad.abs().sum() > 0 and conv.weight.grad.abs().sum() > 0

    runs = []
    for _ in range(2):
        method = build("dct")
        torch.manual_seed(7)
        runs.append(method.compute_loss(acdc_batch, 3)[1]["unsup"])
    assert runs[0] == runs[1]


# --- CCT -----------------------------------------------------------------------------------------


def test_cct_feature_noise_is_bounded_and_shared_across_the_batch():
    x = torch.randn(3, 5, 6, 6)
    out = feature_noise(x, 0.3)
    assert ((out - x).abs() <= 0.3 * x.abs() + 1e-6).all()
    ratio = (out - x) / x
    assert torch.allclose(ratio[0], ratio[1], atol=1e-5) and torch.allclose(ratio[0], ratio[2], atol=1e-5)
    assert ratio.abs().max() > 0.2  # really perturbed, over most of the range


def test_cct_dropout_zeros_about_30_percent():
    out = feature_dropout(torch.ones(4, 8, 16, 16), 0.3)
    assert (out == 0).float().mean().item() == pytest.approx(0.3, abs=0.03)
    assert torch.allclose(out[out != 0], torch.tensor(1 / 0.7))


def test_cct_feature_drop_zeros_exactly_the_high_attention_positions():
    torch.manual_seed(0)
    x = torch.rand(4, 6, 10, 10) ** 2
    out = feature_drop(x, (0.7, 0.9))
    dropped = (out == 0).all(1)
    kept = (out == x).all(1)
    assert (dropped | kept).all(), "a position is either zeroed in every channel or untouched"
    attention = x.mean(1)
    relative = attention / attention.flatten(1).amax(1).view(-1, 1, 1)
    # one gamma in [0.7, 0.9] separates the zeroed positions (a >= gamma max a) from the rest
    assert relative[dropped].min() >= 0.7 and relative[kept].max() < 0.9
    assert relative[kept].max() < relative[dropped].min()
    assert dropped.flatten(1).any(1).all(), "each sample's peak position is dropped"


def test_cct_every_auxiliary_decoder_gets_gradients(acdc_batch):
    method = build("cct")
    method.train()
    received = []
    for decoder in method.aux:
        decoder.register_forward_hook(lambda mod, args, out: received.append(args[0]))
    features = method.model.encode(acdc_batch.image)
    loss, logs = method.compute_loss(acdc_batch, 5)
    loss.backward()
    assert len(method.aux) == 3 and logs["weight"] == pytest.approx(0.1)
    for decoder in method.aux:
        assert all(p.grad is not None for p in decoder.parameters())
        assert sum(p.grad.abs().sum() for p in decoder.parameters()) > 0
    for feats in received:  # each auxiliary decoder saw perturbed maps, not the clean ones
        assert all(not torch.allclose(a, b) for a, b in zip(feats[1:], features[1:]))
    assert method.eval_network() is method.model


@pytest.mark.parametrize("supervision", ["all", "main"])
def test_cct_supervised_loss_is_the_mean_over_the_supervised_decoders(acdc_batch, supervision):
    method = build("cct", f"methods.cct.supervision={supervision}")
    method.train()
    outputs = []
    for decoder in [method.model.decoder, *method.aux]:
        decoder.register_forward_hook(lambda mod, args, out: outputs.append(out))
    torch.manual_seed(3)
    _, logs = method.compute_loss(acdc_batch, 5)
    n_l = acdc_batch.labeled_bs
    each = [method.supervised_loss(out[:n_l], acdc_batch.label) for out in outputs]
    assert len(each) == 4 and len({round(x.item(), 6) for x in each}) == 4  # the decoders' losses differ
    expected = sum(each) / 4 if supervision == "all" else each[0]
    assert float(logs["sup"]) == pytest.approx(expected.item(), rel=1e-6)
    if supervision == "main":  # the auxiliary decoders still learn, from the consistency term alone
        loss, _ = method.compute_loss(acdc_batch, 5)
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.aux[0].parameters()
                   if p.requires_grad and p.dim() > 1)


# --- CPS -----------------------------------------------------------------------------------------


def test_cps_pseudo_labels_come_from_the_other_net_without_gradient():
    method = build("cps")
    torch.manual_seed(1)
    method.model = FixedLogits(torch.randn(4, CLASSES, 6, 6))
    method.model2 = FixedLogits(torch.randn(4, CLASSES, 6, 6))
    batch = Batch(torch.zeros(4, 1, 6, 6), torch.randint(CLASSES, (2, 6, 6)), 2)
    loss, logs = method.compute_loss(batch, 10)
    loss.backward()
    weight = logs["weight"]
    nets = method.model, method.model2
    for own, other in (nets, nets[::-1]):
        own_u, other_u = own.logits[2:], other.logits[2:]
        assert not torch.equal(own_u.argmax(1), other_u.argmax(1))
        # dL/dlogits_u = w (softmax - onehot(argmax of the OTHER net)) / pixels: nothing flows via the target
        target = F.one_hot(other_u.detach().argmax(1), CLASSES).permute(0, 3, 1, 2)
        expected = weight * (own_u.detach().softmax(1) - target) / target[:, 0].numel()
        torch.testing.assert_close(own.logits.grad[2:], expected, rtol=1e-4, atol=1e-7)
    expected_unsup = cross_entropy(nets[0].logits[2:], nets[1].logits[2:].argmax(1)) + cross_entropy(
        nets[1].logits[2:], nets[0].logits[2:].argmax(1)
    )
    assert logs["unsup"] == pytest.approx(expected_unsup.item(), rel=1e-5)


def test_cps_networks_are_initialised_independently():
    method = build("cps")
    first = dict(method.model.named_parameters())
    second = dict(method.model2.named_parameters())
    assert first.keys() == second.keys()
    assert not torch.equal(first["decoder.head.weight"], second["decoder.head.weight"])
