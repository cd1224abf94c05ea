"""Loading params.yaml: merge the active profile, validate against the schema, resolve paths."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import jsonschema
import yaml

from . import config_checks, lifetime
from .errors import UserError
from .schema_errors import SCIENTIFIC, FiniteValidator, Override, describe, error_keys, non_finite

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "params.schema.yaml"
DEFAULT_CONFIG = REPO_ROOT / "params.yaml"


def deep_merge(base: dict, override: dict) -> dict:
    """Return `base` with `override` merged in recursively (override wins on leaves)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# PyYAML's safe loader on libyaml's parser where PyYAML was built with it (its wheels are): the same
# documents read the same, about seven times faster (the report reads every run's config.yaml)
FAST_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def yaml_problem(text: str, exc: yaml.YAMLError) -> tuple[str, str]:
    """(message, fix) for a YAML syntax error in `text`: the line and column, the line itself, and the
    fix for the two usual slips (a tab in the indentation; a backslash in double quotes, as in a regex
    or a Windows path)."""
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow (a control character)
        line = text.count("\n", 0, exc.position) + 1
        return (f"not valid YAML at line {line}: the character {chr(exc.character)!r} is not allowed in YAML "
                f"({exc.reason})", "remove that character (an editor's 'show invisibles' makes it visible)")
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is None or problem is None:
        return f"not valid YAML ({exc})", "correct the YAML syntax"
    lines = text.splitlines()
    line = lines[mark.line] if mark.line < len(lines) else None
    message = (f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
               + (" (the end of the file)" if line is None else f", in `{line.strip()}`" if line.strip() else ""))
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and start is not None:
        message += f" ({context} begun at line {start.line + 1}, column {start.column + 1})"
    if line is not None and "\t" in line[:len(line) - len(line.lstrip())]:  # PyYAML words it in several ways
        return message, "YAML indents with spaces only: replace the tab on that line with spaces"
    if "escape" in problem or "hexdecimal" in problem:  # "\d" in a regex, "C:\Users" or "D:\x-rays" in a path
        return message, ("write that value in single quotes, e.g. group: '^(patient\\d+)_' (in double quotes YAML "
                         "reads a backslash as the start of an escape such as \\n)")
    return message, "correct the YAML syntax"


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError("config file not found", path=path, fix="pass --config pointing at params.yaml")
    text = path.read_text()
    try:
        data = yaml.load(text, Loader=FAST_SAFE_LOADER)
    except yaml.YAMLError as exc:
        message, fix = yaml_problem(text, exc)
        raise UserError(message, path=path, fix=fix) from exc
    if not isinstance(data, dict):
        raise UserError("expected a mapping at the top level", path=path)
    return data


class OverrideLoader(yaml.SafeLoader):
    """PyYAML's safe YAML 1.1, which also reads scientific notation without a dot (1e-3, 5E-4,
    -2e+1) as a float, as YAML 1.2 and Python do. Only for --set values: Snakemake reads params.yaml
    with its own YAML 1.1 loader, so params.yaml keeps PyYAML's rule (the schema error says so)."""


OverrideLoader.add_implicit_resolver("tag:yaml.org,2002:float", SCIENTIFIC, list("-+0123456789."))


def parse_override(text: str) -> tuple[list[str], object]:
    """Parse `a.b.c=value` (value in YAML syntax) into (['a','b','c'], value)."""
    if "=" not in text:
        raise UserError(f"override {text!r} is not KEY=VALUE", fix="write e.g. train.iterations=100")
    key, raw = text.split("=", 1)
    try:
        value = yaml.load(raw, Loader=OverrideLoader)
    except yaml.YAMLError as exc:
        problem = str(exc).splitlines()[0]
        raise UserError(f"--set {text}: the value {raw!r} is not valid YAML ({problem})",
                        fix=f"write the value in YAML syntax and quote it for the shell, e.g. --set '{key.strip()}=[1, 2]' "
                            f"or, for text, --set \"{key.strip()}='...'\"") from exc
    return key.strip().split("."), value


