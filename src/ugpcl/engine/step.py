"""One training iteration, the only place it is written: `fit`, `bench` and the tests call it."""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

import torch

from ..errors import UserError
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


def method_source(method: Method) -> tuple[Path | None, int | None, str]:
    """Where the method's compute_loss is written (an inherited one in its own class's file): the file,
    the line, and its name as `Class.compute_loss`; read from the function's code object, no file I/O.
    Called only to word an error or at a resume point, never raises."""
    owner = next((c for c in type(method).__mro__ if "compute_loss" in vars(c)), type(method))
    name = f"{owner.__name__}.compute_loss"
    try:
        code = inspect.unwrap(vars(owner)["compute_loss"]).__code__
        return Path(code.co_filename), code.co_firstlineno, name
    except Exception:  # noqa: BLE001 - a message about an error must not raise one of its own
        return None, None, name


def method_code(method: Method) -> str | None:
    """SHA-256 of the file holding the method's compute_loss (None where it cannot be read): a resume
    point records it, so that resuming after the file changed says so."""
    path = method_source(method)[0]
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path else None
    except OSError:
        return None


def _wrong(method: Method, what: str, fix: str) -> UserError:
    path, line, name = method_source(method)
    return UserError(f"{name}{f' (line {line})' if line else ''} returned {what}", path=path, fix=fix)


def check_returned(method: Method, out) -> None:
    """What compute_loss returned must be (a single-number loss the optimiser can follow back to the
    networks, a dict of terms): else a UserError naming the method's file and what came back instead.
    Attribute checks only: nothing waits for the device, and nothing is looked up unless one fails."""
    ending = ("end it with `return self.semi_supervised(sup, unsup, weight)` or `return loss, {\"sup\": sup.detach(), "
              "...}` (see methods/base.py)")
    if not (isinstance(out, tuple) and len(out) == 2):
        shown = f"{type(out).__name__} of {len(out)}" if isinstance(out, (tuple, list)) else type(out).__name__
        raise _wrong(method, f"{shown}, not (loss tensor, dict of terms to log)", ending)
    loss, terms = out
    if not isinstance(loss, torch.Tensor) or not isinstance(terms, dict):
        raise _wrong(method, f"({type(loss).__name__}, {type(terms).__name__}), not (loss tensor, dict of terms to "
                             "log)", ending + ("; keep the loss a tensor (no .item() or float()), the optimiser "
                                               "follows it back" if isinstance(loss, (int, float)) else ""))
    if loss.ndim != 0:
        raise _wrong(method, f"a loss of shape {list(loss.shape)}, not a single number",
                     "reduce it before returning it (e.g. `.mean()` over the pixels, as the losses in ugpcl.losses do)")
    if not loss.requires_grad and torch.is_grad_enabled():
        raise _wrong(method, "a loss with no gradient to follow back to the networks",
                     "compute it from the networks' outputs outside torch.no_grad() and without .detach() (detach "
                     "only the terms you log, and a teacher's outputs)")


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
    check_returned(method, out)
    loss, terms = out
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    method.after_step(t)
    return loss.detach(), terms
