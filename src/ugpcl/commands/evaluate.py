"""`ugpcl evaluate`: score a trained run on the validation cases (see `ugpcl.evaluation`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="score a trained run on the validation cases")
    p.add_argument("--run-dir", required=True, type=Path, help="run directory (run.json, checkpoints/)")
    p.add_argument("--which", "--checkpoint", dest="checkpoint", choices=("best", "last"), default="best",
                   help="checkpoint of --run-dir (default best), as in `ugpcl predict`; --checkpoint is the same option")
    p.add_argument("--data", type=Path, default=None, help="prepared HDF5 (default: the run's dataset file)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to run the networks (default: auto, CUDA when there is one)")
    p.add_argument("--batch-size", type=int, default=None, help="slices per forward pass (default train.val_batch)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: for a workflow run results/<profile>/evaluations/<run>/seed<seed>/"
                        "<checkpoint>-<protocol>/, for another run RUN_DIR/evaluations/<checkpoint>-<protocol>/)")
    p.add_argument("--protocol", choices=("volume", "slices"), default=None,
                   help="scoring protocol (default: the run's evaluation.protocol)")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    import contextlib

    from ..device import pick_device
    from ..engine.checkpoint import load_run
    from ..evaluation import evaluate_run, evaluation_dir, inside, workflow_runs
    from ..fileio import removed_if_failed, writable_dir
    from ..lock import hold_folder

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UserError("checkpoint not found: no such run directory", path=run_dir,
                        fix="give the folder `ugpcl train` wrote (run.json, checkpoints/)")
    device = pick_device(args.device)
    loaded = load_run(run_dir, args.checkpoint, device=device)
    protocol = args.protocol or loaded.cfg["evaluation"]["protocol"]
    out = Path(args.out or evaluation_dir(loaded.cfg, run_dir, args.checkpoint, protocol))
    if args.out and inside(out, workflow_runs(loaded.cfg)) is not None:
        raise UserError(f"--out {out} lies in a run directory of the workflows, whose files Snakemake and DVC own "
                        "(the next `dvc repro` would restore them)", path=out,
                        fix="leave --out out: the evaluation then goes to "
                            f"{evaluation_dir(loaded.cfg, run_dir, args.checkpoint, protocol)}")
    writing_in_run = inside(out, run_dir) is not None  # then one writer: not while the run trains
    # a folder made here is removed again if the data is refused (nothing written in it)
    with hold_folder(run_dir, "ugpcl evaluate") if writing_in_run else contextlib.nullcontext(), removed_if_failed(out):
        writable_dir(out)
        summary = evaluate_run(run_dir, checkpoint=args.checkpoint, data=args.data, device=device,
                               batch_size=args.batch_size, protocol=protocol, out=out, progress=True, loaded=loaded)
    dice = summary["dice"]
    unit = "batches of slices" if summary.get("protocol") == "slices" else "cases"  # what that protocol scores
    print(f"{out}: {summary['n_cases']} {unit}, mean Dice {'n/a' if dice is None else f'{100 * dice:.2f}%'}, "
          f"{summary['empty_predictions']} empty predictions")
    return 0
