"""GPU speed switches: each one changes how fast a step runs, not what it computes.

    train.speed.channels_last      NHWC memory layout for the networks and the batches
    train.speed.cudnn_benchmark    cuDNN picks the fastest convolution algorithm per shape
    train.speed.fused_optimizer    SGD's update as one fused kernel (torch's fused=True)
    train.speed.compile            torch.compile of every network block: none | default |
                                   max-autotune-no-cudagraphs

Each key takes `auto`, `true`/`false` (compile: a mode name). `auto` resolves per device type
from MEASURED below: a switch is on by default for CUDA only once a GPU measurement recorded in
reports/benchmarks.md showed it faster; until then `auto` leaves it off. bf16 autocast is
`train.amp`. The CPU tests check each switch gives the same losses as without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..methods.base import Method
from ..models.resnet import ResNetEncoder
from ..models.swin import SwinDecoder
from ..models.unet import EmbeddingHead, UNetDecoder

# No CUDA graphs (`reduce-overhead`, `max-autotune`): the blocks are compiled one by one, and a
# pass without gradients (validation, EMA teachers) feeds one compiled block's output to the
# next, which CUDA graph trees start as a new run, overwriting that output ("accessing tensor
# output of CUDAGraphs that has been overwritten by a subsequent run": pytorch#152887, #160281,
# open for torch 2.13). CUDA graphs would need the whole step captured at once.
COMPILE_MODES = ("none", "default", "max-autotune-no-cudagraphs")
# What `auto` means per device type, from measurements (reports/benchmarks.md). No GPU
# measurement exists yet, so every switch stays off until one shows a gain.
MEASURED = {
    "cuda": {"channels_last": False, "cudnn_benchmark": False, "fused_optimizer": False, "compile": "none"},
    "cpu": {"channels_last": False, "cudnn_benchmark": False, "fused_optimizer": False, "compile": "none"},
}
# The blocks torch.compile wraps: compiling them in place (nn.Module.compile) keeps state_dict
# keys unchanged, so checkpoints do not depend on the switch.
COMPILED_BLOCKS = (ResNetEncoder, UNetDecoder, SwinDecoder, EmbeddingHead)


@dataclass(frozen=True)
class Speed:
    channels_last: bool = False
    cudnn_benchmark: bool = False
    fused_optimizer: bool = False
    compile: str = "none"


def resolve(speed_cfg: dict, device: torch.device) -> Speed:
    """train.speed with every `auto` replaced by the measured default for this device type."""
    measured = MEASURED.get(device.type, MEASURED["cpu"])
    values = {key: measured[key] if value == "auto" else value for key, value in speed_cfg.items()}
    if values["compile"] is False:
        values["compile"] = "none"
    if values["cudnn_benchmark"] and device.type != "cuda":
        values["cudnn_benchmark"] = False  # a cuDNN setting: nothing to switch on elsewhere
    return Speed(**values)


def apply(method: Method, speed: Speed, backend: str = "inductor") -> Method:
    """Set the process-wide and per-network switches for `method` (already on its device).
    `backend`: torch.compile's (the tests trace with aot_eager, which generates no code)."""
    if speed.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    if speed.channels_last:
        method.to(memory_format=torch.channels_last)
    if speed.compile != "none":
        for module in method.modules():
            if isinstance(module, COMPILED_BLOCKS):
                module.compile(backend=backend, mode=None if speed.compile == "default" or backend != "inductor"
                               else speed.compile)
    return method


def batch_layout(images: torch.Tensor, speed: Speed) -> torch.Tensor:
    """Images in the memory layout the networks expect."""
    return images.contiguous(memory_format=torch.channels_last) if speed.channels_last else images


def compiled_blocks(method: nn.Module) -> int:
    """How many blocks of `method` torch.compile wraps (for tests and logs)."""
    return sum(getattr(m, "_compiled_call_impl", None) is not None for m in method.modules())
