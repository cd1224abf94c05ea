"""Choosing the torch device from a config or command-line value."""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

import torch

from .errors import UserError
from .fileio import make_dirs
from .processor import processor_name


def pick_device(choice: str = "auto") -> torch.device:
    """auto -> CUDA when visible, else the CPU; an explicit cuda without a GPU is an error."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("CUDA was asked for but no CUDA device is visible",
                        fix="use --device cpu (or auto), or run on a GPU machine")
    return torch.device(choice)


def device_name(device: torch.device) -> str:
    """The hardware's name for run.json: the GPU's, or the processor's model. CPU results depend on
    the model too: one seed on an Intel and on an AMD CPU, same code and data, gave runs that part
    within 200 iterations (reports/cpu_acdc.md, last section)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else processor_name()


# --- several GPUs: each training job on the least busy one ------------------------------------------
# Snakemake's `--resources gpu=N` caps how many jobs run at once but does not say which GPU each
# one uses: without this, every job of a multi-GPU workstation would train on the first GPU.
_claims: list[int] = []  # open claim files: each counts this process on its GPU until it exits


def claims_folder() -> Path:
    """Where training processes of this user count themselves per GPU ($UGPCL_GPU_CLAIMS, else
    ugpcl-gpus-<uid> in the temporary folder: one machine's processes, whatever their checkout)."""
    return Path(os.environ.get("UGPCL_GPU_CLAIMS") or Path(tempfile.gettempdir()) / f"ugpcl-gpus-{os.getuid()}")


def _held(path: Path) -> bool:
    """Whether a live process holds the claim at `path` (the kernel drops a dead one's flock)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # our own description: closing it never releases the holder's lock
    return False


def claim_least_busy_gpu(count: int, folder: Path | None = None) -> int:
    """The index of the GPU (of `count` visible) that the fewest live training processes claim,
    the lowest index on ties; this process claims it until it exits.

    A claim is a file `gpu<i>-<pid>-<n>.claim` under `claims_folder()` locked with fcntl.flock,
    which the kernel releases when the process ends, even by SIGKILL: a file nobody holds is a
    dead process's and is removed. Choosing and claiming happen under one lock, so jobs starting
    together spread over the GPUs."""
    folder = make_dirs(folder or claims_folder())
    chooser = os.open(folder / "choose.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(chooser, fcntl.LOCK_EX)
        busy = [0] * count
        for path in folder.glob("gpu*-*.claim"):
            index = path.name[3:].split("-", 1)[0]
            if not _held(path):
                path.unlink(missing_ok=True)
            elif index.isdigit() and int(index) < count:
                busy[int(index)] += 1
        gpu = min(range(count), key=lambda i: (busy[i], i))
        fd = os.open(folder / f"gpu{gpu}-{os.getpid()}-{len(_claims)}.claim", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _claims.append(fd)
        return gpu
    finally:
        os.close(chooser)  # releases the choosing lock
