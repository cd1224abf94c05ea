"""`ugpcl`: the one command the workflow rules and users call.

Each subcommand lives in `ugpcl.commands`; a module listed in COMMAND_MODULES exposes
`register(subparsers)` that adds its parsers and sets `func` on them. Only the module of the
command being run is imported (a workflow starts this command dozens of times).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from . import __version__, forkserver, lifetime
from .errors import Interrupted, UserError
from .fileio import FULL, write_error

WRITE_ONLY = FULL | {errno.EROFS}  # errors that only a write can cause (EACCES could be a read)

COMMAND_MODULES = {
    "ugpcl.commands.data": ("fetch", "prepare", "inspect", "demo-data"),
    "ugpcl.commands.train": ("train", "bench"),
    "ugpcl.commands.evaluate": ("evaluate",),
    "ugpcl.commands.predict": ("predict",),
    "ugpcl.commands.report": ("runs", "report", "figures", "choices"),
    "ugpcl.commands.pipeline": ("dvc-matrix",),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand, or only the module that defines `command`."""
    parser = argparse.ArgumentParser(prog="ugpcl", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ugpcl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = [m for m, names in COMMAND_MODULES.items() if command in names] or list(COMMAND_MODULES)
    for name in modules:
        importlib.import_module(name).register(sub)
    for action in sub._choices_actions:  # each command's --help opens with the line `ugpcl --help` gives it
        command_parser = sub.choices[action.dest]
        if command_parser.description is None and action.help:
            command_parser.description = action.help[0].upper() + action.help[1:] + "."
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [forkserver.SERVE]:
        return forkserver.serve(argv[1], main)
    if forkserver.wanted():  # a workflow job whose workflow runs a fork server (its profile says so)
        code = forkserver.run_in_server(argv)
        if code is not None:
            return code
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        # parsing checks --method against the registry, which imports every method module (one may fail)
        args = build_parser(command).parse_args(argv)
        lifetime.install()  # SIGTERM ends cleanly; a workflow job ends with its workflow
        result = args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Interrupted says where and how to go on
        print(str(exc) if isinstance(exc, Interrupted) else "interrupted: nothing half-written is kept (outputs are "
              "written whole or not at all); run the same command again to go on", file=sys.stderr)
        return 130
    except lifetime.Terminated as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early
        sys.stdout = open(os.devnull, "w")
        return 0
    except OSError as exc:  # a write the command did not expect to fail (a full disk, a read-only file system)
        error = write_error(exc, exc.filename or "(output)") if exc.errno in WRITE_ONLY else None
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
