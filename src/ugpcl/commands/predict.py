"""`ugpcl predict`: segment new images with a trained run (see `ugpcl.predict`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="segment images, NIfTI or HDF5 files (or folders of them) with a trained run")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-dir", type=Path, help="run directory (uses checkpoints/<--which>.pt)")
    source.add_argument("--checkpoint", type=Path, help="a checkpoint file (.pt) written by `ugpcl train`")
    p.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint of --run-dir (default best)")
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                   help="PNG/JPEG/TIFF/BMP, .nii/.nii.gz or .h5 files, or folders of them")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: results/<profile>/predictions/<run>/seed<seed>/<checkpoint>/)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to run the network (default: auto, CUDA when there is one)")
    p.add_argument("--batch-size", type=int, default=16, help="slices per forward pass")
    p.set_defaults(func=run_predict)


def default_out(cfg: dict, info: dict, checkpoint: str) -> Path:
    """results/<profile>/predictions/<run id>/seed<seed>/<checkpoint>/ of the run the checkpoint belongs to."""
    from ..config import results_dir

    run = info.get("run_id") or "run"
    seed = info.get("seed", cfg["train"]["seed"])
    return results_dir(cfg) / "predictions" / run / f"seed{seed}" / checkpoint


def run_predict(args: argparse.Namespace) -> int:
    import contextlib
    import sys

    from ..data.resize import resizing
    from ..device import pick_device
    from ..engine.checkpoint import load_checkpoint_file, load_run
    from ..errors import UserError
    from ..fileio import removed_if_failed, writable_dir
    from ..predict import PredictionFailed, expand_inputs, input_kind, predict_files

    if args.checkpoint is not None and str(args.checkpoint) in ("best", "last") and not args.checkpoint.exists():
        raise UserError(f"--checkpoint takes a checkpoint file, and there is no file {str(args.checkpoint)!r}",
                        fix=f"for a run's {args.checkpoint} checkpoint write --run-dir RUN_DIR --which {args.checkpoint}")
    inputs = expand_inputs(args.inputs)
    for path in inputs:  # fail on bad inputs and an unwritable --out before loading the model
        input_kind(path)
    # an output folder made here is removed again if the command fails before writing into it (a
    # checkpoint that cannot be read, every input failing); folders that existed are left alone
    with contextlib.ExitStack() as cleanup:
        if args.out:
            cleanup.enter_context(removed_if_failed(args.out))
            writable_dir(args.out)
        device = pick_device(args.device)
        loaded = load_run(args.run_dir, args.which, device) if args.run_dir else load_checkpoint_file(args.checkpoint, device)
        out = args.out or default_out(loaded.cfg, loaded.info, args.which if args.run_dir else args.checkpoint.stem)
        cleanup.enter_context(removed_if_failed(out))
        writable_dir(out)
        rule = resizing(loaded.cfg, loaded.info.get("dataset"))
        try:
            outputs = predict_files(loaded.net, inputs, out, loaded.cfg["data"]["image_size"], args.batch_size,
                                    device, rule)
        except PredictionFailed as exc:
            for path in exc.written:
                print(path)
            raise
    for path in outputs:
        print(path)
    print(f"{len(inputs)} input(s) predicted into {out}", file=sys.stderr)  # stdout: the files, one a line
    return 0
