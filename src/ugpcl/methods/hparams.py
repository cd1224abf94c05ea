"""Typed hyper-parameters: each method declares a dataclass of them beside its class.

    @dataclass(frozen=True)
    class HParams:
        ema_decay: float = hparam(0.99, "SSL4MIS train_mean_teacher_2D.py --ema_decay", minimum=0, maximum=1)

Every field carries the source of its default and its bounds. From the dataclass come the JSON
schema of the method's section of params.yaml (`schema_of`) and the parsing of that section
(`parse`): a missing or unknown key, or a value of the wrong type or out of bounds, is an error
naming `methods.<method>.<key>` and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Callable
from typing import Any, Literal

import jsonschema

from ..errors import UserError
from ..schema_errors import NON_FINITE_FIX, SCIENTIFIC, FiniteValidator, non_finite, wants_number, yaml11_float


def hparam(default, source: str, *, minimum=None, maximum=None, exclusive_minimum=None, multiple_of=None):
    """A hyper-parameter field: its default, where that default comes from, and its bounds."""
    bounds = {"minimum": minimum, "maximum": maximum, "exclusiveMinimum": exclusive_minimum,
              "multipleOf": multiple_of}
    return dataclasses.field(default=default, metadata={"source": source,
                                                        "bounds": {k: v for k, v in bounds.items() if v is not None}})


def _type_schema(tp) -> dict:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if origin is Literal:
        return {"enum": list(args)}
    if origin is tuple and args and args[-1] is not Ellipsis:
        return {"type": "array", "items": [_type_schema(a) for a in args][0], "minItems": len(args),
                "maxItems": len(args)}
    raise TypeError(f"hyper-parameter type {tp!r} has no schema (use bool, int, float, str, Literal or tuple)")


def fields(cls) -> list[dataclasses.Field]:
    return list(dataclasses.fields(cls))


def schema_of(cls) -> dict:
    """The closed JSON schema of a method's params.yaml section, derived from its HParams dataclass."""
    hints = typing.get_type_hints(cls)
    props = {}
    for f in fields(cls):
        prop, bounds = _type_schema(hints[f.name]), f.metadata.get("bounds", {})
        if prop.get("type") == "array":  # a tuple's bounds hold for each item
            prop["items"] = {**prop["items"], **bounds}
        else:
            prop.update(bounds)
        prop["description"] = f.metadata.get("source", "")
        props[f.name] = prop
    return {"type": "object", "additionalProperties": False, "required": list(props), "properties": props}


def defaults(cls) -> dict[str, Any]:
    """The defaults as params.yaml would write them (tuples as lists)."""
    return {f.name: list(f.default) if isinstance(f.default, tuple) else f.default for f in fields(cls)}


def parse(cls, section, method: str, source="params.yaml", written: Callable[[list[str]], list[str]] | None = None):
    """`section` (the dict under methods.<method>) as an instance of `cls`, or a UserError naming the key
    as the file writes it (`written`, e.g. under profiles.NAME where a profile sets it)."""

    def where(*keys: str) -> str:
        path = ["methods", method, *keys]
        return ".".join(written(path) if written is not None else path)

    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise UserError(f"{where()} must be a mapping of hyper-parameters, not {type(section).__name__}", path=source,
                        fix=f"write the keys of {method} under {where()}", key=["methods", method])
    known = {f.name: f for f in fields(cls)}
    for key in section:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UserError(f"{where(str(key))}: unknown hyper-parameter of {method}{hint}", path=source,
                            fix=f"remove or rename it; {method} takes {', '.join(known) or 'none'}",
                            key=["methods", method, str(key)])
    for name, f in known.items():
        if name not in section:
            default = defaults(cls)[name]
            raise UserError(f"{where(name)}: missing (the method's default is {default!r}, from "
                            f"{f.metadata.get('source', 'its definition')})", path=source,
                            fix=f"add `{name}: {default!r}` under {where()}", key=["methods", method, name])
    schema = schema_of(cls)
    for name, value in section.items():
        declared = _describe(schema["properties"][name])
        numeric = wants_number(schema["properties"][name].get("type")) or wants_number(
            schema["properties"][name].get("items", {}).get("type"))
        bad = [v for v in (value if isinstance(value, list) else [value]) if non_finite(v)] if numeric else []
        if bad:  # NaN passes every bound: it compares false
            within = f", in {value}" if isinstance(value, list) else ""
            raise UserError(f"{where(name)}: {bad[0]} is not a finite number{within}", path=source,
                            fix=f"give {name} a finite value of the declared type and range ({declared}); "
                                f"{NON_FINITE_FIX}", key=["methods", method, name])
        error = jsonschema.exceptions.best_match(FiniteValidator(schema["properties"][name]).iter_errors(value))
        if error is not None:
            fix = f"give {name} a value of the declared type and range ({declared})"
            if isinstance(value, str) and SCIENTIFIC.fullmatch(value):
                fix = (f"write {name}: {yaml11_float(value)} (YAML 1.1 reads {value} as text: it wants a dot in the "
                       "number and a sign in the exponent)")
            raise UserError(f"{where(name)}: {error.message}", path=source, fix=fix, key=["methods", method, name])
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in section.items()})


def _describe(prop: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in prop.items() if k != "description")


def as_dict(hp) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(hp).items()}
