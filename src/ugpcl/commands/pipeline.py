"""`ugpcl dvc-matrix`: the DVC stages of the experiment matrix (see `ugpcl.dvcmatrix`)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("dvc-matrix", help="write workflow/dvc-matrix.yaml, the runs dvc.yaml makes its stages of")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if the file is out of date")
    p.add_argument("--in-dvc", action="store_true",
                   help=argparse.SUPPRESS)  # dvc.yaml's matrix stage: a change of the stages is an error (rerun)
    p.set_defaults(func=matrix_command)


def matrix_command(args) -> int:
    import sys

    from ..config import REPO_ROOT
    from ..dvcmatrix import KEY, MATRIX_FILE, current, read, write
    from ..errors import UserError

    matrix = current()
    name = MATRIX_FILE.relative_to(REPO_ROOT)
    if args.check:
        if read() != matrix:
            print(f"{name} is out of date with params.yaml: run `ugpcl dvc-matrix`", file=sys.stderr)
            return 1
        print(f"{name} is up to date")
        return 0
    changed = write(matrix)
    entries = matrix[KEY]
    print(f"{name}: profile {entries['profile']}, {len(entries['datasets'])} datasets, {len(entries['runs'])} runs")
    if changed and args.in_dvc:
        raise UserError(f"the stages of the experiment matrix changed (runs, seeds, datasets or the profile): {name} "
                        "is rewritten, but DVC read the old stages before this stage ran",
                        fix="run `dvc repro` again: it reads the new stages")
    return 0
