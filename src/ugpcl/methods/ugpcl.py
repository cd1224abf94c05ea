"""UGPCL (Wang et al., IJCAI 2022): paper eqs. 1-12 with the values of the authors' code.

    loss = L_sup(CNN) + alpha L_sup(Swin)                      eq. 3, labeled images
         + lambda_t(t) MSE(p_cnn, p_swin)                      eq. 5, unlabeled images
         + lambda_2 CE(rotation head, k)                       eq. 12, all images (one k each; `all`: 4)
         + lambda_1 [t > contrast_start] InfoNCE(anchors, queue)   eqs. 6-9

Images and labels are first turned by k quarter turns (the rotation class) and a small angle, as in
the authors' code. Switches: Table 2 consistency_loss, equivariance_loss, contrast; Table 3 embed_stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..contrast import MemoryQueue, certainty_pseudo_labels, downsample_labels, pixel_contrast_loss, sample_anchors
from ..geometry import random_turns
from ..losses import class_map, equivariance_loss, softmax_mse
from .base import Batch, Method, RampHParams, register
from .hparams import hparam

ROTATION_DEG = 20.0
CONFIG = "authors' configs/comparison_acdc_224_136/ugpcl_unet_r50.yaml"
TRAINER = "authors' ugpcl_trainer.py"


@register
class UGPCL(Method):
    name = "ugpcl"
    diagnostics = ("weight", "threshold", "certain_fraction", "uncertainty_rate")  # contrast.certainty_pseudo_labels

    @dataclass(frozen=True)
    class HParams(RampHParams):
        consistency: float = hparam(0.01, f"{CONFIG}: consistency 0.01; paper: lambda_t rises to 0.01", minimum=0)
        ramp_epoch: int = hparam(100, f"{TRAINER}: get_current_consistency_weight(step // 100)", minimum=1)
        ramp_length: int = hparam(100, f"{CONFIG}: consistency_rampup 100", minimum=1)
        tf_weight: float = hparam(0.4, "paper eq. 3 alpha = 0.4; trainer default tf_decoder_weight", minimum=0)
        rotation_weight: float = hparam(0.1, "paper lambda_2 = 0.1; trainer default cls_weight", minimum=0)
        contrast_weight: float = hparam(0.1, f"paper lambda_1 = 0.1; {CONFIG}: contrast_weight", minimum=0)
        # 1000 whatever the run's length (unlike the ramp), as for the trainer's 6000 and the config's 10000
        contrast_start: int = hparam(1000, f"{TRAINER}: contrast on for step > 1000", minimum=0)
        temperature: float = hparam(0.07, f"{CONFIG}: temperature 0.07", exclusive_minimum=0)
        base_temperature: float = hparam(0.07, f"{CONFIG}: base_temperature 0.07", exclusive_minimum=0)
        memory_size: int = hparam(500, f"{CONFIG}: memory_size 500", minimum=1)
        consistency_loss: bool = hparam(True, "Table 2 l_con (ablation switch)")
        equivariance_loss: bool = hparam(True, "Table 2 l_e (ablation switch)")
        contrast: Literal["none", "sup", "pseudo", "ugpcl"] = hparam("ugpcl", "Table 2 l_c variants (ablation)")
        embed_stage: Literal["conv1", "conv2", "conv3", "conv4"] = hparam(
            "conv2", "Table 3; authors' contrast_embed_index -3 = stride 8 (conv2 at 224 px)")
        rotation_interpolation: Literal["nearest", "bilinear"] = hparam(
            "nearest", f"{TRAINER}: torchvision rotate, default InterpolationMode.NEAREST")
        rotate_without_equivariance: bool = hparam(
            True, f"{TRAINER}: rotates when cls_weight >= 0, so cls_weight 0 rotates without l_e (true), -1 does not")
        pseudo_labels: Literal["cnn", "mean"] = hparam(
            "cnn", f"{TRAINER}: contrast_type 'pseudo' uses the CNN head's argmax on every image")
        equivariance_turns: Literal["one", "all"] = hparam("one", f"{TRAINER}: one turn each; all: eq. 12's 4")
        self_mask_quirk: bool = hparam(False, "authors' pixel_contras_loss.py zeroes P[i, i]; off: paper eq. 8")
        augment_rotation: bool = hparam(False, f"{CONFIG}: p_flip 0, p_rot 0 (the baselines': 0.5)")

    def __init__(self, setup, hp, model=None):
        super().__init__(setup, hp, model)
        self.queue = (MemoryQueue(setup.net.num_classes, hp.memory_size, setup.net.embed_dim)
                      if hp.contrast != "none" else None)
        self._pending = None

    def augmentation(self, shared):  # no train.augment turns unless augment_rotation: it turns images itself
        return shared if self.hp.augment_rotation else {**shared, "rot90_flip_p": 0.0, "rotate_p": 0.0}

    def build_model(self):
        """The UNet-R50 with UGPCL's heads: Swin decoder, rotation classifier, embedding head."""
        return self.unet(swin=self.setup.swin, rotation_head=self.hp.equivariance_loss,
                         embed_stage=self.hp.embed_stage if self.hp.contrast != "none" else None)

    def compute_loss(self, batch: Batch, t: int):
        hp, nl, image, label, k = self.hp, batch.labeled_bs, batch.image, batch.label, None
        if hp.equivariance_loss or hp.rotate_without_equivariance:
            image, label, k = random_turns(image, label, ROTATION_DEG, hp.rotation_interpolation)
        out = self.model.forward_heads(image)
        seg, seg_tf = out["seg"], out["seg_tf"]

        sup_cnn, sup_tf = self.supervised_loss(seg[:nl], label), self.supervised_loss(seg_tf[:nl], label)
        loss = sup_cnn + hp.tf_weight * sup_tf
        logs = {"sup": sup_cnn.detach(), "sup_tf": sup_tf.detach()}
        if hp.consistency_loss:
            weight = self.ramp(t)
            con = softmax_mse(seg[nl:], seg_tf[nl:])
            loss = loss + weight * con
            logs.update(con=con.detach(), weight=weight)
        if hp.equivariance_loss:
            classify = self.model.rotation_logits if hp.equivariance_turns == "all" else None  # eq. 12 as written
            rot = equivariance_loss(out["rot"], k, image, classify)
            loss = loss + hp.rotation_weight * rot
            logs["rot"] = rot.detach()
        if self.queue is not None and t > hp.contrast_start:
            contrast, info = self.contrastive_loss(seg, seg_tf, out["embed"], label, t)
            loss = loss + hp.contrast_weight * contrast
            logs.update(contrast=contrast.detach(), **info)
        return loss, logs

    def contrastive_loss(self, seg, seg_tf, embed, label, t):
        hp, size = self.hp, embed.shape[-2:]
        targets, info = certainty_pseudo_labels(seg, seg_tf, label, t, self.setup.iterations, hp.contrast,
                                                hp.pseudo_labels)
        targets_small, preds_small = downsample_labels(targets, size), downsample_labels(class_map(seg.detach()), size)
        anchors, anchor_labels, chosen = sample_anchors(embed.float(), targets_small, preds_small,
                                                        self.setup.net.num_classes)
        loss = pixel_contrast_loss(anchors, anchor_labels, *self.queue.keys(), hp.temperature, hp.base_temperature,
                                   hp.self_mask_quirk, chosen=chosen)
        self._pending = (embed.detach().float(), targets_small)
        return loss, info

    def after_step(self, t: int) -> None:
        if self._pending is not None:
            self.queue.update(*self._pending)
            self._pending = None

    def steady_state_iteration(self) -> int:
        return self.hp.contrast_start + 1
