"""UGPCL's uncertainty-guided pixel contrast (METHODS.md §3.4-3.6, paper eqs. 6-9).

One training step of the caller (`methods/ugpcl.py`) reads:

    targets, info = certainty_pseudo_labels(seg, seg_tf, label_l, t, T, mode)
    targets_small = downsample_labels(targets, embed.shape[-2:])
    preds_small = downsample_labels(class_map(seg), embed.shape[-2:])
    anchors, labels, chosen = sample_anchors(embed, targets_small, preds_small, num_classes)
    keys, key_labels = queue.keys()
    loss = pixel_contrast_loss(anchors, labels, keys, key_labels, chosen=chosen)
    queue.update(embed.detach(), targets_small)

Everything is vectorised over images, classes and pixels; the label maps use -1 for "ignore".
Nothing reads a value back from the device: every tensor's shape follows from the batch's shape
and `num_classes` (fixed-size anchor rows with a `chosen` mask, a fixed-shape queue scatter).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .losses import class_map, entropy_map, sigmoid_rampup

IGNORE = -1
MODES = ("ugpcl", "pseudo", "sup")
PSEUDO_SOURCES = ("cnn", "mean")  # mode "pseudo": the authors' CNN argmax on every image, or ours


def uncertainty_threshold(t: int, total: int) -> float:
    """tau(t) = (0.75 + 0.25 rampup(t, total)) ln 2: from about 0.521 at t = 0 to ln 2 at t = total.

    The authors' trainer ramps it on the raw step over its own max_iter (METHODS §3.4, §5.1), so
    with total = train.iterations it already spans the whole run, whatever its length: unlike
    the consistency ramp, it has no constant made for another run length to scale.
    """
    return (0.75 + 0.25 * sigmoid_rampup(t, total)) * math.log(2)


@torch.no_grad()
def certainty_pseudo_labels(
    seg: torch.Tensor, seg_tf: torch.Tensor, label_l: torch.Tensor, t: int, total: int, mode: str = "ugpcl",
    pseudo: str = "cnn",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Contrast targets for the whole batch (B x H x W long, -1 = not sampled), paper eq. 7.

    p = (softmax(seg) + softmax(seg_tf)) / 2 and y = argmax p on the unlabeled images, then
    - "ugpcl": y = -1 where the entropy of p exceeds tau(t);
    - "pseudo": y kept everywhere (no uncertainty mask);
    - "sup": every unlabeled pixel is -1, so only labeled pixels are used.
    The first `len(label_l)` images get their ground truth, except in mode "pseudo" with
    pseudo="cnn", the authors' branch: there the targets are the CNN head's argmax on every image,
    labeled ones included (pseudo="mean" keeps the rule above, so the modes differ only in how
    unlabeled pixels are treated).
    info: the threshold, the fraction of unlabeled pixels kept, and the authors' logged
    `uncertainty_rate`: the fraction of ALL pixels, labeled ones included, whose entropy exceeds it.
    """
    if mode not in MODES:
        raise ValueError(f"unknown contrast mode {mode!r}; expected one of {MODES}")
    if pseudo not in PSEUDO_SOURCES:
        raise ValueError(f"unknown pseudo-label source {pseudo!r}; expected one of {PSEUDO_SOURCES}")
    labeled_bs = label_l.shape[0]
    if label_l.shape[1:] != seg.shape[2:] or labeled_bs > seg.shape[0]:
        raise ValueError(f"labels {tuple(label_l.shape)} do not match the first images of seg {tuple(seg.shape)}")
    probs = (seg.float().softmax(1) + seg_tf.float().softmax(1)) / 2
    targets = class_map(probs)
    threshold = uncertainty_threshold(t, total)
    uncertain = entropy_map(probs) > threshold
    if mode == "ugpcl":
        targets.masked_fill_(uncertain, IGNORE)
    elif mode == "sup":
        targets[labeled_bs:] = IGNORE
    if mode == "pseudo" and pseudo == "cnn":
        targets = class_map(seg)
    else:
        targets[:labeled_bs] = label_l.long()
    kept = (targets[labeled_bs:] != IGNORE).float().mean()  # tensors: read at logging time, no sync here
    return targets, {"threshold": threshold, "certain_fraction": kept, "uncertainty_rate": uncertain.float().mean()}


