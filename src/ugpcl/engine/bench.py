"""`ugpcl bench`: the median time of the shared training step for one method, on random data."""

from __future__ import annotations

import dataclasses
import resource
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from ..device import processor_name
from ..losses import class_map
from ..methods import build_method
from ..methods.base import Batch
from . import determinism, speed
from .augment import augment_batch
from .step import make_optimizer, train_step


def benchmark(cfg: dict, method_name: str, device: torch.device, steps: int = 10, warmup: int = 2,
              num_classes: int = 4, in_channels: int = 1, sync_debug: str | None = None,
              barrier: Callable[[str], None] | None = None) -> dict:
    """Time `steps` iterations after `warmup`, from the method's steady state (every loss term on).

    `sync_debug` ("warn" or "error", CUDA only): torch.cuda.set_sync_debug_mode around each step,
    so every host-device synchronisation inside it is reported (or raises).
    `barrier` (`ugpcl bench --processes K`): called with a name before the timed steps and before
    the evaluation pass, it returns once every process sharing the device has reached that point,
    so the K processes are timed while all K run (their start-ups differ by seconds)."""
    cfg = {**cfg, "model": {**cfg["model"], "pretrained": False}}
    tr, size = cfg["train"], cfg["data"]["image_size"]
    torch.manual_seed(0)
    switches = speed.resolve(tr["speed"], device)
    method = speed.apply(build_method(cfg, method_name, num_classes, in_channels).to(device), switches)
    optimizer = make_optimizer(method, tr, fused=switches.fused_optimizer)
    batch_size = tr["batch_size"] if method.uses_unlabeled else tr["labeled_bs"]
    images = torch.rand(batch_size, in_channels, size, size, device=device)
    labels = torch.randint(0, num_classes, (tr["labeled_bs"], size, size), device=device)
    amp = device.type == "cuda" and tr["amp"] == "bf16"
    augment = method.augmentation(tr["augment"])
    method.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    t0 = method.steady_state_iteration()
    with determinism.mode(tr["deterministic"]):
        for step in range(warmup + steps):
            if step == warmup:
                if barrier is not None:
                    barrier(f"{method_name}-steps")
                window_start = time.time()
            start = time.perf_counter()
            x, y = augment_batch(images, labels, augment)
            if sync_debug and device.type == "cuda":
                torch.cuda.set_sync_debug_mode(sync_debug)
            try:
                train_step(method, optimizer, Batch(speed.batch_layout(x, switches), y, tr["labeled_bs"]), t0 + step,
                           amp=amp)
            finally:
                if sync_debug and device.type == "cuda":
                    torch.cuda.set_sync_debug_mode(0)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if step >= warmup:
                times.append(time.perf_counter() - start)
    window = [round(window_start, 3), round(time.time(), 3)]
    median = statistics.median(times)
    if barrier is not None:
        barrier(f"{method_name}-eval")
    eval_s = _eval_seconds_per_image(method.eval_network(), tr["val_batch"], in_channels, size, device, amp)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        name = torch.cuda.get_device_name(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        name = f"{processor_name()} ({torch.get_num_threads()} threads)"  # as tools/authors_bench.py names it
    return {
        "method": method_name, "profile": cfg["profile"], "device": name, "image_size": size,
        "batch_size": batch_size, "labeled_bs": tr["labeled_bs"], "width": cfg["model"]["width"],
        "amp": "bf16" if amp else "none", "speed": dataclasses.asdict(switches),
        "deterministic": tr["deterministic"], "steps": steps, "median_step_s": round(median, 4),
        "images_per_s": round(batch_size / median, 2), "peak_memory_mib": round(peak, 1),
        "eval_s_per_image": round(eval_s, 6),
        "date": datetime.now(timezone.utc).date().isoformat(), "torch": torch.__version__,
        "step_s_p10_p90": [round(float(np.percentile(times, 10)), 4), round(float(np.percentile(times, 90)), 4)],
        "timed_window": window,  # wall-clock seconds (epoch) of the timed steps: K processes' windows overlap
    }


def summary_line(result: dict) -> str:
    """One line for a person reading a `benchmark` record (or a `--processes K` entry) in a terminal."""
    if "processes" in result:  # ugpcl bench --processes K
        each = ", ".join(f"{s:.4g}" for s in result["median_step_s_each"])
        return (f"{result['method']}, {result['processes']} processes at once: "
                f"{result['images_per_s_total']:.1f} images/s in total; median step {each} s")
    low, high = result["step_s_p10_p90"]
    return (f"{result['method']}: median step {result['median_step_s']:.4g} s (10-90%: {low:.4g}-{high:.4g} s), "
            f"{result['images_per_s']:.1f} images/s, peak memory {result['peak_memory_mib']:.0f} MiB, "
            f"evaluation {1000 * result['eval_s_per_image']:.3g} ms/image; batch {result['batch_size']} "
            f"x {result['image_size']} px on {result['device']}, torch {result['torch']}")


def file_barrier(folder: Path, parties: int, me: int, timeout: float = 300) -> Callable[[str], None]:
    """A barrier of `parties` processes (numbered from 0; this one `me`) through empty files in `folder`:
    `wait(name)` marks this process as at `name` and returns once all `parties` are."""
    folder = Path(folder)

    def wait(name: str) -> None:
        (folder / f"{name}.{me}").touch()
        deadline = time.monotonic() + timeout
        while not all((folder / f"{name}.{i}").exists() for i in range(parties)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{folder}: the other benchmark processes did not reach {name!r} in {timeout:.0f} s")
            time.sleep(0.005)

    return wait


@torch.no_grad()
def _eval_seconds_per_image(net, batch: int, in_channels: int, size: int, device: torch.device, amp: bool,
                            repeats: int = 3) -> float:
    """Median time of one evaluation forward pass (eval mode, argmax) per image."""
    x = torch.rand(batch, in_channels, size, size, device=device)
    net.eval()
    times = []
    try:
        for i in range(repeats + 1):
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                class_map(net(x))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:  # the first pass warms up
                times.append(time.perf_counter() - start)
    finally:
        net.train()
    return statistics.median(times) / batch
