"""What every training method is, and how one declares itself.

A method is one module in this package holding a `Method` subclass decorated with `@register`:
its `name`, its `HParams` dataclass (see `hparams.py`), its networks built in `__init__`, and
`compute_loss(batch, t)`. The engine owns the loop, optimiser, LR schedule, AMP, checkpoints,
validation and logging. A `Method` is an `nn.Module`: its networks, EMA teachers and memory
queues are submodules, so its whole state is one `state_dict()`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from ..errors import UserError
from ..losses import ce_dice, ramp_weight
from ..models import SwinConfig, UNetConfig, build_unet
from .hparams import hparam

_REGISTRY: dict[str, type["Method"]] = {}


def register(cls: type["Method"]) -> type["Method"]:
    """Class decorator: make `cls` known under `cls.name` (the module's presence in methods/ loads it)."""
    if not dataclasses.is_dataclass(cls.HParams):
        raise TypeError(f"{cls.__name__}.HParams must be a dataclass")
    other = _REGISTRY.get(cls.name)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise ValueError(f"two methods are called {cls.name!r}: {other.__module__} and {cls.__module__}")
    _REGISTRY[cls.name] = cls
    return cls


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
        if self.labeled_bs >= len(self.image):  # (shapes only: nothing waits for the device)
            raise UserError("compute_loss reads batch.unlabeled, but this batch has no unlabeled images: the method "
                            "says it does not use them (uses_unlabeled = False, or takes_unlabeled(hp) is False), so "
                            "the engine hands it the labeled images only",
                            fix="drop uses_unlabeled = False from the method (or make takes_unlabeled(hp) return "
                                "True), or do not read batch.unlabeled")
        return self.image[self.labeled_bs :]


@dataclass(frozen=True)
class Setup:
    """What a method gets from the run besides its own hyper-parameters."""

    net: UNetConfig              # the shared UNet-R50 for this data (classes, channels, size), no extra heads
    swin: SwinConfig             # the Swin decoder's settings, for methods that add one
    iterations: int              # train.iterations
    dice_background: bool        # train.dice_background


@dataclass(frozen=True)
class RampHParams:
    """The consistency weight w(t) = consistency * rampup(e(t), ramp_length) (SSL4MIS), where the
    ramp epoch e(t) is t scaled to the run (`ramp_schedule: run`: full weight on the run's last
    iteration, whatever train.iterations is) or t // ramp_epoch (`code`: the literal constants,
    made for the sources' own run lengths). See `losses.ramp_position`."""

    consistency: float = hparam(0.1, "SSL4MIS train_*_2D.py --consistency (lambda)", minimum=0)
    ramp_epoch: int = hparam(150, "SSL4MIS: get_current_consistency_weight(iter_num // 150)", minimum=1)
    ramp_length: int = hparam(200, "SSL4MIS --consistency_rampup 200.0", minimum=1)
    ramp_schedule: Literal["run", "code"] = hparam(
        "run", "the sources' ramps end on their last iteration (SSL4MIS 150 x 200 = max_iter 30000; authors' "
               "UGPCL 100 x 100 = max_iter 10000); run: so does ours; code: ramp_epoch literally (METHODS §5.1)")


class Method(nn.Module):
    """Base class; see the module docstring. It builds `self.model` (`build_model`), the network
    evaluation scores; a method adds its other networks after `super().__init__`. Without an
    `HParams` of its own, a method takes the consistency ramp's (`RampHParams`)."""

    name: ClassVar[str] = "base"
    HParams: ClassVar[type] = RampHParams
    uses_unlabeled: ClassVar[bool] = True   # False: the engine hands it batches of labeled images only
    evaluated: ClassVar[tuple[str, ...]] = ("model",)  # networks evaluation scores; the first is the main one
    # logged numbers that are not losses (the ramped weight, thresholds, fractions): the report's
    # loss-terms figure draws every other number compute_loss logs as a loss term
    diagnostics: ClassVar[tuple[str, ...]] = ("weight",)

    @classmethod
    def takes_unlabeled(cls, hp) -> bool:
        """Whether, with hyper-parameters `hp`, its batches hold unlabeled images: known before it is built,
        so that the engine checks a regime against the batch before fetching any weights."""
        return cls.uses_unlabeled

    def __init__(self, setup: Setup, hp, model: nn.Module | None = None):
        """`model`: a ready network to use instead of `build_model()` (the seam through which the
        parity tests plug in a stub that returns recorded outputs)."""
        super().__init__()
        self.setup = setup
        self.hp = hp
        self.model = self.build_model() if model is None else model

    def build_model(self) -> nn.Module:
        """The main network: the shared UNet-R50 (methods override this to add heads)."""
        return self.unet()

    # --- what subclasses implement --------------------------------------------------------
    def compute_loss(self, batch: Batch, t: int) -> tuple[torch.Tensor, dict]:
        """The total loss of iteration t (0-based) and the terms to log (tensors or floats, no .item())."""
        raise NotImplementedError

    def after_step(self, t: int) -> None:
        """Called after the optimiser step of iteration t (EMA updates, memory queues)."""

    def steady_state_iteration(self) -> int:
        """The first iteration at which every loss term is on (what `ugpcl bench` times)."""
        return 0

    def augmentation(self, shared: dict) -> dict:
        """The batch augmentation this method trains with: params.yaml's `train.augment` (`shared`),
        or a copy with what the method's own config changes (UGPCL: no rotation, it turns images itself)."""
        return shared

    # --- shared pieces --------------------------------------------------------------------
    def unet(self, **heads) -> nn.Module:
        """The shared UNet-R50, with optional heads (see `UNetConfig`)."""
        return build_unet(dataclasses.replace(self.setup.net, **heads))

    def eval_network(self) -> nn.Module:
        """The network that evaluation and inference use; its forward returns logits."""
        return getattr(self, self.evaluated[0])

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def supervised_loss(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return ce_dice(logits, label, include_background=self.setup.dice_background)

    @staticmethod
    def semi_supervised(sup: torch.Tensor, unsup: torch.Tensor, weight: float, **logs) -> tuple[torch.Tensor, dict]:
        """L = L_sup + w L_unsup, and its terms to log."""
        return sup + weight * unsup, {"sup": sup.detach(), "unsup": unsup.detach(), "weight": weight, **logs}

    def ramp(self, t: int) -> float:
        """The consistency weight at iteration t (for HParams derived from RampHParams)."""
        hp = self.hp
        iterations = self.setup.iterations if hp.ramp_schedule == "run" else None
        return ramp_weight(t, hp.consistency, hp.ramp_epoch, hp.ramp_length, iterations)