def downsample_labels(labels: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Nearest resize of an integer B x H x W map (the code's F.interpolate 'nearest'); -1 survives."""
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


def sample_anchors(
    embed: torch.Tensor,
    targets_small: torch.Tensor,
    preds_small: torch.Tensor,
    num_classes: int,
    views_per_class: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Anchor candidates drawn from `embed` (B x D x h x w): (M x D with gradient, classes (M,), chosen (M,) bool).

    Every (image, class) whose target pixels (-1 excluded, background included) number more
    than `views_per_class` gives `views_per_class` random pixels, split between "hard"
    (target == c, pred != c) and "easy" (target == c, pred == c) pixels by the authors' rule:
    half and half when both have enough, otherwise all of the scarce kind and the rest from the
    other. With one view this is: a random easy pixel if one exists, else a random hard one.
    (The code's cap of 1024 anchors in total never binds at these batch sizes and is omitted.)

    The result has a fixed size, M = B * num_classes * 2k with k = min(views, pixels): one row per
    (image, class, hard or easy, rank), in that order, and `chosen` marks the rows that are real
    anchors; the others are some pixel's embedding that `pixel_contrast_loss(..., chosen=)`
    ignores. So nothing is read back from the device: no count of classes or pixels sizes a
    tensor. `compact_anchors` gives the real anchors alone, in the same order.
    Deviation from our earlier, variable-size version (same distribution of anchors): it sized the
    class axis of the random scores as max(targets) + 1, this one as `num_classes`, so for a given
    generator state the same anchors are drawn whenever the batch's targets hold the highest class
    and different ones (equally random) otherwise.
    """
    if targets_small.shape != preds_small.shape or targets_small.shape != (embed.shape[0], *embed.shape[2:]):
        raise ValueError(
            f"targets {tuple(targets_small.shape)} and preds {tuple(preds_small.shape)} "
            f"must be B x h x w of embeddings {tuple(embed.shape)}"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, not {num_classes}")
    batch, views = embed.shape[0], views_per_class
    targets = targets_small.reshape(batch, 1, -1)
    preds = preds_small.reshape(batch, 1, -1)
    num_pixels = targets.shape[-1]
    classes = torch.arange(num_classes, device=targets.device).view(1, -1, 1)
    member = targets == classes  # B x C x P
    easy = member & (preds == classes)
    hard = member & ~easy
    valid = member.sum(-1) > views  # B x C
    n_easy, n_hard = easy.sum(-1), hard.sum(-1)
    enough_easy, enough_hard = n_easy >= views / 2, n_hard >= views / 2
    hard_keep = torch.where(
        enough_easy & enough_hard, views // 2, torch.where(enough_hard, views - n_easy, n_hard)
    )
    easy_keep = views - hard_keep

    # A uniform random subset of size k of a pixel set = its k highest random scores.
    device = generator.device if generator is not None else embed.device
    scores = torch.rand(member.shape, generator=generator, device=device).to(targets.device)
    k = min(views, num_pixels)
    hard_idx = torch.where(hard, scores, -1.0).topk(k, dim=-1).indices
    easy_idx = torch.where(easy, scores, -1.0).topk(k, dim=-1).indices
    rank = torch.arange(k, device=targets.device)
    chosen = torch.cat([rank < hard_keep[..., None], rank < easy_keep[..., None]], dim=-1) & valid[..., None]
    pixel = torch.cat([hard_idx, easy_idx], dim=-1)  # B x C x 2k
    image = torch.arange(batch, device=targets.device).view(-1, 1, 1).expand_as(pixel)
    anchors = embed.flatten(2).transpose(1, 2)[image.flatten(), pixel.flatten()]
    return anchors, classes.expand_as(pixel).flatten(), chosen.flatten()


def compact_anchors(
    anchors: torch.Tensor, labels: torch.Tensor, chosen: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The real anchors of `sample_anchors` alone (N x D, N,), for tests and analysis: their
    number depends on the data, so this reads it back from the device (not for a training step)."""
    return anchors[chosen], labels[chosen]


class MemoryQueue(nn.Module):
    """Per-class queue of segment prototypes (num_classes x size x dim), the code's segment queue.

    It starts as L2-normalised Gaussian noise (so the first contrast steps see random
    prototypes, as in the code). `update` enqueues, for every image and class c > 0 present,
    the L2-normalised mean embedding of that image's class-c pixels. The class-0 queue is
    never written or read: `keys` uses all-zero rows as background keys, as the code does.
    The code's pixel queue is not implemented: it is updated there but never read (and its
    pointer advances by 1 instead of K, a bug without effect). The buffers follow the
    embeddings' device and are saved with `state_dict`.
    """

    def __init__(self, num_classes: int, size: int, dim: int, generator: torch.Generator | None = None):
        super().__init__()
        device = generator.device if generator is not None else None
        noise = torch.randn(num_classes, size, dim, generator=generator, device=device)
        self.register_buffer("queue", F.normalize(noise, dim=2).cpu())
        self.register_buffer("ptr", torch.zeros(num_classes, dtype=torch.long))

    @torch.no_grad()
    def update(self, embed: torch.Tensor, targets_small: torch.Tensor) -> None:
        """Enqueue per-image class means of `embed` (B x D x h x w) labelled by `targets_small` (B x h x w)."""
        if targets_small.shape != (embed.shape[0], *embed.shape[2:]):
            raise ValueError(f"targets {tuple(targets_small.shape)} do not match embeddings {tuple(embed.shape)}")
        if self.queue.device != embed.device:
            self.to(embed.device)
        num_classes, size = self.queue.shape[:2]
        feats = embed.float().flatten(2)  # B x D x P
        classes = torch.arange(num_classes, device=embed.device).view(1, -1, 1)
        onehot = (targets_small.flatten(1)[:, None] == classes).float()  # B x C x P
        counts = onehot.sum(-1)  # B x C
        means = onehot @ feats.transpose(1, 2) / counts.clamp(min=1)[..., None]  # B x C x D
        present = counts > 0
        present[:, 0] = False  # background is never enqueued
        # Image b's entry for class c goes to slot ptr_c + (its rank among images holding c).
        # When a class fills the whole queue in one batch, only its last `size` entries survive.
        rank = present.long().cumsum(0) - 1
        total = present.sum(0)
        write = present & (rank >= total - size)
        # Every (image, class) pair is written at once, the ones not to keep into a scratch slot
        # `size` of a working copy: a fixed-shape scatter, so no count is read back. The kept
        # entries of a class have at most `size` consecutive ranks, hence distinct slots: only the
        # discarded scratch slot is written twice, and the result is deterministic.
        slot = torch.where(write, (self.ptr + rank) % size, size)  # B x C
        work = torch.cat([self.queue, self.queue.new_zeros(num_classes, 1, self.queue.shape[2])], dim=1)
        work.index_put_((classes.view(1, -1).expand_as(slot), slot), F.normalize(means, dim=2).to(work.dtype))
        self.queue.copy_(work[:, :size])
        self.ptr.copy_((self.ptr + total) % size)

    def keys(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Contrast set as the code builds it: the queues of classes 1..C-1, then `size` zero rows of class 0."""
        num_classes, size, dim = self.queue.shape
        rows = torch.cat([self.queue[1:].reshape(-1, dim), self.queue.new_zeros(size, dim)])
        classes = torch.arange(num_classes, device=self.queue.device)
        labels = torch.cat([classes[1:], classes[:1]]).repeat_interleave(size)
        return rows, labels


def pixel_contrast_loss(
    anchors: torch.Tensor,
    anchor_labels: torch.Tensor,
    keys: torch.Tensor,
    key_labels: torch.Tensor,
    temperature: float = 0.07,
    base_temperature: float = 0.07,
    self_mask: bool = False,
    chosen: torch.Tensor | None = None,
) -> torch.Tensor:
    """Supervised InfoNCE of anchors against the queue (paper eq. 8-9, as the code computes it).

    l_ij = a_i.k_j / tau - max_j (detached), P = same class, N = other classes;
    loss_i = -(tau / tau_base) sum_{j in P} [l_ij - log(e^l_ij + sum_{n in N} e^l_in)] / (|P_i| + 1e-5),
    averaged over anchors. `self_mask`: the code's quirk, also zeroing entry (i, i) of P (not
    adding it to N), a leftover of anchor-vs-anchor contrast that against a queue drops the
    unrelated key row i from anchor i's positives (off by default; the parity tests turn it on to
    reproduce the authors' numbers exactly). Against the anchors themselves (keys = anchors) it
    removes each anchor's self-pair, as in the code's no-queue branch.
    Computed in float32 (autocast off). No anchors: a zero that still backpropagates.

    `chosen` (bool, one per row; None: all rows) marks the real anchors of the fixed-size rows of
    `sample_anchors`: the loss averages over them only, and the quirk zeroes entry (i, n_i) with
    n_i = the rank of row i among the chosen rows (cumsum - 1), the index it has in the compact
    list of anchors, so the value is the compact list's without reading its length back.
    """
    if anchors.shape[0] == 0:
        return anchors.float().sum() * 0.0
    with torch.autocast(anchors.device.type, enabled=False):
        anchors = anchors.float()
        if chosen is None:
            chosen = torch.ones(anchors.shape[0], dtype=torch.bool, device=anchors.device)
        else:  # rows that are not anchors become zeros: finite logits, so no 0 * inf = NaN
            chosen = chosen.to(anchors.device)  # in the backward pass of the rows the mean leaves out
            anchors = torch.where(chosen[:, None], anchors, 0.0)
        keys = keys.to(anchors.device, torch.float32)
        logits = anchors @ keys.T / temperature
        logits = logits - logits.max(dim=1, keepdim=True).values.detach()
        positive = (anchor_labels.to(keys.device)[:, None] == key_labels.to(keys.device)[None, :]).float()
        exp_logits = logits.exp()
        negatives = (exp_logits * (1 - positive)).sum(dim=1, keepdim=True)
        if self_mask:  # entry (i, rank of row i among the chosen); every row chosen: the diagonal
            compact_index = chosen.long().cumsum(0) - 1
            columns = torch.arange(positive.shape[1], device=positive.device)
            positive = positive.masked_fill(columns[None, :] == compact_index[:, None], 0.0)
        log_prob = logits - torch.log(exp_logits + negatives)
        mean_log_prob_pos = (positive * log_prob).sum(1) / (positive.sum(1) + 1e-5)
        total = torch.where(chosen, mean_log_prob_pos, 0.0).sum()
        return -(temperature / base_temperature) * (total / chosen.sum().clamp(min=1))
