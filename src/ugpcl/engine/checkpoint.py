"""Checkpoint files, and loading a trained run back for evaluation, inference and figures.

A checkpoint is one `torch.save`d dict of tensors and plain data only, so it is always read
with `torch.load(weights_only=True)`: a file cannot run code when it is loaded.
    format       "ugpcl-checkpoint-2"
    iteration    iterations completed
    cfg, info    the resolved configuration and the run description (method, dataset, regime, seed,
                 run_id, profile, num_classes, in_channels)
    state        the method's state_dict: every network, EMA teacher and memory queue
    training-only keys (progress/resume.pt): optimizer, sampler, rng, best (score), best_file (the
                 progress/best-<t>.pt holding it), elapsed (seconds), data (SHA-256 of the prepared file),
                 method_code (SHA-256 of the file holding the method's compute_loss: a resume says when it changed)

It is serialised in memory and written with plain file I/O under a temporary name, so that a
full disk is a clear error (torch.save straight to a file reports it as an opaque RuntimeError)
and never leaves a partial checkpoint behind.
"""

from __future__ import annotations

import io
import pickle
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import deep_merge
from ..errors import UserError
from ..fileio import write_bytes
from ..methods import build_method, registry
from ..methods.base import Method

FORMAT = "ugpcl-checkpoint-2"
RETRAIN = "retrain the run (`ugpcl train ... --force`, or delete its run directory and rerun the workflow)"


def rng_state(device: torch.device | str = "cpu") -> dict:
    """Every RNG's state as tensors and plain data (loadable with weights_only=True): the CPU
    generators and, when training on a GPU, that GPU's generator (the one the run uses, whatever
    its index: a resumed run may be given another GPU)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "python": [version, list(internal), gauss_next]}
    if torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device | str = "cpu") -> None:
    """Restore `rng_state`'s generators; the GPU one (if saved) onto `device`'s generator. The
    states may have been loaded onto any device: torch takes them as CPU byte tensors only."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def save(path: Path, payload: dict) -> None:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    write_bytes(path, buffer.getbuffer(), suffix=".pt")


def save_method(path: Path, method: Method, cfg: dict, info: dict, iteration: int, **training) -> None:
    """A checkpoint of `method` (plus, for resume files, the training state in `training`)."""
    save(path, {"iteration": iteration, "cfg": cfg, "info": info, "state": method.state_dict(), **training})


# how files that are often passed by mistake begin
_SIGNATURES = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"\x89HDF": "an HDF5 file",
               b"\x1f\x8b": "gzip data (e.g. a .nii.gz volume)", b"II*\x00": "a TIFF image",
               b"MM\x00*": "a TIFF image", b"BM": "a BMP image"}


def _not_a_torch_file(path: Path) -> str | None:
    """What `path` is when it is certainly no torch.save file (which is a zip archive, or a pickle
    in the format before PyTorch 1.6), else None."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK") or head.startswith(b"\x80"):
        return None
    if not head:
        return "the file is empty"
    kind = next((name for magic, name in _SIGNATURES.items() if head.startswith(magic)), None)
    return f"it is {kind}" if kind else f"it begins with the bytes {head[:4]!r}"


def read(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint's dict, loaded without running code; UserError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise UserError("checkpoint not found", path=path, fix="train the run first, or name an existing .pt file")
    not_torch = _not_a_torch_file(path)
    if not_torch:
        raise UserError(f"not a checkpoint file: {not_torch}, not a PyTorch file (a zip archive or a pickle)",
                        path=path, fix="give --checkpoint the .pt file `ugpcl train` wrote (<run dir>/checkpoints/"
                                       "best.pt), or --run-dir; images to segment go last, as inputs")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(
            "refused: this file holds Python objects other than tensors and plain data, which could run code "
            "when loaded. It is not a checkpoint of this ugpcl version (checkpoints of format 1, written "
            "before November 2026, are refused too)", path=path,
            fix=f"load only checkpoints you trust, written by `ugpcl train`; for an old run: {RETRAIN}") from exc
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise UserError(f"cannot read checkpoint ({exc})", path=path,
                        fix=f"the file is corrupt: {RETRAIN}, or restore the file") from exc
    if not isinstance(ckpt, dict) or not str(ckpt.get("format", "")).startswith("ugpcl-checkpoint"):
        raise UserError("not a ugpcl checkpoint", path=path, fix=f"expected a file written by `ugpcl train` ({FORMAT})")
    if ckpt["format"] != FORMAT:
        raise UserError(f"written by an older ugpcl ({ckpt['format']}; this version reads {FORMAT})", path=path,
                        fix=RETRAIN)
    return ckpt


@dataclass
class LoadedRun:
    net: nn.Module          # the main evaluation network, in eval mode
    method: Method          # every network of the run
    cfg: dict
    info: dict
    iteration: int
    path: Path


def restore_method(ckpt: dict, path: Path) -> Method:
    """The checkpoint's method with its weights (networks built without downloading ImageNet weights).

    A checkpoint whose configuration does not describe its weights (another width or number of
    classes, another method's networks) or lacks parts of a configuration is a UserError.
    """
    registry()  # a method module that does not import is its own error (naming it), not this file's
    try:
        cfg, info = ckpt["cfg"], ckpt["info"]
        method = build_method(deep_merge(cfg, {"model": {"pretrained": False}}), info["method"], info["num_classes"],
                              info["in_channels"])
    except UserError as exc:
        raise UserError(f"its configuration names no network this version can build ({exc.problem})", path=path,
                        fix=f"the file was altered or comes from another ugpcl version: {RETRAIN}") from exc
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"its configuration is incomplete or malformed ({type(exc).__name__}: {exc})", path=path,
                        fix=f"the file was altered or comes from another ugpcl version: {RETRAIN}") from exc
    try:
        method.load_state_dict(ckpt["state"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise UserError(f"its weights do not fit the network its own configuration describes "
                        f"(method {info.get('method')!r}: {str(exc)[:300]})",
                        path=path, fix=f"the file was altered or mixes two runs: {RETRAIN}") from exc
    return method


def load_checkpoint_file(path: str | Path, device="cpu") -> LoadedRun:
    path = Path(path)
    ckpt = read(path)
    method = restore_method(ckpt, path).to(device)
    return LoadedRun(method.eval_network().eval(), method, ckpt["cfg"], ckpt["info"], int(ckpt["iteration"]), path)


def load_run(run_dir: str | Path, which: str = "best", device="cpu") -> LoadedRun:
    """Load `run_dir/checkpoints/{which}.pt` (which: best | last)."""
    if which not in ("best", "last"):
        raise UserError(f"checkpoint {which!r} is neither best nor last")
    return load_checkpoint_file(Path(run_dir) / "checkpoints" / f"{which}.pt", device)
