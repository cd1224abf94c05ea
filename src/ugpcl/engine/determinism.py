"""`train.deterministic`: the same numbers from every run of one configuration on one GPU.

On the CPU every kernel this project uses is deterministic already: a run resumed from a
checkpoint ends bit for bit where an uninterrupted one does (tests/test_engine.py). On a GPU
some kernels accumulate with atomics in whatever order the threads arrive, cuDNN may pick a
different convolution algorithm per process, and cuBLAS splits its work by a workspace size;
two runs with the same seed then drift apart from the first iterations on. With
`train.deterministic: true`, `mode` below asks torch for deterministic kernels everywhere
(`torch.use_deterministic_algorithms`), cuDNN for deterministic convolutions, and cuBLAS for a
fixed workspace (`CUBLAS_WORKSPACE_CONFIG=:4096:8`, as torch's reproducibility notes require; it
must be in the environment before the process's first CUDA matrix product, which `ugpcl train`
and `ugpcl bench` ensure by setting it in `mode`, before any). It costs speed (`ugpcl bench
--set train.deterministic=true` measures how much) and is off by default.

A kernel with no deterministic version makes torch raise in that mode, so the training step
must avoid every op torch documents as such on CUDA (the list below, from the docstring of
`torch.use_deterministic_algorithms` in torch 2.13). That is checked on the CPU: `audit` runs a
function under a dispatch mode that records every ATen op it calls, and reports those that
would raise on CUDA. tests/test_speed.py audits two full training steps of every
registered method (forward, backward, optimiser, EMA, queues), so a method added later is
audited too. One op this project needs was rewritten for it: the pixel cross-entropy takes the
mean of the per-pixel losses itself (`losses.cross_entropy`; nll_loss2d's own mean is an atomic
sum on CUDA). On a GPU, `tools/gpu_session.py bench` times the mode and trains with it on twice
straight through and once stopped and resumed, comparing the weights bit for bit.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

CUBLAS_WORKSPACE = ":4096:8"


@contextlib.contextmanager
def mode(enabled: bool) -> Iterator[None]:
    """Deterministic kernels inside the block when `enabled`; the previous settings after it."""
    if not enabled:
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


def _reduces(args, kwargs, position: int) -> bool:
    """An nll_loss op's reduction argument is not `none` (0)."""
    reduction = kwargs.get("reduction", args[position] if len(args) > position else 1)
    return reduction != 0


def _floating(args, kwargs) -> bool:
    dtype = kwargs.get("dtype") or (args[2] if len(args) > 2 and isinstance(args[2], torch.dtype) else None)
    return (dtype or args[0].dtype).is_floating_point or (dtype or args[0].dtype).is_complex


def _weighted(args, kwargs) -> bool:
    return kwargs.get("weights", args[1] if len(args) > 1 else None) is not None


def _always(args, kwargs) -> bool:  # the backward ops are listed by name: called only when differentiating
    return True


# ATen ops (packet names) that raise on CUDA in deterministic mode, with the condition under which
# they do; from the list in torch.use_deterministic_algorithms' docstring (torch 2.13).
CUDA_NONDETERMINISTIC: dict[str, Callable] = {
    "nll_loss2d_forward": lambda a, k: _reduces(a, k, 3),   # NLLLoss on 4D input, mean or sum
    "avg_pool3d_backward": _always,
    "_adaptive_avg_pool2d_backward": _always,
    "_adaptive_avg_pool3d_backward": _always,
    "adaptive_max_pool2d_backward": _always,
    "fractional_max_pool2d_backward": _always,
    "fractional_max_pool3d_backward": _always,
    "max_unpool2d": _always,
    "max_unpool3d": _always,
    "upsample_linear1d_backward": _always,
    "upsample_bilinear2d_backward": _always,
    "_upsample_bilinear2d_aa_backward": _always,
    "upsample_bicubic2d_backward": _always,
    "_upsample_bicubic2d_aa_backward": _always,
    "upsample_trilinear3d_backward": _always,
    "reflection_pad1d_backward": _always,
    "reflection_pad2d_backward": _always,
    "reflection_pad3d_backward": _always,
    "_ctc_loss_backward": _always,
    "embedding_bag": lambda a, k: k.get("mode", a[4] if len(a) > 4 else 0) == 2,  # mode='max'
    "_embedding_bag": lambda a, k: k.get("mode", a[4] if len(a) > 4 else 0) == 2,
    "put_": _always,         # accumulate=False everywhere; accumulate=True on CUDA
    "put": _always,
    "histc": _always,
    "bincount": _weighted,
    "median": lambda a, k: len(a) > 1 or "dim" in k,    # the variant with indices
    "nanmedian": lambda a, k: len(a) > 1 or "dim" in k,
    "grid_sampler_2d_backward": _always,
    "grid_sampler_3d_backward": _always,
    "cumsum": _floating,
    "cumsum_": _floating,
    "scatter_reduce": lambda a, k: k.get("reduce", a[3] if len(a) > 3 else None) == "prod",
    "scatter_reduce_": lambda a, k: k.get("reduce", a[3] if len(a) > 3 else None) == "prod",
}


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.found: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        check = CUDA_NONDETERMINISTIC.get(name)
        if check is not None and check(args, kwargs):
            key = str(func)
            self.found[key] = self.found.get(key, 0) + 1
        return func(*args, **kwargs)


def audit(fn: Callable[[], object]) -> dict[str, int]:
    """Run `fn` (on any device, the CPU in the tests) and return the ATen ops it called that have no
    deterministic CUDA kernel, with how often: {} means the same calls on CUDA pass `mode(True)`."""
    recorder = _Recorder()
    with recorder:
        fn()
    return recorder.found
