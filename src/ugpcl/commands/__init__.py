"""The `ugpcl` subcommands, one module per stage; the top layer of the package (see `cli.py`).

Here: the options every command that reads params.yaml shares.
"""

from __future__ import annotations

import argparse


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """--config / --profile / --set, shared by every subcommand that reads params.yaml."""
    parser.add_argument("--config", default=None, help="params.yaml to read (default: the repository's)")
    parser.add_argument("--profile", default=None, help="profile to apply (default: `profile:` in the config)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one config value, e.g. --set train.iterations=100 (repeatable)",
    )


def config_from_args(args: argparse.Namespace, *, study: bool = True) -> dict:
    """The configuration the command runs with. `study`: also check every method's hyper-parameters
    and the experiment matrix (commands that train, list or report runs)."""
    if study:
        from ..study import load_study

        return load_study(args.config, args.profile, args.overrides)
    from ..config import load_config

    return load_config(args.config, args.profile, args.overrides)
