"""Choosing the torch device from a config or command-line value."""

from __future__ import annotations

import torch

from .errors import UserError


def pick_device(choice: str = "auto") -> torch.device:
    """auto -> CUDA when visible, else the CPU; an explicit cuda without a GPU is an error."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("CUDA was asked for but no CUDA device is visible",
                        fix="use --device cpu (or auto), or run on a GPU machine")
    return torch.device(choice)
