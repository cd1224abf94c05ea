"""`ugpcl train` and `ugpcl bench`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UserError
from ..methods import names
from ..study import Run, find_run
from . import add_config_args, config_from_args


def register(sub) -> None:
    methods = names()
    p = sub.add_parser("train", help="train one run (and evaluate it when it finishes)")
    add_config_args(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="a run id of the experiment matrix (see `ugpcl runs`)")
    which.add_argument("--method", choices=methods, help="an ad-hoc run: method (with --dataset and --regime)")
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
    b.add_argument("--method", choices=methods, default="ugpcl")
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
    from ..engine.runfiles import RunFiles
    from ..engine.trainer import Trainer
    from ..evaluation import finish_run
    from ..fileio import read_json

    base = config_from_args(args)
    run = _run_from_args(args, base)
    seed = base["train"]["seed"] if args.seed is None else args.seed
    cfg = run.config(base, seed)
    run_dir = Path(args.out or run.run_dir(base, seed))
    record = run_dir / "run.json"
    if record.exists() and not args.force:
        status = read_json(record, fix=f"restore the file, or delete it and retrain with --force").get("status")
        if status == "finished":
            print(f"{run_dir} already holds a finished run; --force retrains it")
            return 0
    info = {"run_id": run.id, "method": run.method, "dataset": run.dataset, "regime": run.regime, "seed": seed,
            "profile": cfg["profile"], "overrides": run.overrides}
    files = RunFiles(run_dir)
    with files.writing("ugpcl train"):  # one writer, from here: training and the evaluation that ends it
        trainer = Trainer(cfg, info, run_dir, data=args.data, device=args.device)  # checks, writes nothing
        if args.fresh or args.force:
            files.discard()
            record.unlink(missing_ok=True)
        print(f"training {run.id} seed {seed} on {trainer.device} -> {run_dir}")
        if not trainer.fit(stop_after=args.stop_after, progress=not args.no_progress):
            print(f"stopped after {args.stop_after} iterations; run the same command again to resume")
            return 0
        result = finish_run(run_dir, cfg, trainer.info, trainer.facts(), trainer.data, trainer.device)
    attempts = len(result["attempts"])
    print(f"finished {run.id}: Dice {result['dice']:.4f} ({result['wall_time_s']:.0f} s"
          f"{f' over {attempts} attempts' if attempts > 1 else ''})")
    return 0


def bench_command(args) -> int:
    from ..device import pick_device
    from ..engine.bench import benchmark
    from ..fileio import write_json

    result = benchmark(config_from_args(args), args.method, pick_device(args.device), args.steps, args.warmup)
    print(json.dumps(result, indent=2))
    if args.json:
        write_json(args.json, result)
    return 0
