"""One training iteration, the only place it is written: `fit`, `bench` and the tests call it."""

from __future__ import annotations

import torch

from ..methods.base import Batch, Method


def make_optimizer(method: Method, train_cfg: dict, fused: bool = False) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay over the method's trainable parameters (teachers excluded);
    `fused`: one fused kernel for the whole update (same arithmetic).

    Fused SGD cannot start a momentum buffer for a parameter whose first gradient comes after the
    others' (UGPCL's projection head at `contrast_start`): it takes the buffers of all or none. So
    with `fused` every buffer starts at zero, which gives the same first update (buffer = gradient,
    dampening 0) as SGD's own start."""
    params = list(method.trainable_parameters())
    optimizer = torch.optim.SGD(params, lr=train_cfg["lr"], momentum=train_cfg["momentum"],
                                weight_decay=train_cfg["weight_decay"], fused=fused or None)
    if fused and train_cfg["momentum"]:
        for p in params:
            optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return optimizer


def poly_lr(t: int, train_cfg: dict) -> float:
    """lr at 0-based iteration t: lr0 (1 - t/T)^power, floored at min_lr."""
    decay = (1 - t / train_cfg["iterations"]) ** train_cfg["poly_power"]
    return max(train_cfg["lr"] * decay, train_cfg["min_lr"])


def train_step(method: Method, optimizer: torch.optim.Optimizer, batch: Batch, t: int, *,
               lr: float | None = None, amp: bool = False) -> tuple[torch.Tensor, dict]:
    """Forward and loss (bf16 autocast when `amp`), backward, optimiser step, then the method's
    after-step (EMA, queues). Returns the detached loss and the method's terms, still on the
    device: nothing here waits for the GPU."""
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    with torch.autocast(batch.image.device.type, dtype=torch.bfloat16, enabled=amp):
        out = method.compute_loss(batch, t)
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], torch.Tensor) and isinstance(out[1], dict)):
        raise TypeError(f"{type(method).__name__}.compute_loss returned {type(out).__name__}, not (loss tensor, dict "
                        "of terms to log): end it with `return self.semi_supervised(sup, unsup, weight)` or "
                        "`return loss, {\"sup\": sup.detach(), ...}` (see methods/base.py)")
    loss, terms = out
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    method.after_step(t)
    return loss.detach(), terms
