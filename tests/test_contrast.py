"""UGPCL's pixel contrast pieces, checked against values worked out by hand on tiny tensors."""

import math

import pytest
import torch

from ugpcl.contrast import (
    IGNORE,
    MemoryQueue,
    certainty_pseudo_labels,
    compact_anchors,
    downsample_labels,
    pixel_contrast_loss,
    sample_anchors,
    uncertainty_threshold,
)

S = 1 / math.sqrt(2)


def test_threshold_rises_from_about_0_52_to_ln2():
    assert uncertainty_threshold(0, 1000) == pytest.approx((0.75 + 0.25 * math.exp(-5)) * math.log(2))
    assert uncertainty_threshold(0, 1000) == pytest.approx(0.5210, abs=1e-4)
    assert uncertainty_threshold(500, 1000) == pytest.approx((0.75 + 0.25 * math.exp(-1.25)) * math.log(2))
    assert uncertainty_threshold(1000, 1000) == pytest.approx(math.log(2))
    assert uncertainty_threshold(5000, 1000) == pytest.approx(math.log(2))


def _two_heads():
    """Image 0 labeled, image 1 unlabeled; 2 classes on 2 x 2 pixels (logits as class-0, class-1 pairs)."""
    seg = torch.tensor(
        [
            [[(2.0, 0.0), (5.0, 0.0)], [(0.0, 5.0), (4.0, 0.0)]],  # labeled: anything
            [[(2.0, 0.0), (5.0, 0.0)], [(0.0, 5.0), (4.0, 0.0)]],
        ]
    ).permute(0, 3, 1, 2)
    seg_tf = torch.tensor(
        [
            [[(0.0, 2.5), (5.0, 0.0)], [(0.0, 5.0), (3.0, 0.0)]],
            [[(0.0, 2.5), (5.0, 0.0)], [(0.0, 5.0), (3.0, 0.0)]],
        ]
    ).permute(0, 3, 1, 2)
    label_l = torch.tensor([[[1, 0], [0, 1]]], dtype=torch.uint8)
    return seg.requires_grad_(), seg_tf, label_l


def test_certainty_labels_mask_only_the_uncertain_unlabeled_pixel():
    # Pixel (0, 0): the heads disagree, p = ((0.8808 + 0.0759) / 2, (0.1192 + 0.9241) / 2).
    p1 = (1 / (1 + math.exp(2.0)) + 1 / (1 + math.exp(-2.5))) / 2
    entropy = -((1 - p1) * math.log(1 - p1 + 1e-6) + p1 * math.log(p1 + 1e-6))
    tau = uncertainty_threshold(0, 100)
    assert p1 > 0.5 and entropy > tau  # argmax is class 1, but too uncertain
    p0 = (1 / (1 + math.exp(-4.0)) + 1 / (1 + math.exp(-3.0))) / 2  # pixel (1, 1), most uncertain of the rest
    assert -(p0 * math.log(p0) + (1 - p0) * math.log(1 - p0)) < tau

    seg, seg_tf, label_l = _two_heads()
    truth = torch.tensor([[1, 0], [0, 1]])
    expected = {
        "ugpcl": ([[-1, 0], [1, 0]], 0.75),
        "pseudo": ([[1, 0], [1, 0]], 1.0),
        "sup": ([[-1, -1], [-1, -1]], 0.0),
    }
    for mode, (unlabeled, kept) in expected.items():
        targets, info = certainty_pseudo_labels(seg, seg_tf, label_l, 0, 100, mode, pseudo="mean")
        assert targets.dtype == torch.long and targets.shape == (2, 2, 2)
        assert not targets.requires_grad
        assert torch.equal(targets[0], truth), mode  # ground truth, even where uncertain
        assert targets[1].tolist() == unlabeled, mode
        assert info["certain_fraction"] == pytest.approx(kept)
        assert info["threshold"] == pytest.approx(tau)
        # the authors' logged rate: pixel (0, 0) of both images, labeled included, out of 8
        assert info["uncertainty_rate"] == pytest.approx(0.25)


