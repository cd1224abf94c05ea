"""The `ugpcl` subcommands, one module per stage; the top layer of the package (see `cli.py`).

Here: the options every command that reads params.yaml shares.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """--config / --profile / --set, shared by every subcommand that reads params.yaml."""
    parser.add_argument("--config", default=None, help="params.yaml to read (default: the repository's)")
    parser.add_argument("--profile", default=None, help="profile to apply (default: `profile:` in the config)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one config value, e.g. --set train.iterations=100 (repeatable)",
    )


def config_options(args: argparse.Namespace, cfg: dict) -> str:
    """' --config FILE --profile NAME --set K=V ...': the options that gave `cfg`, to repeat in a suggested
    command (shell-quoted; the profile always, as the configuration's default may differ)."""
    import shlex

    words = ([f"--config {shlex.quote(str(args.config))}"] if args.config else []) + [
        f"--profile {shlex.quote(cfg['profile'])}"] + [f"--set {shlex.quote(o)}" for o in args.overrides]
    return " " + " ".join(words)


def config_from_args(args: argparse.Namespace, *, study: bool = True) -> dict:
    """The configuration the command runs with. `study`: also check every method's hyper-parameters
    and the experiment matrix (commands that train, list or report runs)."""
    if study:
        from ..study import load_study

        return load_study(args.config, args.profile, args.overrides)
    from ..config import load_config

    return load_config(args.config, args.profile, args.overrides)


class MethodNames(Sequence):
    """The registered method names (and `extra` choices) as an argparse `choices`, read only when a
    value is checked or a help printed: registering every method imports torch (1-1.5 s), which
    `ugpcl --help` and the commands that only read files do not need. Give the argument a `metavar`
    (argparse lists the choices of one without, at `add_argument`) and `%(choices)s` in its help."""

    def __init__(self, *extra: str):
        self.extra = extra
        self._read: list[str] | None = None

    def _names(self) -> list[str]:
        if self._read is None:
            from ..methods import names

            self._read = [*names(), *self.extra]
        return self._read

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def check(self, value: str) -> str:
        """argparse `type=`: `value` when it is one of the names, else the message argparse prints, with
        the fix (a module of that name that registers nothing, or another name, is the usual slip)."""
        if value in self._names():
            return value
        from ..methods import unknown_method_fix

        otherwise = (f"pick one of them, or add src/ugpcl/methods/{value}.py and its section under methods: in "
                     "params.yaml (README, 'Adding your own method')")

        raise argparse.ArgumentTypeError(f"{value!r} is not a registered method (registered: "
                                         f"{', '.join(self._names())}). Fix: {unknown_method_fix(value, otherwise)}")
