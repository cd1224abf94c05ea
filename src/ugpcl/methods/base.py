"""What every training method is: networks, a train step with its own losses, and an evaluator.

The engine (`ugpcl.engine.trainer`) owns the loop, the optimiser and LR schedule, AMP,
checkpoints, validation and logging. A method owns only what makes it that method.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..losses import ce_dice, ramp_weight
from ..models import build_unet


@dataclass
class Batch:
    """One training batch on the device, already augmented.

    image: B x C x H x W float; the first `labeled_bs` samples are labeled.
    label: labeled_bs x H x W long, the labels of those samples only (unlabeled labels are
    never handed to a method, so a method cannot use them by mistake).
    """

    image: torch.Tensor
    label: torch.Tensor
    labeled_bs: int

    @property
    def labeled(self) -> torch.Tensor:
        return self.image[: self.labeled_bs]

    @property
    def unlabeled(self) -> torch.Tensor:
        return self.image[self.labeled_bs :]


class Method:
    """Base class. Subclasses set `name`, build networks in `__init__`, implement `train_step`."""

    name = "base"
    uses_unlabeled = True  # False: the engine hands this method batches of labeled images only

    def __init__(self, cfg: dict, num_classes: int, in_channels: int):
        self.cfg = cfg
        self.hp = dict(cfg["methods"].get(self.name, {}))
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.iterations = cfg["train"]["iterations"]
        self.dice_background = cfg["train"]["dice_background"]
        self.nets = nn.ModuleDict()          # trained by the optimiser, saved in checkpoints
        self.frozen = nn.ModuleDict()        # saved but not optimised (EMA teachers)

    # --- construction helpers -------------------------------------------------------------
    def build_net(self, **kwargs) -> nn.Module:
        """A UNet-R50 configured from `cfg['model']`; kwargs choose optional heads."""
        return build_unet(
            self.cfg["model"], self.num_classes, self.in_channels, image_size=self.cfg["data"]["image_size"], **kwargs
        )

    # --- what subclasses implement --------------------------------------------------------
    def train_step(self, batch: Batch, t: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the total loss of iteration t (0-based) and the loss terms to log."""
        raise NotImplementedError

    def after_step(self, t: int) -> None:
        """Called after the optimiser step of iteration t (EMA updates, memory queues)."""

    def eval_network(self) -> nn.Module:
        """The network that evaluation and inference use; its forward returns logits."""
        return self.nets["model"]

    # --- shared pieces --------------------------------------------------------------------
    def supervised_loss(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return ce_dice(logits, label, include_background=self.dice_background)

    def ramp(self, t: int) -> float:
        """This method's consistency weight at iteration t (keys consistency/ramp_epoch/ramp_length)."""
        return ramp_weight(t, self.hp["consistency"], self.hp["ramp_epoch"], self.hp["ramp_length"])

    def extra_state(self) -> dict:
        """Non-parameter state to checkpoint (memory queues); tensors or plain data."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def to(self, device) -> "Method":
        self.nets.to(device)
        self.frozen.to(device)
        return self

    def train(self) -> None:
        self.nets.train()
        self.frozen.train()
