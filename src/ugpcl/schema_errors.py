"""Schema violations of the configuration as messages that name where the value came from
(params.yaml or a `--set` override) and the fix: the closest valid key for a mistyped one, quotes
for a number where text is expected, a dot for YAML 1.1's scientific notation, and for a wrong value
what the key is (the schema's description of it)."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import jsonschema

# A number in scientific notation without a dot (1e-3, 5E-4, -2e+1), which YAML 1.1 (PyYAML) reads
# as text; `config` reads --set values with it as floats.
SCIENTIFIC = re.compile(r"[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+")
# Validators about which keys an object has; every other one is about a value: its fix says what the key is.
KEY_VALIDATORS = frozenset({"additionalProperties", "required"})


def non_finite(value) -> bool:
    """Whether `value` is a float that is not a number or infinite: YAML's .nan, .inf and -.inf (--set
    train.lr=.nan). No key of the configuration takes one: each number is a count, a size, a rate, a
    weight, a probability or an angle, and NaN passes every bound (it compares false), then trains on
    NaN and differs from itself in the finished-run check."""
    return isinstance(value, float) and not math.isfinite(value)


def wants_number(declared) -> bool:
    """Whether a schema's `type` (a name or a list of them) takes numbers: only there is .nan or .inf a
    number that is not finite; for text it is a value of the wrong type, to be quoted."""
    return bool({"number", "integer"} & set([declared] if isinstance(declared, str) else declared or []))


NON_FINITE_FIX = "YAML reads .nan as not-a-number and .inf as infinity, which no key takes"


def _finite_number(checker, value) -> bool:
    return jsonschema.Draft202012Validator.TYPE_CHECKER.is_type(value, "number") and not non_finite(value)


# JSON Schema 2020-12 where `type: number` (and so `integer`, `minimum`, ...) holds finite numbers only
FiniteValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("number", _finite_number))


@dataclass
class Override:
    """One applied `--set KEY=VALUE`: `owns` is the key path it wrote (the first key it created, or
    the key it replaced), so that everything at or under `owns` came from it."""

    text: str
    keys: list[str]
    owns: list[str]

    @property
    def raw(self) -> str:
        return self.text.split("=", 1)[1].strip()

    def with_key(self, keys: list[str]) -> str:
        return f"--set {'.'.join(keys)}={self.raw}"


def yaml11_float(text: str) -> str:
    """`text` (matching SCIENTIFIC) as YAML 1.1 reads a float: 1e-3 -> 1.0e-3, 5E4 -> 5.0E+4."""
    mantissa, sep, exponent = re.split("([eE])", text)
    if "." not in mantissa:
        mantissa += ".0"
    if exponent[0] not in "+-":
        exponent = "+" + exponent
    return mantissa + sep + exponent


def unexpected_keys(err) -> list[str]:
    """The keys an `additionalProperties: false` error is about (jsonschema names them only in prose)."""
    if err.validator != "additionalProperties" or err.validator_value is not False:
        return []
    props, patterns = err.schema.get("properties", {}), err.schema.get("patternProperties", {})
    return [k for k in err.instance if k not in props and not any(re.search(p, str(k)) for p in patterns)]


def _origin(location: list[str], overrides: list[Override]) -> Override | None:
    """The last override that wrote `location` or a key above it."""
    for override in reversed(overrides):
        if location[:len(override.owns)] == override.owns:
            return override
    return None


def _wants(err, kind: str) -> bool:
    if err.validator != "type":
        return False
    types = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
    return kind in types


def expectation(root: dict, err) -> tuple[str, str] | None:
    """(the key, its description) for an error about a value: the schema's description of the innermost key
    on the error's schema path, the outermost one given for it (where it is used before its `$ref`'s). The
    key is cut from the error's instance path at the depth the schema path reached it (a name may repeat)."""
    if err.validator in KEY_VALIDATORS:
        return None
    node, depth, key_depth, found, named = root, 0, None, None, False
    steps = list(err.absolute_schema_path)
    for i, step in enumerate(steps):
        while isinstance(node, dict) and step not in node and "$ref" in node:
            node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
            found = found or (node.get("description") if key_depth is not None else None)
        node = node[step]
        if named:  # a key of the config (or a pattern of keys): one level down the instance
            depth += 1
            key_depth, found, named = depth, None, False
        elif step in ("properties", "patternProperties"):
            named = True
        elif step in ("additionalProperties", "items") and i < len(steps) - 1:
            depth += 1
        if key_depth is not None and isinstance(node, dict):
            found = found or node.get("description")
    if found is None:
        return None
    return ".".join(str(p) for p in list(err.absolute_path)[:key_depth]), " ".join(found.split())


