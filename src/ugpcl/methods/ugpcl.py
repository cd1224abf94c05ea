"""UGPCL (Wang et al., IJCAI 2022): paper eqs. 1-12 with the values of the authors' code.

    loss = L_sup(CNN) + alpha L_sup(Swin)                      eq. 3, labeled images
         + lambda_t(t) MSE(p_cnn, p_swin)                      eq. 5, unlabeled images
         + lambda_2 CE(rotation head, k)                       eq. 12, all images
         + lambda_1 [t > contrast_start] InfoNCE(anchors, queue)   eqs. 6-9

Every image is first turned by k quarter turns (k is the rotation class) and a small random
angle, labels with it, as in the authors' code. Ablation switches (Table 2): consistency_loss,
equivariance_loss, contrast = none | sup | pseudo | ugpcl; embedding stage (Table 3): embed_stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..contrast import MemoryQueue, certainty_pseudo_labels, downsample_labels, pixel_contrast_loss, sample_anchors
from ..engine.augment import rot90, rotation_theta, warp
from ..losses import softmax_mse
from .base import Batch, Method

ROTATION_DEG = 20.0


class UGPCL(Method):
    name = "ugpcl"

    def __init__(self, cfg: dict, num_classes: int, in_channels: int):
        super().__init__(cfg, num_classes, in_channels)
        hp = self.hp
        self.contrast = hp["contrast"]
        self.nets["model"] = self.build_net(
            swin=True,
            rotation_head=hp["equivariance_loss"],
            embed_stage=hp["embed_stage"] if self.contrast != "none" else None,
        )
        self.queue = MemoryQueue(num_classes, hp["memory_size"], cfg["model"]["embed_dim"]) if self.contrast != "none" else None
        self._pending = None

    def rotate(self, batch: Batch):
        """k quarter turns plus a U(-20, 20) degree turn per image, applied to images and labels."""
        n = batch.image.shape[0]
        k = torch.randint(0, 4, (n,), device=batch.image.device)
        angle = (torch.rand(n, device=batch.image.device) * 2 - 1) * ROTATION_DEG
        image, label = rot90(batch.image, k), rot90(batch.label, k[: batch.labeled_bs])
        image, label = warp(image, label, rotation_theta(angle))
        return image, label, k

    def train_step(self, batch: Batch, t: int):
        hp, nl = self.hp, batch.labeled_bs
        image, label, k = self.rotate(batch)
        out = self.nets["model"].forward_heads(image)
        seg, seg_tf = out["seg"], out["seg_tf"]

        sup_cnn = self.supervised_loss(seg[:nl], label)
        sup_tf = self.supervised_loss(seg_tf[:nl], label)
        loss = sup_cnn + hp["tf_weight"] * sup_tf
        logs = {"sup": sup_cnn.detach(), "sup_tf": sup_tf.detach()}

        if hp["consistency_loss"]:
            weight = self.ramp(t)
            con = softmax_mse(seg[nl:], seg_tf[nl:])
            loss = loss + weight * con
            logs.update(con=con.detach(), con_weight=weight)
        if hp["equivariance_loss"]:
            rot = F.cross_entropy(out["rot"].float(), k)
            loss = loss + hp["rotation_weight"] * rot
            logs["rot"] = rot.detach()
        if self.queue is not None and t > hp["contrast_start"]:
            contrast, info = self.contrastive_loss(seg, seg_tf, out["embed"], label, t)
            loss = loss + hp["contrast_weight"] * contrast
            logs.update(contrast=contrast.detach(), **info)
        return loss, logs

    def contrastive_loss(self, seg, seg_tf, embed, label, t):
        hp = self.hp
        targets, info = certainty_pseudo_labels(seg, seg_tf, label, t, self.iterations, self.contrast)
        size = embed.shape[-2:]
        targets_small = downsample_labels(targets, size)
        preds_small = downsample_labels(seg.detach().argmax(1), size)
        anchors, anchor_labels = sample_anchors(embed.float(), targets_small, preds_small)
        keys, key_labels = self.queue.keys()
        loss = pixel_contrast_loss(anchors, anchor_labels, keys, key_labels, hp["temperature"], hp["base_temperature"])
        self._pending = (embed.detach().float(), targets_small)
        return loss, info

    def after_step(self, t: int) -> None:
        if self._pending is not None:
            self.queue.update(*self._pending)
            self._pending = None

    def extra_state(self) -> dict:
        return {"queue": self.queue.state_dict()} if self.queue is not None else {}

    def load_extra_state(self, state: dict) -> None:
        if self.queue is not None:
            self.queue.load_state_dict(state["queue"])

    def to(self, device):
        super().to(device)
        if self.queue is not None:
            self.queue.to(device)
        return self


METHOD = UGPCL
