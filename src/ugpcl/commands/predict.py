"""`ugpcl predict`: segment new images with a trained run (see `ugpcl.predict`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="segment PNG/JPEG, NIfTI or HDF5 images with a trained run")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-dir", type=Path, help="run directory (uses checkpoints/<--which>.pt)")
    source.add_argument("--checkpoint", type=Path, help="a checkpoint file (.pt) written by `ugpcl train`")
    p.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint of --run-dir (default best)")
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="PNG/JPEG, .nii/.nii.gz or .h5 files")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--batch-size", type=int, default=16, help="slices per forward pass")
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from ..device import pick_device
    from ..engine.checkpoint import load_checkpoint_file, load_run
    from ..fileio import writable_dir
    from ..predict import PredictionFailed, input_kind, predict_files

    for path in args.inputs:  # fail on bad inputs and an unwritable --out before loading the model
        input_kind(path)
    writable_dir(args.out)
    device = pick_device(args.device)
    loaded = load_run(args.run_dir, args.which, device) if args.run_dir else load_checkpoint_file(args.checkpoint, device)
    amp = loaded.cfg["train"]["amp"] == "bf16"
    try:
        outputs = predict_files(loaded.net, args.inputs, args.out, loaded.cfg["data"]["image_size"], args.batch_size,
                                device, amp)
    except PredictionFailed as exc:
        for path in exc.written:
            print(path)
        raise
    for path in outputs:
        print(path)
    return 0