def error_keys(err) -> list[str]:
    """The key an error is about: its location, and for an unexpected or refused key that key."""
    location = [str(p) for p in err.absolute_path]
    extra = unexpected_keys(err)
    named = [str(extra[0])] if extra else [str(err.instance)] if "propertyNames" in err.absolute_schema_path else []
    return location + named


def describe(err, overrides: list[Override], root: dict | None = None,
             written: Callable[[list[str]], list[str]] | None = None) -> tuple[str, Override | None, list[str]]:
    """(the message line, the override the offending value came from or None, specific fixes); `root`,
    the whole schema, gives the description of the key a wrong value is for; `written` gives the key
    as the file writes it (under profiles.NAME where the profile in force sets it)."""
    location = [str(p) for p in err.absolute_path]
    extra = unexpected_keys(err)
    keys = error_keys(err)
    origin = _origin(keys, overrides)
    at = written(keys) if written is not None and origin is None else keys
    prefix = at[:len(at) - len(keys)]  # profiles.NAME where the profile's section writes the key
    shown = prefix + location
    where = ".".join(shown) or "(top level)"
    line, fixes = f"{where}: {err.message}", []
    if err.validator == "type" and non_finite(err.instance) and wants_number(err.validator_value):
        line = f"{where}: {err.instance} is not a finite number"
        fixes.append(f"write a finite number for {where} ({NON_FINITE_FIX})")
    for key in extra:
        close = difflib.get_close_matches(str(key), list(err.schema.get("properties", {})), n=1)
        if not close:
            continue
        line += f" (did you mean {'.'.join(shown + [close[0]])}?)"
        if origin is None:
            fixes.append(f"rename {'.'.join(shown + [str(key)])} to {'.'.join(shown + [close[0]])}")
        elif origin.keys[:len(location) + 1] == location + [str(key)]:
            fixes.append(f"write {origin.with_key(location + [close[0]] + origin.keys[len(location) + 1:])}")
        else:
            fixes.append(f"rename {key} to {close[0]} in --set {origin.text}")
    value = err.instance
    in_list = list(err.absolute_schema_path)[-2:-1] == ["items"]  # an item of a list: its list's key
    if _wants(err, "string") and isinstance(value, (int, float, bool)) and in_list:
        items = f'["{value}", ...]'
        fixes.append(f"quote the items so that they stay text: --set '{'.'.join(location[:-1])}={items}'"
                     if origin is not None else f"quote the items so that they stay text: {location[-2]}: {items}")
    elif _wants(err, "string") and isinstance(value, (int, float, bool)):
        if origin is not None and origin.owns == location:
            fixes.append(f"quote the value so that it stays text: --set '{'.'.join(location)}=\"{origin.raw}\"'")
        else:
            fixes.append(f'quote the value so that it stays text: {location[-1]}: "{value}"')
    if origin is None and _wants(err, "number") and isinstance(value, str) and SCIENTIFIC.fullmatch(value):
        fixes.append(f"write {where} as {yaml11_float(value)} (YAML 1.1 reads {value} as text: it wants a dot in the "
                     f"number and a sign in the exponent)")
    expected = expectation(root, err) if root is not None else None
    if expected is not None:
        fixes.append(f"{'.'.join(prefix + [expected[0]])} is {expected[1]}")
    return line, origin, fixes