def set_dotted(cfg: dict, keys: list[str], value) -> list[str]:
    """Set cfg[k0][k1]... = value; returns the key path written: the first key created on the way,
    else the replaced leaf (everything under it now comes from this value)."""
    node, owns = cfg, None
    for i, k in enumerate(keys[:-1]):
        if k not in node and owns is None:
            owns = keys[:i + 1]
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise UserError(f"cannot set {'.'.join(keys)}: {'.'.join(keys[:i + 1])} is not a mapping",
                            fix=f"set {'.'.join(keys[:i + 1])} itself, or correct the key")
    node[keys[-1]] = value
    return owns or list(keys)


_MISSING = object()


def _child(node, key: str):
    """node[key] where the key's text is `key` (YAML keys may be numbers), else _MISSING."""
    return next((v for k, v in node.items() if str(k) == key), _MISSING) if isinstance(node, dict) else _MISSING


class Origins:
    """Where params.yaml writes each key of the configuration resolved from it with profile `profile`:
    under `profiles.<profile>` where that profile's section sets the key (or replaced a key above it,
    as a list or a new mapping, which `deep_merge` copies whole), else at the top level. The keys of
    --set overrides (`overrides`, key paths) are named as the configuration names them: the error
    about one names the override."""

    def __init__(self, raw: dict, profile: str, overrides: list[list[str]] = ()):
        self.profile = profile
        self.base = {k: v for k, v in raw.items() if k != "profiles"}
        self.section = (raw.get("profiles") or {}).get(profile) or {}
        self.overrides = [[str(k) for k in keys] for keys in overrides]

    def in_profile(self, keys: list) -> bool:
        """Whether the profile's section writes the key `keys` (or its value)."""
        keys = [str(k) for k in keys]
        if any(keys[:len(o)] == o or o[:len(keys)] == keys for o in self.overrides):
            return False
        node, base = self.section, self.base
        for key in keys:
            node, base = _child(node, key), _child(base, key)
            if node is _MISSING:
                return False
            if not (isinstance(node, dict) and isinstance(base, dict)):
                return True  # the profile's value replaced the base's (or the base has none)
        return False  # a mapping merged from both: the base's keys and the profile's

    def written(self, keys: list) -> list[str]:
        """`keys` as params.yaml writes them: profiles.<profile>.<keys> where the profile sets the key."""
        keys = [str(k) for k in keys]
        return ["profiles", self.profile, *keys] if self.in_profile(keys) else keys


@functools.cache
def schema_validator() -> tuple[dict, jsonschema.Draft202012Validator]:
    """The configuration's schema and its validator, read once (with libyaml's loader: the schema is 25 KB);
    a number must be finite (`schema_errors.FiniteValidator`: NaN would pass every bound)."""
    schema = yaml.load(SCHEMA_PATH.read_text(), Loader=FAST_SAFE_LOADER)
    return schema, FiniteValidator(schema)


def schema_errors(cfg: dict) -> list:
    """The schema's errors in `cfg`, by key; a key refused by its map's propertyNames (classes written
    name: value) once, not its value too; a value that is not a finite number once, not its bounds too."""
    schema, validator = schema_validator()
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    refused = {tuple(map(str, (*e.absolute_path, e.instance))) for e in errors
               if "propertyNames" in e.absolute_schema_path}
    infinite = {tuple(map(str, e.absolute_path)) for e in errors if e.validator == "type" and non_finite(e.instance)}
    return [e for e in errors if not (e.validator == "type" and tuple(map(str, e.absolute_path)) in refused)
            and not (e.validator != "type" and tuple(map(str, e.absolute_path)) in infinite)]


def validate(cfg: dict, source: str | Path = "params.yaml", overrides: list[Override] = (),
             origins: Origins | None = None) -> None:
    """The schema (each key alone), then the constraints between keys (`config_checks`).

    A schema error names the --set override its value came from (`overrides`, as applied), else the key
    where `source` writes it (under profiles.NAME where `origins`, the profile in force, sets it).
    """
    errors = schema_errors(cfg)
    if errors:
        raise _invalid(errors, source, overrides, origins)
    config_checks.check(cfg, source, [o.text for o in overrides])