def test_pseudo_mode_as_the_authors_uses_the_cnn_argmax_on_every_image():
    seg, seg_tf, label_l = _two_heads()
    cnn = [[0, 0], [1, 0]]  # argmax of seg alone; the Swin head and the ground truth play no part
    targets, info = certainty_pseudo_labels(seg, seg_tf, label_l, 0, 100, "pseudo", pseudo="cnn")
    assert targets.tolist() == [cnn, cnn] and info["certain_fraction"] == pytest.approx(1.0)
    for mode in ("ugpcl", "sup"):  # the option concerns the pseudo mode only
        assert torch.equal(certainty_pseudo_labels(seg, seg_tf, label_l, 0, 100, mode, pseudo="cnn")[0],
                           certainty_pseudo_labels(seg, seg_tf, label_l, 0, 100, mode, pseudo="mean")[0])


def test_certainty_labels_threshold_follows_iteration():
    seg, seg_tf, label_l = _two_heads()
    # At t = T the threshold is ln 2: the disagreeing pixel (entropy 0.692) is kept.
    targets, info = certainty_pseudo_labels(seg, seg_tf, label_l, 100, 100, "ugpcl")
    assert info["threshold"] == pytest.approx(math.log(2))
    assert targets[1].tolist() == [[1, 0], [1, 0]]


def test_certainty_labels_reject_bad_arguments():
    seg, seg_tf, label_l = _two_heads()
    with pytest.raises(ValueError, match="mode"):
        certainty_pseudo_labels(seg, seg_tf, label_l, 0, 100, "none")
    with pytest.raises(ValueError, match="do not match"):
        certainty_pseudo_labels(seg, seg_tf, torch.zeros(1, 3, 3, dtype=torch.long), 0, 100, "ugpcl")
    with pytest.raises(ValueError, match="pseudo-label source"):
        certainty_pseudo_labels(seg, seg_tf, label_l, 0, 100, "pseudo", pseudo="swin")


def test_downsample_keeps_ignore_and_class_ids():
    labels = torch.tensor([[[-1, 5, 2, 2], [7, 7, 2, 2], [3, 3, -1, 0], [3, 3, 0, 0]]], dtype=torch.long)
    small = downsample_labels(labels, (2, 2))
    assert small.dtype == torch.long
    assert small.tolist() == [[[-1, 2], [3, -1]]]  # nearest: rows/cols 0 and 2
    assert torch.equal(downsample_labels(labels, 4), labels)


def _anchor_example():
    """Two images of 2 x 3 pixels; embedding of pixel p of image b is (b, p, 1) (D = 3)."""
    targets = torch.tensor([[[0, 0, 1], [1, 1, -1]], [[2, 2, 2], [0, -1, -1]]])
    preds = torch.tensor([[[0, 1, 1], [1, 0, 0]], [[0, 1, 1], [0, 0, 0]]])
    # image 0: class 0 = pixels {0 easy, 1 hard}; class 1 = {2, 3 easy, 4 hard}
    # image 1: class 2 = {0, 1, 2} all hard; class 0 = one pixel only (excluded)
    b, p = torch.meshgrid(torch.arange(2.0), torch.arange(6.0), indexing="ij")
    embed = torch.stack([b, p, torch.ones(2, 6)], dim=1).view(2, 3, 2, 3).requires_grad_()
    return embed, targets, preds


