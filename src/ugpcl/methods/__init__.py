"""Training methods, one module each: `ugpcl.methods.<name>` defines `METHOD`, its class."""

from __future__ import annotations

import importlib

NAMES = ("supervised", "mt", "uamt", "em", "dct", "cct", "cps", "ugpcl")


def get_method(name: str):
    """The Method subclass called `name`."""
    if name not in NAMES:
        from ..errors import UserError

        raise UserError(f"unknown method {name!r}; known: {', '.join(NAMES)}")
    return importlib.import_module(f"{__name__}.{name}").METHOD
