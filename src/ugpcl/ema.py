"""Exponential-moving-average teachers (Mean Teacher, UA-MT; METHODS.md §1 "EMA")."""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_teacher(student: nn.Module) -> nn.Module:
    """A copy of `student` that is never optimised: no gradients, and kept in train mode
    (its dropout stays active and its BN uses batch statistics, as in SSL4MIS)."""
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    return teacher.train()


def ema_alpha(t: int, decay: float) -> float:
    """Warm-up decay min(1 - 1/(t+1), decay): at t = 0 the teacher becomes the student."""
    return min(1.0 - 1.0 / (t + 1), decay)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float, t: int) -> None:
    """teacher <- a teacher + (1 - a) student over parameters only, a = ema_alpha(t, decay).

    BN running buffers are not averaged: the teacher keeps the ones its own passes produce.
    Call after optimizer.step() of iteration t (0-based).
    """
    alpha = ema_alpha(t, decay)
    teacher_params = list(teacher.parameters())
    # fused over all tensors: a ResNet-50 UNet has ~300 of them, two kernel launches each otherwise
    torch._foreach_mul_(teacher_params, alpha)
    torch._foreach_add_(teacher_params, [p.detach() for p in student.parameters()], alpha=1.0 - alpha)
