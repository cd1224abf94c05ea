"""Checkpoint files and loading a trained run back for evaluation, inference and figures.

A checkpoint is one `torch.save`d dict:
    format       "ugpcl-checkpoint-1"
    iteration    iterations completed
    cfg, info    the resolved configuration and the run description (method, dataset, regime, seed,
                 run_id, profile, num_classes, in_channels)
    nets         {name: state_dict} of the trained networks;  frozen: same for EMA teachers
    eval_net     the key of the network that evaluation uses
    extra        method state (memory queues); training-only keys: optimizer, sampler, rng, best
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import deep_merge
from ..errors import UserError
from ..fileio import atomic_path
from ..methods import get_method

FORMAT = "ugpcl-checkpoint-1"


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, payload: dict) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({"format": FORMAT, **payload}, tmp)


def read(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError("checkpoint not found", path=path, fix="train the run first, or name an existing .pt file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise UserError(f"cannot read checkpoint ({exc})", path=path, fix="the file is corrupt: retrain or restore it") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError("not a ugpcl checkpoint", path=path, fix=f"expected a file written by `ugpcl train` ({FORMAT})")
    return ckpt


@dataclass
class LoadedRun:
    net: nn.Module          # the evaluation network, in eval mode
    method: object          # the Method holding every network of the run
    cfg: dict
    info: dict
    iteration: int
    path: Path


def build_method(cfg: dict, info: dict):
    """The run's Method with freshly initialised networks (no pretrained download)."""
    cfg = deep_merge(cfg, {"model": {"pretrained": False}})
    return get_method(info["method"])(cfg, info["num_classes"], info["in_channels"])


def load_checkpoint_file(path: str | Path, device="cpu") -> LoadedRun:
    ckpt = read(path)
    method = build_method(ckpt["cfg"], ckpt["info"])
    for name, state in ckpt["nets"].items():
        method.nets[name].load_state_dict(state)
    for name, state in ckpt.get("frozen", {}).items():
        method.frozen[name].load_state_dict(state)
    method.to(device)
    net = method.nets[ckpt["eval_net"]].eval()
    return LoadedRun(net, method, ckpt["cfg"], ckpt["info"], int(ckpt["iteration"]), Path(path))


def load_run(run_dir: str | Path, which: str = "best", device="cpu") -> LoadedRun:
    """Load `run_dir/checkpoints/{which}.pt` (which: best | last)."""
    if which not in ("best", "last"):
        raise UserError(f"checkpoint {which!r} is neither best nor last")
    return load_checkpoint_file(Path(run_dir) / "checkpoints" / f"{which}.pt", device)
