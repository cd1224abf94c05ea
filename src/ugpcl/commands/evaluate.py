"""`ugpcl evaluate`: score a trained run on the validation cases (see `ugpcl.evaluation`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="score a trained run on the validation cases")
    p.add_argument("--run-dir", required=True, type=Path, help="run directory (run.json, checkpoints/)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best", help="which checkpoint (default best)")
    p.add_argument("--data", type=Path, default=None, help="prepared HDF5 (default: the run's dataset file)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--batch-size", type=int, default=None, help="slices per forward pass (default train.val_batch)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default RUN_DIR/eval for best, RUN_DIR/eval-last for last)")
    p.add_argument("--protocol", choices=("volume", "slices"), default=None,
                   help="scoring protocol (default: the run's evaluation.protocol)")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    import contextlib

    from ..config import eval_dir
    from ..device import pick_device
    from ..evaluation import evaluate_run
    from ..fileio import writable_dir
    from ..lock import hold_folder

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UserError("checkpoint not found: no such run directory", path=run_dir,
                        fix="give the folder `ugpcl train` wrote (run.json, checkpoints/)")
    out = Path(args.out or eval_dir(run_dir, args.checkpoint))
    inside = out.resolve().is_relative_to(run_dir.resolve())  # then one writer: not during training
    with hold_folder(run_dir, "ugpcl evaluate") if inside else contextlib.nullcontext():
        writable_dir(out)
        summary = evaluate_run(run_dir, checkpoint=args.checkpoint, data=args.data, device=pick_device(args.device),
                               batch_size=args.batch_size, protocol=args.protocol, out=out, progress=True)
    dice = summary["dice"]
    print(f"{out}: {summary['n_cases']} cases, mean Dice {'n/a' if dice is None else f'{100 * dice:.2f}%'}, "
          f"{summary['empty_predictions']} empty predictions")
    return 0
