"""`ugpcl fetch`, `ugpcl prepare` and `ugpcl demo-data`: the data stage."""

from __future__ import annotations

from pathlib import Path

from ..data.demo import make_demo
from ..data.stage import DATASETS, fetch, prepare, summary_line
from . import add_config_args, config_from_args


def _fetch(args) -> None:
    for path in fetch(config_from_args(args, study=False), args.dataset):
        print(path)


def _prepare(args) -> None:
    print(summary_line(prepare(config_from_args(args, study=False), args.dataset, args.out)))


def _demo_data(args) -> None:
    demo_cfg = dict(config_from_args(args, study=False)["data"]["demo"])
    if args.seed is not None:
        demo_cfg["seed"] = args.seed
    for path in make_demo(args.out, demo_cfg).values():
        print(path)


def register(subparsers) -> None:
    p = subparsers.add_parser("fetch", help="download (or synthesise, or check) the raw data of a dataset")
    p.add_argument("dataset", choices=sorted(DATASETS))
    add_config_args(p)
    p.set_defaults(func=_fetch)

    p = subparsers.add_parser("prepare", help="convert a dataset into the prepared HDF5 file")
    p.add_argument("dataset", choices=sorted(DATASETS))
    p.add_argument("--out", default=None, help="output file (default: results/<profile>/data/<dataset>.h5)")
    add_config_args(p)
    p.set_defaults(func=_prepare)

    p = subparsers.add_parser("demo-data", help="synthesise the demo raw data (ACDC-like and ISIC-like archives)")
    p.add_argument("--out", required=True, type=Path, help="folder to write acdc/ and isic/ into")
    p.add_argument("--seed", type=int, default=None, help="overrides data.demo.seed")
    add_config_args(p)
    p.set_defaults(func=_demo_data)