def _invalid(errors: list, source, overrides: list[Override] = (), origins: Origins | None = None,
             what: str = "invalid configuration") -> UserError:
    schema = schema_validator()[0]
    written = origins.written if origins is not None else None
    lines, fixes, from_file = [], [], False
    for err in errors[:10]:
        line, origin, specific = describe(err, list(overrides), schema, written)
        lines.append(f"  --set {origin.text}: {line}" if origin else f"  {line}")
        from_file |= origin is None
        fixes += [f for f in specific if f not in fixes]
    keys = "the keys above" if from_file else "the --set overrides above"
    return UserError(
        f"{what}:\n" + "\n".join(lines),
        path=source if from_file else None,
        fix="; ".join(fixes + [f"correct {keys} (the schema is {SCHEMA_PATH.relative_to(REPO_ROOT)})"]),
    )


def flat_keys(tree: dict, prefix: str = "") -> dict:
    """{"a.b.c": leaf} of a nested dict (lists are leaves)."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(flat_keys(value, f"{name}.") if isinstance(value, dict) and value else {name: value})
    return out


def changed_keys(old: dict, new: dict) -> list[tuple[str, object, object]]:
    """(dotted key, value in `old`, value in `new`) of every leaf where two nested dicts differ, sorted by
    key; NOT_SET where one lacks the key."""
    before, after = flat_keys(old), flat_keys(new)
    return sorted((k, before.get(k, NOT_SET), after.get(k, NOT_SET)) for k in before.keys() | after.keys()
                  if before.get(k, NOT_SET) != after.get(k, NOT_SET))


class _NotSet:
    def __repr__(self) -> str:
        return "(not set)"


NOT_SET = _NotSet()  # a key one configuration lacks (written by an older version)


def load_config(path: str | Path | None = None, profile: str | None = None, overrides: list[str] = ()) -> dict:
    """Read params.yaml, merge `profiles[profile]` and KEY=VALUE overrides, validate.

    The returned dict has `profile` set to the profile in force and no `profiles` section.
    """
    path = Path(path) if path else DEFAULT_CONFIG
    raw = read_yaml(path)
    return resolve(raw, profile=profile, overrides=overrides, source=path)


def profiles_of(raw: dict, source="params.yaml") -> dict:
    """The `profiles:` section (each profile a mapping of the keys it overrides; null for none)."""
    profiles = raw.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise UserError(f"profiles must be a mapping of profile name -> the keys it overrides, not "
                        f"{type(profiles).__name__}", path=source, fix="write e.g. `profiles: {paper: {}}`")
    for name, section in profiles.items():
        if section is not None and not isinstance(section, dict):
            raise UserError(f"profiles.{name} must be a mapping of the keys it overrides, not "
                            f"{type(section).__name__}", path=source,
                            fix=f"write profiles.{name} as e.g. `{name}: {{train: {{iterations: 100}}}}`, or `{{}}`")
    return profiles


def merged(raw: dict, profile: str) -> dict:
    """params.yaml with `profiles[profile]` merged in (unchecked, without `profiles:`)."""
    base = {k: v for k, v in raw.items() if k != "profiles"}
    cfg = deep_merge(base, (raw.get("profiles") or {}).get(profile) or {})
    cfg["profile"] = profile
    return cfg


def resolve(raw: dict, profile: str | None = None, overrides: list[str] = (), source="params.yaml") -> dict:
    """Merge a profile into an already-read configuration (Snakemake passes its `config`) and check it;
    the keys every other profile sets are checked too (`check_other_profiles`)."""
    profiles = profiles_of(raw, source)
    name = profile or raw.get("profile", "paper")
    if name not in profiles:
        raise UserError(
            f"unknown profile {name!r}; known: {', '.join(sorted(profiles)) or 'none'}",
            path=source,
            fix="choose one of the profiles listed under `profiles:`",
        )
    cfg = merged(raw, name)
    applied = []
    for text in overrides:
        keys, value = parse_override(text)
        applied.append(Override(text, keys, set_dotted(cfg, keys, value)))
    validate(cfg, source, applied, Origins(raw, name, [o.keys for o in applied]))
    if not lifetime.workflow_job():  # a job's workflow checked them when it started: a profile edited
        check_other_profiles(raw, name, source)  # since, not the one in force, must not stop its later jobs
    return cfg


def other_profile(name: str) -> str:
    """The words telling that an error is of profile `name`, which is not in force."""
    return f"in the profile {name}, not the one in force (every profile is checked, so that each works when chosen)"


def check_other_profiles(raw: dict, in_force: str, source="params.yaml") -> None:
    """Every profile but `in_force`: a key its section writes that the schema refuses is an error now,
    not when the profile is chosen (hours later, perhaps on a cluster). What its section does not write
    (the base, checked with the profile in force) and the constraints between keys (which --set may
    settle for one command) are left to the command that uses it. Milliseconds per profile."""
    for name in profiles_of(raw, source):
        if name == in_force:
            continue
        origins = Origins(raw, name)
        errors = [e for e in schema_errors(merged(raw, name)) if origins.in_profile(error_keys(e))]
        if errors:
            raise _invalid(errors, source, origins=origins, what=f"invalid configuration {other_profile(name)}")


def results_dir(cfg: dict) -> Path:
    return resolve_path(cfg["paths"]["results"]) / cfg["profile"]


def reports_dir(cfg: dict) -> Path:
    return resolve_path(cfg["paths"]["reports"]) / cfg["profile"]


def raw_dir(cfg: dict) -> Path:
    return resolve_path(cfg["paths"]["raw"])


def prepared_path(cfg: dict, dataset: str) -> Path:
    """The prepared HDF5 file of `dataset` (a name under `data:`) for the profile in force."""
    return results_dir(cfg) / "data" / f"{dataset}.h5"


# A run's evaluations, one folder per checkpoint: summary.json and per_case.csv in each.
EVAL_DIRS = {"best": "eval", "last": "eval-last"}


def eval_dir(run_dir: str | Path, checkpoint: str) -> Path:
    """Where the evaluation of `run_dir`'s `checkpoint` (best | last) is written and read."""
    return Path(run_dir) / EVAL_DIRS[checkpoint]