def _sample(embed, targets, preds, views=1, seed=None, num_classes=3):
    """The real anchors of `sample_anchors` (3 classes in `_anchor_example`), compacted."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return compact_anchors(*sample_anchors(embed, targets, preds, num_classes, views, generator))


def _picked(anchors, labels):
    """(image, pixel, class) of every anchor, read back from its embedding."""
    return sorted((int(a[0]), int(a[1]), int(c)) for a, c in zip(anchors.tolist(), labels.tolist()))


def test_anchor_per_image_and_class_prefers_easy_pixels():
    embed, targets, preds = _anchor_example()
    seen = set()
    for seed in range(30):
        anchors, labels = _sample(embed, targets, preds, seed=seed)
        picked = _picked(anchors, labels)
        assert anchors.shape == (3, 3) and labels.dtype == torch.long
        assert [(i, c) for i, _, c in picked] == [(0, 0), (0, 1), (1, 2)]
        assert picked[0][1] == 0  # the only easy background pixel, not the hard one
        assert picked[1][1] in (2, 3)  # easy pixels of class 1; pixel 4 is hard
        assert picked[2][1] in (0, 1, 2)  # no easy pixel: a hard one
        seen.add((picked[1][1], picked[2][1]))
    assert {p for p, _ in seen} == {2, 3} and {p for _, p in seen} == {0, 1, 2}  # random, not fixed


def test_anchors_are_embedding_vectors_with_gradient_and_reproducible():
    embed, targets, preds = _anchor_example()
    anchors, labels = _sample(embed, targets, preds, seed=3)
    again, _ = _sample(embed, targets, preds, seed=3)
    assert torch.equal(anchors, again)
    flat = embed.detach().flatten(2).transpose(1, 2)
    for (image, pixel, cls), row in zip(_picked(anchors, labels), sorted(anchors.tolist())):
        assert flat[image, pixel].tolist() == row
        assert targets[image].flatten()[pixel] == cls
    anchors.sum().backward()
    assert int((embed.grad.abs().sum(1) > 0).sum()) == 3  # exactly the three anchor pixels
    assert torch.all(embed.grad.sum(1)[embed.grad.sum(1) > 0] == 3)


def test_two_views_split_hard_and_easy_like_the_code():
    embed, targets, preds = _anchor_example()
    anchors, labels = _sample(embed, targets, preds, views=2, seed=0)
    picked = _picked(anchors, labels)
    # Only classes with more than 2 pixels: image 0 class 1 (1 hard + 1 easy), image 1 class 2 (2 hard).
    assert [(i, c) for i, _, c in picked] == [(0, 1), (0, 1), (1, 2), (1, 2)]
    image0 = sorted(p for i, p, _ in picked if i == 0)
    assert image0[0] in (2, 3) and image0[1] == 4
    image1 = [p for i, p, _ in picked if i == 1]
    assert len(set(image1)) == 2 and set(image1) <= {0, 1, 2}


def test_anchors_drawn_for_a_seed_are_those_of_the_variable_size_version():
    """(image, pixel, class) of the anchors for seeds 0-3, as recorded from the earlier version that
    picked them with nonzero: the fixed-size rows keep its random draw and its order."""
    embed, targets, preds = _anchor_example()
    recorded = {
        1: [[(0, 0, 0), (0, 3, 1), (1, 1, 2)], [(0, 0, 0), (0, 2, 1), (1, 1, 2)],
            [(0, 0, 0), (0, 2, 1), (1, 2, 2)], [(0, 0, 0), (0, 3, 1), (1, 1, 2)]],
        2: [[(0, 3, 1), (0, 4, 1), (1, 0, 2), (1, 1, 2)], [(0, 2, 1), (0, 4, 1), (1, 1, 2), (1, 2, 2)],
            [(0, 2, 1), (0, 4, 1), (1, 1, 2), (1, 2, 2)], [(0, 3, 1), (0, 4, 1), (1, 0, 2), (1, 1, 2)]],
    }
    for views, picks in recorded.items():
        for seed, expected in enumerate(picks):
            anchors, labels = _sample(embed, targets, preds, views, seed)
            assert _picked(anchors, labels) == expected
            in_order = [(int(a[0]), int(c)) for a, c in zip(anchors.tolist(), labels.tolist())]
            assert in_order == sorted(in_order)  # image-major, then class


def _contrast_case(seed):
    """3 images of 4 x 5 pixels, 4 classes, D = 8: class 3 absent, image 2 all ignored; a queue of
    2 rows per class, so that 2 or 3 views give more anchors than the 8 keys (the quirk's index
    then runs past them)."""
    g = torch.Generator().manual_seed(seed)
    embed = torch.nn.functional.normalize(torch.randn(3, 8, 4, 5, generator=g), dim=1).requires_grad_()
    targets = torch.randint(-1, 3, (3, 4, 5), generator=g)
    targets[2] = IGNORE
    preds = torch.randint(0, 4, (3, 4, 5), generator=g)
    return embed, targets, preds, MemoryQueue(4, 2, 8, generator=g).keys()


@pytest.mark.parametrize("self_mask", [False, True])
@pytest.mark.parametrize("views", [1, 2, 3])
def test_masked_rows_give_the_compact_anchors_loss_and_gradient(views, self_mask):
    """The fixed-size rows with `chosen` against the compact anchors alone, same generator seed:
    the same loss and gradient up to float32 round-off (the padded mean sums in another order and
    BLAS may block a matrix product of another height differently; the anchors are the same)."""
    for seed in range(5):
        embed, targets, preds, (keys, key_labels) = _contrast_case(seed)
        anchors, labels, chosen = sample_anchors(embed, targets, preds, 4, views, torch.Generator().manual_seed(seed))
        assert anchors.shape == (3 * 4 * 2 * views, 8) and labels.shape == chosen.shape == (3 * 4 * 2 * views,)
        compact, compact_labels = compact_anchors(anchors, labels, chosen)
        assert 0 < len(compact) < len(anchors) and set(compact_labels.tolist()) <= {0, 1, 2}
        assert views == 1 or len(compact) > len(keys)
        padded = pixel_contrast_loss(anchors, labels, keys, key_labels, 0.1, 0.07, self_mask, chosen=chosen)
        plain = pixel_contrast_loss(compact, compact_labels, keys, key_labels, 0.1, 0.07, self_mask)
        assert padded.item() == pytest.approx(plain.item(), rel=1e-6)
        torch.testing.assert_close(torch.autograd.grad(padded, embed, retain_graph=True)[0],
                                   torch.autograd.grad(plain, embed)[0],
                                   rtol=1e-5, atol=1e-7)


def test_no_anchor_when_everything_is_ignored():
    embed = torch.randn(1, 4, 2, 2, requires_grad=True)
    ignore = torch.full((1, 2, 2), -1)
    anchors, labels, chosen = sample_anchors(embed, ignore, ignore, 3)
    assert anchors.shape == (3 * 2, 4) and not chosen.any()  # fixed size: 1 image x 3 classes x 2 kinds
    assert compact_anchors(anchors, labels, chosen)[0].shape == (0, 4)
    loss = pixel_contrast_loss(anchors, labels, torch.randn(6, 4), torch.zeros(6, dtype=torch.long), chosen=chosen)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(embed.grad, torch.zeros_like(embed))


def test_contrast_loss_matches_hand_computation():
    # Queue of 2 classes x 2 rows as keys() lays it out: class-1 rows, then zero rows of class 0.
    keys = torch.tensor([[0.6, 0.8], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    key_labels = torch.tensor([1, 1, 0, 0])
    anchors = torch.tensor([[1.0, 0.0], [0.6, 0.8]], requires_grad=True)
    labels = torch.tensor([1, 0])  # the second anchor is background: its positives are the zero rows
    tau, base = 0.5, 0.25
    # anchor 1: a.k / tau = (1.2, 0, 0, 0) -> shifted logits (0, -1.2, -1.2, -1.2); negatives = zero rows
    neg1 = 2 * math.exp(-1.2)
    loss1 = -(tau / base) * ((0 - math.log(1 + neg1)) + (-1.2 - math.log(math.exp(-1.2) + neg1))) / (2 + 1e-5)
    # anchor 2: a.k / tau = (2.0, 1.6, 0, 0) -> (0, -0.4, -2, -2); negatives = the two class-1 rows
    neg2 = 1 + math.exp(-0.4)
    loss2 = -(tau / base) * 2 * (-2 - math.log(math.exp(-2) + neg2)) / (2 + 1e-5)
    loss = pixel_contrast_loss(anchors, labels, keys, key_labels, temperature=tau, base_temperature=base)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx((loss1 + loss2) / 2, rel=1e-6)
    loss.backward()
    assert anchors.grad is not None and anchors.grad.abs().sum() > 0


def test_self_mask_quirk_drops_key_i_from_anchor_i_positives_only():
    keys = torch.tensor([[0.6, 0.8], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    key_labels = torch.tensor([1, 1, 0, 0])
    anchors = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    labels = torch.tensor([1, 0, 1])
    plain = pixel_contrast_loss(anchors, labels, keys, key_labels, 0.5, 0.25, self_mask=False)
    quirk = pixel_contrast_loss(anchors, labels, keys, key_labels, 0.5, 0.25, self_mask=True)
    # anchor 0 loses key 0 (a positive), anchor 1 loses nothing (key 1 is a negative of class 1, kept
    # as a negative), anchor 2 loses key 2 (a zero row of class 0: not a positive of class 1)
    logits0 = torch.tensor([1.2, 0.0, 0.0, 0.0]) - 1.2  # a.k / tau minus the row max
    neg0 = 2 * math.exp(-1.2)
    term = lambda l: l - math.log(math.exp(l) + neg0)  # noqa: E731
    quirk0 = -(0.5 / 0.25) * term(float(logits0[1])) / (1 + 1e-5)
    plain0 = -(0.5 / 0.25) * (term(float(logits0[0])) + term(float(logits0[1]))) / (2 + 1e-5)
    rest = plain.item() * 3 - plain0
    assert quirk.item() * 3 == pytest.approx(quirk0 + rest, rel=1e-5)


def test_contrast_loss_casts_bf16_to_float32():
    anchors = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    keys = torch.tensor([[0.6, 0.8], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    args = (torch.tensor([1, 0]), keys, torch.tensor([1, 1, 0, 0]))
    reference = pixel_contrast_loss(anchors.bfloat16().float(), *args)
    loss = pixel_contrast_loss(anchors.bfloat16(), *args)
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(reference.item(), rel=1e-6)


def _queue_batch():
    """3 images of 2 x 2 pixels, D = 2; background and ignored pixels carry loud values."""
    targets = torch.tensor([[[1, 1], [0, -1]], [[2, 1], [1, 0]], [[1, -1], [-1, -1]]])
    pixels = torch.tensor(
        [
            [(1.0, 0.0), (0.0, 1.0), (5.0, 5.0), (-9.0, 3.0)],  # class-1 mean (0.5, 0.5)
            [(0.0, 2.0), (3.0, 0.0), (1.0, 0.0), (7.0, -7.0)],  # class 2 (0, 2); class-1 mean (2, 0)
            [(3.0, 4.0), (-5.0, 1.0), (-5.0, 1.0), (-5.0, 1.0)],  # class 1 (3, 4)
        ]
    )
    return pixels.permute(0, 2, 1).reshape(3, 2, 2, 2), targets


def test_queue_enqueues_normalised_class_means_and_wraps():
    queue = MemoryQueue(3, 2, 2, generator=torch.Generator().manual_seed(0))
    initial = queue.queue.clone()
    assert torch.allclose(initial.norm(dim=2), torch.ones(3, 2))
    embed, targets = _queue_batch()
    queue.update(embed, targets)
    # class 1: image 0 -> slot 0, image 1 -> slot 1, image 2 -> slot 0 again (wrapped)
    assert torch.allclose(queue.queue[1], torch.tensor([[0.6, 0.8], [1.0, 0.0]]))
    assert torch.allclose(queue.queue[2, 0], torch.tensor([0.0, 1.0]))
    assert torch.equal(queue.queue[2, 1], initial[2, 1])
    assert torch.equal(queue.queue[0], initial[0])  # background never enqueued
    assert queue.ptr.tolist() == [0, 1, 1]

    pixels = torch.tensor([[(1.0, 1.0), (3.0, 3.0), (9.0, 0.0), (0.0, 9.0)]])  # class-2 mean (2, 2)
    queue.update(pixels.permute(0, 2, 1).reshape(1, 2, 2, 2), torch.tensor([[[2, 2], [-1, 0]]]))
    assert torch.allclose(queue.queue[2, 1], torch.tensor([S, S]))
    assert queue.ptr.tolist() == [0, 1, 0]
    assert torch.allclose(queue.queue[1], torch.tensor([[0.6, 0.8], [1.0, 0.0]]))


def _reference_update(queue, ptr, embed, targets):
    """The queue rule as a plain loop: image by image, every class c > 0 it holds is enqueued at
    ptr_c, the normalised mean of its pixels, and ptr_c moves on by one, wrapping."""
    queue, ptr = queue.clone(), ptr.clone()
    for b in range(embed.shape[0]):
        for c in range(1, queue.shape[0]):
            pixels = targets[b].flatten() == c
            if pixels.any():
                mean = embed[b].flatten(1)[:, pixels].mean(1)
                queue[c, ptr[c]] = torch.nn.functional.normalize(mean, dim=0)
                ptr[c] = (ptr[c] + 1) % queue.shape[1]
    return queue, ptr


def test_queue_update_equals_a_plain_loop_over_images_and_classes():
    """Class 1 is in every image, more than the queue holds (it fills the queue, its pointer
    wraps); class 3 is never present; class 2 is in some images; batches of 5, 1 and 2."""
    g = torch.Generator().manual_seed(0)
    queue = MemoryQueue(4, 3, 5, generator=g)
    queue.ptr.copy_(torch.tensor([0, 2, 1, 0]))
    untouched = queue.queue[[0, 3]].clone()
    for batch in (5, 1, 2, 5):
        targets = torch.randint(-1, 3, (batch, 3, 3), generator=g)
        targets[:, 0, 0] = 1
        embed = torch.randn(batch, 5, 3, 3, generator=g)
        expected, expected_ptr = _reference_update(queue.queue, queue.ptr, embed, targets)
        queue.update(embed, targets)
        torch.testing.assert_close(queue.queue, expected, rtol=1e-6, atol=1e-6)
        assert torch.equal(queue.ptr, expected_ptr)
        assert torch.equal(queue.queue[[0, 3]], untouched)  # background and the absent class: never written


def test_queue_keys_layout_as_in_the_code():
    queue = MemoryQueue(3, 2, 4, generator=torch.Generator().manual_seed(1))
    rows, labels = queue.keys()
    assert labels.tolist() == [1, 1, 2, 2, 0, 0]
    assert torch.equal(rows[:2], queue.queue[1]) and torch.equal(rows[2:4], queue.queue[2])
    assert torch.equal(rows[4:], torch.zeros(2, 4))


def test_queue_state_dict_round_trip_resumes_exactly():
    embed, targets = _queue_batch()
    queue = MemoryQueue(3, 2, 2, generator=torch.Generator().manual_seed(0))
    queue.update(embed, targets)
    restored = MemoryQueue(3, 2, 2, generator=torch.Generator().manual_seed(99))
    restored.load_state_dict(queue.state_dict())
    assert torch.equal(restored.queue, queue.queue) and torch.equal(restored.ptr, queue.ptr)
    queue.update(embed[1:2], targets[1:2])
    restored.update(embed[1:2], targets[1:2])
    assert torch.equal(restored.queue, queue.queue) and torch.equal(restored.ptr, queue.ptr)


def test_queue_rejects_mismatched_targets():
    queue = MemoryQueue(3, 2, 2)
    with pytest.raises(ValueError, match="do not match"):
        queue.update(torch.randn(1, 2, 2, 2), torch.zeros(1, 4, 4, dtype=torch.long))


def test_anchors_reject_maps_of_another_size():
    embed, targets, preds = _anchor_example()
    with pytest.raises(ValueError, match="must be B x h x w"):
        sample_anchors(embed, targets[:, :1], preds[:, :1], 3)
    with pytest.raises(ValueError, match="num_classes"):
        sample_anchors(embed, targets, preds, 0)
