"""`ugpcl train` and `ugpcl bench`."""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from ..cli import add_config_args, config_from_args
from ..errors import UserError
from ..methods import NAMES
from ..study import Run, find_run


def register(sub) -> None:
    p = sub.add_parser("train", help="train one run (and evaluate it when it finishes)")
    add_config_args(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="a run id of the experiment matrix (see `ugpcl runs`)")
    which.add_argument("--method", choices=NAMES, help="an ad-hoc run: method (with --dataset and --regime)")
    p.add_argument("--dataset", choices=["acdc", "isic"], help="ad-hoc run: dataset")
    p.add_argument("--regime", help="ad-hoc run: labeled regime, e.g. 136")
    p.add_argument("--seed", type=int, default=None, help="default: train.seed")
    p.add_argument("--out", type=Path, default=None, help="run directory (default: results/<profile>/runs/<id>/seed<seed>)")
    p.add_argument("--data", type=Path, default=None, help="prepared HDF5 file (default: the profile's)")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default=None)
    p.add_argument("--fresh", action="store_true", help="discard an unfinished run in --out instead of resuming it")
    p.add_argument("--force", action="store_true", help="retrain even if --out holds a finished run")
    p.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.set_defaults(func=train_command)

    b = sub.add_parser("bench", help="median train-step time, images/s and peak memory of a method")
    add_config_args(b)
    b.add_argument("--method", choices=NAMES, default="ugpcl")
    b.add_argument("--steps", type=int, default=10)
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    b.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    b.set_defaults(func=bench_command)


def _run_from_args(args, cfg) -> Run:
    if args.run:
        return find_run(cfg, args.run)
    if not (args.dataset and args.regime):
        raise UserError("--method needs --dataset and --regime", fix="e.g. --method ugpcl --dataset acdc --regime 136")
    return Run(args.dataset, args.regime, args.method)


def train_command(args) -> int:
    from .trainer import Trainer

    base = config_from_args(args)
    run = _run_from_args(args, base)
    seed = base["train"]["seed"] if args.seed is None else args.seed
    cfg = run.config(base, seed)
    run_dir = args.out or run.run_dir(base, seed)
    if (run_dir / "run.json").exists() and not args.force:
        status = json.loads((run_dir / "run.json").read_text()).get("status")
        if status == "finished":
            print(f"{run_dir} already holds a finished run; --force retrains it")
            return 0
    if args.fresh or args.force:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    info = {"run_id": run.id, "method": run.method, "dataset": run.dataset, "regime": run.regime, "seed": seed,
            "profile": cfg["profile"], "overrides": run.overrides}
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    trainer = Trainer(cfg, info, run_dir, data=args.data, device=args.device)
    print(f"training {run.id} seed {seed} on {trainer.device} -> {run_dir}")
    if not trainer.fit(stop_after=args.stop_after, progress=not args.no_progress):
        print(f"stopped after {args.stop_after} iterations; run the same command again to resume")
        return 0
    result = trainer.finish(started)
    print(f"finished {run.id}: Dice {result['dice']:.4f} ({result['wall_time_s']:.0f} s)")
    return 0


def bench_command(args) -> int:
    from ..methods import get_method
    from ..methods.base import Batch
    from .augment import augment_batch
    from ..device import pick_device

    cfg = config_from_args(args)
    cfg["model"]["pretrained"] = False
    tr = cfg["train"]
    device = pick_device(args.device)
    size, in_ch, classes = cfg["data"]["image_size"], 1, 4
    torch.manual_seed(0)
    method = get_method(args.method)(cfg, classes, in_ch).to(device)
    optimizer = torch.optim.SGD(method.nets.parameters(), lr=tr["lr"], momentum=tr["momentum"])
    batch_size = tr["batch_size"] if method.uses_unlabeled else tr["labeled_bs"]
    images = torch.rand(batch_size, in_ch, size, size, device=device)
    labels = torch.randint(0, classes, (tr["labeled_bs"], size, size), device=device)
    amp = device.type == "cuda" and tr["amp"] == "bf16"
    method.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    # benchmark past the contrast warm-up so UGPCL's full step (contrast + queue) is what is timed
    t0 = method.hp.get("contrast_start", 0) + 1
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        x, y = augment_batch(images, labels, tr["augment"])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, _ = method.train_step(Batch(x, y, tr["labeled_bs"]), t0 + step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        method.after_step(t0 + step)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        name = torch.cuda.get_device_name(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        name = f"cpu ({torch.get_num_threads()} threads)"
    result = {
        "method": args.method, "profile": cfg["profile"], "device": name, "image_size": size,
        "batch_size": batch_size, "labeled_bs": tr["labeled_bs"], "width": cfg["model"]["width"],
        "amp": "bf16" if amp else "none", "steps": args.steps, "median_step_s": round(median, 4),
        "images_per_s": round(batch_size / median, 2), "peak_memory_mib": round(peak, 1),
        "date": datetime.now(timezone.utc).date().isoformat(), "torch": torch.__version__,
        "step_s_p10_p90": [round(float(np.percentile(times, 10)), 4), round(float(np.percentile(times, 90)), 4)],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        from ..fileio import write_json

        write_json(args.json, result)
    return 0