# --- datasets: the entries of `data:` ----------------------------------------------------------
# Every entry of `data:` other than these settings is a dataset, named by its key. Its `kind`
# (the module in ugpcl/data/ that reads it) defaults to the key itself, so `data.acdc` and
# `data.isic` need none; any other entry states it, e.g. `data.mydata: {kind: folder, ...}`.
DATA_SETTINGS = ("image_size", "demo")


def dataset_names(cfg: dict) -> list[str]:
    """The configured datasets, in the order of `data:`."""
    return [k for k in cfg["data"] if k not in DATA_SETTINGS]


def dataset_config(cfg: dict, name: str) -> dict:
    """`data.<name>`; a UserError naming the configured datasets when there is no such entry."""
    if name not in dataset_names(cfg):
        raise UserError(
            f"no dataset {name!r} under data: (configured: {', '.join(dataset_names(cfg)) or 'none'})",
            fix=f"add a data.{name} entry to params.yaml (see the README, 'Your own data') or use a configured name",
        )
    return cfg["data"][name]


def dataset_kind(cfg: dict, name: str) -> str:
    """The kind of dataset `name` (acdc | isic | folder): its `kind` key, else its name."""
    return dataset_config(cfg, name).get("kind", name)


def dataset_source(cfg: dict, name: str) -> str:
    """Where the dataset's raw data comes from, as the report shows it: `source`, else its kind."""
    entry = dataset_config(cfg, name)
    return str(entry.get("source") or entry.get("kind", name))


def resolve_path(p: str | Path) -> Path:
    """Relative paths in params.yaml are relative to the repository root."""
    p = Path(p)
    return p if p.is_absolute() else REPO_ROOT / p
