"""`ugpcl fetch`, `ugpcl prepare`, `ugpcl inspect` and `ugpcl demo-data`: the data stage.

DATASET is any entry of `data:` in params.yaml (acdc, isic, or one of your own, see the README's
'Your own data'); the names come from the configuration, so they are checked once it is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..data.demo import make_demo
from ..data.stage import fetch, inspect, prepare, summary_line
from ..data.survey import describe
from . import add_config_args, config_from_args

DATASET_HELP = "a dataset configured under data: in params.yaml (e.g. acdc, isic)"


def _fetch(args) -> None:
    for path in fetch(config_from_args(args, study=False), args.dataset):
        print(path)


def _prepare(args) -> None:
    print(summary_line(prepare(config_from_args(args, study=False), args.dataset, args.out)))


def _inspect(args) -> int:
    report = inspect(config_from_args(args, study=False), args.dataset)
    print(json.dumps(report, indent=2) if args.json else describe(report).rstrip("\n"))
    return 1 if report["errors"] else 0


def _demo_data(args) -> None:
    demo_cfg = dict(config_from_args(args, study=False)["data"]["demo"])
    if args.seed is not None:
        demo_cfg["seed"] = args.seed
    for path in make_demo(args.out, demo_cfg).values():
        print(path)


def register(subparsers) -> None:
    p = subparsers.add_parser("fetch", help="download (or synthesise, or check) the raw data of a dataset")
    p.add_argument("dataset", metavar="DATASET", help=DATASET_HELP)
    add_config_args(p)
    p.set_defaults(func=_fetch)

    p = subparsers.add_parser("prepare", help="convert a dataset into the prepared HDF5 file")
    p.add_argument("dataset", metavar="DATASET", help=DATASET_HELP)
    p.add_argument("--out", default=None, help="output file (default: results/<profile>/data/<dataset>.h5)")
    add_config_args(p)
    p.set_defaults(func=_prepare)

    p = subparsers.add_parser("inspect", help="survey a folder dataset without writing anything: counts, sizes, "
                                              "value ranges, class pixel fractions, problems (exit 1 if any would "
                                              "stop `ugpcl prepare`)")
    p.add_argument("dataset", metavar="DATASET", help=DATASET_HELP)
    p.add_argument("--json", action="store_true", help="print the survey as JSON")
    add_config_args(p)
    p.set_defaults(func=_inspect)

    p = subparsers.add_parser("demo-data", help="synthesise the demo raw data (ACDC-like and ISIC-like archives)")
    p.add_argument("--out", required=True, type=Path, help="folder to write acdc/ and isic/ into")
    p.add_argument("--seed", type=int, default=None, help="overrides data.demo.seed")
    add_config_args(p)
    p.set_defaults(func=_demo_data)
