"""The training methods: every module of this package registers its `Method` (see `base.py`).

`registry()` imports them all once; `build_method(cfg, ...)` turns params.yaml into a method's
typed arguments (the one place that reads `model:` and `methods.<name>:` for the networks);
`check_config(cfg)` validates every method's section before anything trains.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
import traceback
from collections.abc import Callable
from pathlib import Path

from ..config import resolve_path
from ..errors import UserError
from ..models import SwinConfig, UNetConfig
from . import hparams
from .base import _REGISTRY, Method, Setup

NOT_METHODS = {"base", "hparams"}


def registry() -> dict[str, type[Method]]:
    """name -> Method class, for every method module in this package."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name not in NOT_METHODS:
            _import(info)
    return dict(_REGISTRY)


def _import(info: pkgutil.ModuleInfo) -> None:
    """Import one method module; one that fails (a method being written) is a UserError naming the file,
    the line and the exception, as it stops every command."""
    name = f"{__name__}.{info.name}"
    try:
        importlib.import_module(name)
    except Exception as exc:
        path = Path(info.module_finder.path) / (f"{info.name}/__init__.py" if info.ispkg else f"{info.name}.py")
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
        here = isinstance(exc, SyntaxError) and exc.filename == str(path)  # not a module it imports
        line = exc.lineno if here else frames[-1].lineno if frames else None
        hint = ("every hyper-parameter needs a default, `name: type = hparam(default, \"its source\")`; "
                if isinstance(exc, TypeError) and "non-default argument" in str(exc) else "")
        raise UserError(f"the method module failed to import{f' at line {line}' if line else ''}: "
                        f"{type(exc).__name__}: {exc}", path=path,
                        fix=f"{hint}correct it (python -c 'import {name}' shows the traceback), or move it out of "
                            f"{path.parent} while you work on it: every module there is imported as a method") from exc


def names() -> list[str]:
    return list(registry())


def get_method(name: str) -> type[Method]:
    known = registry()
    if name not in known:
        raise UserError(f"unknown method {name!r}; known: {', '.join(known)}",
                        fix=f"add src/ugpcl/methods/{name}.py (see README, 'Adding your own method') or pick a known one")
    return known[name]


def check_config(cfg: dict, source="params.yaml", written: Callable[[list[str]], list[str]] | None = None
                 ) -> dict[str, object]:
    """Every method section of `cfg` parsed into its HParams; UserError naming the key otherwise, as the
    file writes it (`written`: under profiles.NAME where the profile in force sets it)."""
    known, sections = registry(), cfg["methods"]
    for name in sections:
        if name not in known:
            where = ".".join(written(["methods", str(name)]) if written else ["methods", str(name)])
            close = difflib.get_close_matches(str(name), known, n=1)
            raise UserError(f"{where}: no such method{f' (did you mean {close[0]}?)' if close else ''} "
                            f"(known: {', '.join(known)})", path=source,
                            fix=unknown_method_fix(str(name), where=where), key=["methods", str(name)])
    missing = [name for name in known if name not in sections]
    if missing:
        name = missing[0]
        raise UserError(f"methods.{name}: section missing for the method {name}", path=source,
                        fix=f"add `{name}:` under methods: with its hyper-parameters "
                            f"{hparams.defaults(known[name].HParams)}")
    return {name: hparams.parse(known[name].HParams, sections[name], name, source, written) for name in known}


def unknown_method_fix(name: str, otherwise: str | None = None, where: str | None = None) -> str:
    """What to do about a method name nobody registered (a params.yaml section at `where`, --method): a
    module of that name that registers nothing (or another name) is the usual slip; else `otherwise`."""
    module = Path(__file__).with_name(f"{name}.py")
    if module.is_file():
        return (f"{module} registers no method called {name!r}: decorate its Method class with @register "
                f"and give it `name = \"{name}\"` (README, 'Adding your own method')")
    return otherwise or f"remove {where or 'methods.' + name}, or add its module src/ugpcl/methods/{name}.py"


def setup_from_config(cfg: dict, num_classes: int, in_channels: int) -> Setup:
    """params.yaml `model:`, `data.image_size` and `train:` as the typed arguments of the networks."""
    m, s = cfg["model"], cfg["model"]["swin"]  # constraints between keys: config_checks, at load
    net = UNetConfig(num_classes=num_classes, in_channels=in_channels, image_size=cfg["data"]["image_size"],
                     width=m["width"], blocks=tuple(m.get("blocks", (3, 4, 6, 3))), pretrained=m["pretrained"],
                     weights=resolve_path(m["weights"]) if m["weights"] else None,
                     decoder_channels=tuple(m["decoder_channels"]), head_dropout=m["head_dropout"],
                     rotation_dropout=m["rotation_dropout"], embed_dim=m["embed_dim"])
    swin = SwinConfig(embed_dim=s["embed_dim"], depths=tuple(s["depths"]), heads=tuple(s["heads"]),
                      window=s["window"], mlp_ratio=s["mlp_ratio"], drop_path=s["drop_path"],
                      train_pos_embed=s["train_pos_embed"])
    return Setup(net=net, swin=swin, iterations=cfg["train"]["iterations"],
                 dice_background=cfg["train"]["dice_background"])


def parse_hparams(cfg: dict, name: str, source="params.yaml"):
    """The typed hyper-parameters of method `name` in `cfg` (UserError naming the key if wrong)."""
    return hparams.parse(get_method(name).HParams, cfg["methods"].get(name), name, source)


def build_method(cfg: dict, name: str, num_classes: int, in_channels: int) -> Method:
    """Method `name` with the hyper-parameters of `cfg['methods'][name]` and the networks of `cfg['model']`."""
    return get_method(name)(setup_from_config(cfg, num_classes, in_channels), parse_hparams(cfg, name))
